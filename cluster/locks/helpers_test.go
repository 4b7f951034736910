package locks

import (
	"slices"
	"testing"
)

var (
	alice = Owner{Session: 1, ID: 10}
	bob   = Owner{Session: 2, ID: 20}
	carol = Owner{Session: 3, ID: 30}
	dave  = Owner{Session: 4, ID: 40}
)

const testIno = 7

func rg(start, end uint64) Range { return Range{Start: start, End: end} }

// span is a lock as the tests write it.
type span struct {
	Start, End uint64
	Type       LockType
}

func mustValid(t testing.TB, tb *Table) {
	t.Helper()
	if err := tb.validate(); err != nil {
		t.Fatalf("invariant broken: %v", err)
	}
}

func mustSetLk(t testing.TB, tb *Table, ino uint64, o Owner, r Range, typ LockType) Result {
	t.Helper()
	res, ok := tb.SetLk(ino, o, r, typ, 0)
	if !ok {
		t.Fatalf("SetLk(%d, %v, %+v, %v) refused", ino, o, r, typ)
	}
	mustValid(t, tb)
	return res
}

func mustFlock(t testing.TB, tb *Table, ino uint64, o Owner, typ LockType) Result {
	t.Helper()
	res, ok := tb.Flock(ino, o, typ)
	if !ok {
		t.Fatalf("Flock(%d, %v, %v) refused", ino, o, typ)
	}
	mustValid(t, tb)
	return res
}

// mustWait makes a blocking request and checks whether it was granted at once.
func mustWait(t testing.TB, tb *Table, o Owner, kind Kind, r Range, typ LockType, reqID uint64, granted bool) Result {
	t.Helper()
	res, ok, err := tb.Wait(testIno, o, kind, r, typ, reqID, 0)
	if err != nil || ok != granted {
		t.Fatalf("Wait(%v, %v, %+v, %v, %d) = %v, %v; want granted %v", o, kind, r, typ, reqID, ok, err, granted)
	}
	mustValid(t, tb)
	return res
}

// posixOf returns o's POSIX locks on ino, by start.
func posixOf(tb *Table, ino uint64, o Owner) []span {
	var out []span
	for _, l := range tb.Locks(ino) {
		if l.Kind == KindPosix && l.Owner == o {
			out = append(out, span{l.Range.Start, l.Range.End, l.Type})
		}
	}
	return out
}

// flockOf returns o's flock type on ino, 0 if none.
func flockOf(tb *Table, ino uint64, o Owner) LockType {
	for _, l := range tb.Locks(ino) {
		if l.Kind == KindFlock && l.Owner == o {
			return l.Type
		}
	}
	return 0
}

// reqIDs returns the request ids of grants, in order.
func reqIDs(gs []Grant) []uint64 {
	out := []uint64{}
	for _, g := range gs {
		out = append(out, g.ReqID)
	}
	return out
}

func queuedIDs(tb *Table, ino uint64) []uint64 {
	out := []uint64{}
	for _, w := range tb.Waiters(ino) {
		out = append(out, w.ReqID)
	}
	return out
}

func wantIDs(t testing.TB, what string, got, want []uint64) {
	t.Helper()
	if want == nil {
		want = []uint64{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}
