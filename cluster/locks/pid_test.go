package locks

import (
	"bytes"
	"errors"
	"testing"
)

// F_GETLK reports the process that holds the conflicting lock: the table
// records the pid of each POSIX request with the lock it makes.
func TestGetLkReportsPid(t *testing.T) {
	tb := New()
	set := func(o Owner, r Range, typ LockType, pid uint32) {
		t.Helper()
		if _, ok := tb.SetLk(testIno, o, r, typ, pid); !ok {
			t.Fatalf("SetLk(%v, %+v, %v) refused", o, r, typ)
		}
		mustValid(t, tb)
	}
	pidAt := func(off uint64) uint32 {
		t.Helper()
		c := tb.GetLk(testIno, bob, rg(off, off), Write)
		if c == nil {
			t.Fatalf("no conflict at %d", off)
		}
		return c.Pid
	}
	set(alice, rg(0, 9), Write, 100)
	if p := pidAt(5); p != 100 {
		t.Fatalf("GetLk reports pid %d, want 100", p)
	}
	set(alice, rg(3, 4), Unlock, 0) // a split keeps the pid
	if p, q := pidAt(0), pidAt(9); p != 100 || q != 100 {
		t.Fatalf("after a split: pids %d and %d, want 100", p, q)
	}
	set(alice, rg(10, 19), Write, 101) // merges with 5..9: the new request's pid
	if p := pidAt(15); p != 101 {
		t.Fatalf("after a merge: pid %d, want 101", p)
	}
	// A queued request's pid comes with its grant.
	if _, ok, err := tb.Wait(testIno, carol, KindPosix, rg(30, 39), Write, 1, 300); err != nil || !ok {
		t.Fatalf("Wait on a free range: granted %v, %v", ok, err)
	}
	if _, ok, err := tb.Wait(testIno, dave, KindPosix, rg(0, 39), Read, 2, 400); err != nil || ok {
		t.Fatalf("Wait on a held range: granted %v, %v; want queued", ok, err)
	}
	if w := tb.Waiters(testIno); len(w) != 1 || w[0].Pid != 400 {
		t.Fatalf("waiters %+v, want dave's with pid 400", w)
	}
	tb.ReleaseSession(alice.Session)
	tb.ReleaseSession(carol.Session)
	mustValid(t, tb)
	if p := pidAt(20); p != 400 {
		t.Fatalf("the granted waiter's lock has pid %d, want 400", p)
	}
}

func TestSnapshotPids(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Write) // pid 0
	if _, ok := tb.SetLk(testIno, bob, rg(20, 29), Read, 7); !ok {
		t.Fatal("SetLk refused")
	}
	if _, ok, err := tb.Wait(testIno, carol, KindPosix, rg(0, 29), Write, 5, 9); ok || err != nil {
		t.Fatalf("Wait: granted %v, %v; want queued", ok, err)
	}
	snap := snapshot(t, tb)
	got, err := ReadTable(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	sameTables(t, got, tb)
	if c := got.GetLk(testIno, dave, rg(25, 25), Write); c == nil || c.Pid != 7 {
		t.Fatalf("restored conflict %+v, want bob's lock with pid 7", c)
	}
	if w := got.Waiters(testIno); len(w) != 1 || w[0].Pid != 9 {
		t.Fatalf("restored waiters %+v, want carol's with pid 9", w)
	}

	// A table without pids is encoded as before pids existed, and a
	// snapshot from then decodes (pids 0).
	old := New()
	mustSetLk(t, old, testIno, alice, rg(0, 9), Write)
	mustWait(t, old, bob, KindPosix, rg(0, 0), Read, 9, false)
	before := body(1, 1, testIno, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 0, 0, 1)
	if !bytes.Equal(old.encode(), before) {
		t.Fatalf("a table without pids encodes as %v, want %v", old.encode(), before)
	}
	dec, err := ReadTable(bytes.NewReader(frame(before)))
	if err != nil {
		t.Fatalf("a snapshot without pids: %v", err)
	}
	sameTables(t, dec, old)

	// Pids follow, per lock then per waiter; all zeros is not an encoding.
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"pids", append(bytes.Clone(before), body(11, 12)...), true},
		{"pids of zeros", append(bytes.Clone(before), body(0, 0)...), false},
		{"too few pids", append(bytes.Clone(before), body(11)...), false},
		{"too many pids", append(bytes.Clone(before), body(11, 12, 13)...), false},
		{"pid beyond 32 bits", append(bytes.Clone(before), body(1<<32, 12)...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadTable(bytes.NewReader(frame(tc.body)))
			if !tc.ok {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadTable = %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ls := got.Locks(testIno); len(ls) != 1 || ls[0].Pid != 11 || got.Waiters(testIno)[0].Pid != 12 {
				t.Fatalf("locks %+v, waiters %+v", ls, got.Waiters(testIno))
			}
			if !bytes.Equal(got.encode(), tc.body) {
				t.Fatal("does not round-trip")
			}
		})
	}
}
