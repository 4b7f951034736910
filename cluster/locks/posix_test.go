package locks

import (
	"math"
	"slices"
	"testing"
)

func TestSetLk(t *testing.T) {
	type op struct {
		o   Owner
		r   Range
		typ LockType
		ok  bool
	}
	const eof = ToEOF
	cases := []struct {
		name string
		ops  []op
		want map[Owner][]span // owners not named hold nothing
	}{
		{"unlock in the middle leaves two pieces",
			[]op{{alice, rg(0, 99), Write, true}, {alice, rg(40, 59), Unlock, true}},
			map[Owner][]span{alice: {{0, 39, Write}, {60, 99, Write}}}},
		{"write inside own read lock makes three pieces",
			[]op{{alice, rg(0, 99), Read, true}, {alice, rg(40, 59), Write, true}},
			map[Owner][]span{alice: {{0, 39, Read}, {40, 59, Write}, {60, 99, Read}}}},
		{"read inside own write lock makes three pieces",
			[]op{{alice, rg(0, 99), Write, true}, {alice, rg(40, 59), Read, true}},
			map[Owner][]span{alice: {{0, 39, Write}, {40, 59, Read}, {60, 99, Write}}}},
		{"adjacent ranges of the same type merge",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(10, 19), Read, true}},
			map[Owner][]span{alice: {{0, 19, Read}}}},
		{"adjacent range before merges",
			[]op{{alice, rg(10, 19), Write, true}, {alice, rg(0, 9), Write, true}},
			map[Owner][]span{alice: {{0, 19, Write}}}},
		{"overlapping ranges of the same type merge",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(5, 19), Read, true}},
			map[Owner][]span{alice: {{0, 19, Read}}}},
		{"a range bridging two merges all three",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(20, 29), Read, true}, {alice, rg(10, 19), Read, true}},
			map[Owner][]span{alice: {{0, 29, Read}}}},
		{"a range covering others absorbs them",
			[]op{{alice, rg(10, 19), Read, true}, {alice, rg(30, 39), Write, true}, {alice, rg(0, 49), Read, true}},
			map[Owner][]span{alice: {{0, 49, Read}}}},
		{"adjacent ranges of different types stay apart",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(10, 19), Write, true}},
			map[Owner][]span{alice: {{0, 9, Read}, {10, 19, Write}}}},
		{"a gap of one byte keeps ranges apart",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(11, 19), Read, true}},
			map[Owner][]span{alice: {{0, 9, Read}, {11, 19, Read}}}},
		{"different owners never merge",
			[]op{{alice, rg(0, 9), Read, true}, {bob, rg(10, 19), Read, true}, {bob, rg(5, 9), Read, true}},
			map[Owner][]span{alice: {{0, 9, Read}}, bob: {{5, 19, Read}}}},
		{"converting a whole range",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(0, 9), Write, true}},
			map[Owner][]span{alice: {{0, 9, Write}}}},
		{"converting part of a range merges with the neighbour",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(10, 19), Write, true}, {alice, rg(5, 9), Write, true}},
			map[Owner][]span{alice: {{0, 4, Read}, {5, 19, Write}}}},
		{"unlock across several ranges trims the ends",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(20, 29), Write, true}, {alice, rg(40, 49), Read, true},
				{alice, rg(5, 44), Unlock, true}},
			map[Owner][]span{alice: {{0, 4, Read}, {45, 49, Read}}}},
		{"unlock of nothing is granted",
			[]op{{alice, rg(0, 9), Unlock, true}, {bob, rg(0, 9), Write, true}, {alice, rg(0, 9), Unlock, true}},
			map[Owner][]span{bob: {{0, 9, Write}}}},
		{"reads of two owners overlap",
			[]op{{alice, rg(0, 9), Read, true}, {bob, rg(5, 14), Read, true}},
			map[Owner][]span{alice: {{0, 9, Read}}, bob: {{5, 14, Read}}}},
		{"write over another owner's read is refused",
			[]op{{alice, rg(0, 9), Read, true}, {bob, rg(9, 9), Write, false}},
			map[Owner][]span{alice: {{0, 9, Read}}}},
		{"read over another owner's write is refused",
			[]op{{alice, rg(0, 9), Write, true}, {bob, rg(5, 20), Read, false}},
			map[Owner][]span{alice: {{0, 9, Write}}}},
		{"write next to another owner's write",
			[]op{{alice, rg(0, 9), Write, true}, {bob, rg(10, 19), Write, true}},
			map[Owner][]span{alice: {{0, 9, Write}}, bob: {{10, 19, Write}}}},
		{"a refused request changes nothing",
			[]op{{alice, rg(0, 9), Read, true}, {bob, rg(20, 29), Write, true}, {alice, rg(0, 25), Write, false}},
			map[Owner][]span{alice: {{0, 9, Read}}, bob: {{20, 29, Write}}}},
		{"a lock to EOF conflicts far away",
			[]op{{alice, rg(100, eof), Write, true}, {bob, rg(1<<50, 1<<50), Read, false}, {bob, rg(0, 99), Write, true}},
			map[Owner][]span{alice: {{100, eof, Write}}, bob: {{0, 99, Write}}}},
		{"unlock to EOF cuts a lock to EOF",
			[]op{{alice, rg(100, eof), Write, true}, {alice, rg(200, eof), Unlock, true}},
			map[Owner][]span{alice: {{100, 199, Write}}}},
		{"unlock in the middle of a lock to EOF",
			[]op{{alice, rg(0, eof), Read, true}, {alice, rg(10, 19), Unlock, true}},
			map[Owner][]span{alice: {{0, 9, Read}, {20, eof, Read}}}},
		{"a lock to EOF merges with one before it",
			[]op{{alice, rg(0, 99), Read, true}, {alice, rg(100, eof), Read, true}},
			map[Owner][]span{alice: {{0, eof, Read}}}},
		{"unlock of the whole file releases everything",
			[]op{{alice, rg(0, 9), Read, true}, {alice, rg(50, eof), Write, true}, {alice, rg(0, eof), Unlock, true}},
			nil},
		{"the last byte",
			[]op{{alice, rg(eof, eof), Write, true}, {bob, rg(eof-1, eof-1), Write, true}, {bob, rg(eof, eof), Read, false}},
			map[Owner][]span{alice: {{eof, eof, Write}}, bob: {{eof - 1, eof - 1, Write}}}},
		{"invalid requests are refused",
			[]op{{alice, rg(10, 5), Read, false}, {alice, rg(0, 9), 0, false}, {alice, rg(0, 9), LockType(9), false},
				{alice, rg(10, 5), Unlock, false}},
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := New()
			for i, op := range tc.ops {
				if _, ok := tb.SetLk(testIno, op.o, op.r, op.typ, 0); ok != op.ok {
					t.Fatalf("op %d: SetLk(%v, %+v, %v) = %v, want %v", i, op.o, op.r, op.typ, ok, op.ok)
				}
				mustValid(t, tb)
			}
			for _, o := range []Owner{alice, bob} {
				if got := posixOf(tb, testIno, o); !slices.Equal(got, tc.want[o]) {
					t.Errorf("%v holds %v, want %v", o, got, tc.want[o])
				}
			}
			if tc.want == nil && tb.Counts() != (Counts{}) {
				t.Errorf("Counts = %+v, want an empty table", tb.Counts())
			}
		})
	}
}

func TestGetLk(t *testing.T) {
	type lock struct {
		o   Owner
		r   Range
		typ LockType
	}
	cases := []struct {
		name  string
		locks []lock
		r     Range
		typ   LockType
		want  *lock
	}{
		{"no locks", nil, rg(0, 9), Write, nil},
		{"own lock does not conflict", []lock{{alice, rg(0, 9), Write}}, rg(0, 9), Write, nil},
		{"reads share", []lock{{bob, rg(0, 9), Read}}, rg(0, 9), Read, nil},
		{"read against a write", []lock{{bob, rg(5, 9), Write}}, rg(0, 5), Read, &lock{bob, rg(5, 9), Write}},
		{"write against a read", []lock{{bob, rg(5, 9), Read}}, rg(9, 20), Write, &lock{bob, rg(5, 9), Read}},
		{"no overlap", []lock{{bob, rg(5, 9), Write}}, rg(10, 20), Write, nil},
		{"lowest start first", []lock{{bob, rg(50, 59), Read}, {carol, rg(10, 19), Read}}, rg(0, 99), Write,
			&lock{carol, rg(10, 19), Read}},
		{"same start: lowest owner first", []lock{{carol, rg(10, 19), Read}, {bob, rg(10, 29), Read}}, rg(0, 99), Write,
			&lock{bob, rg(10, 29), Read}},
		{"skips locks that do not conflict", []lock{{bob, rg(0, 9), Read}, {carol, rg(5, 9), Read}, {dave, rg(20, 29), Write}},
			rg(0, 99), Read, &lock{dave, rg(20, 29), Write}},
		{"a lock to EOF", []lock{{bob, rg(100, ToEOF), Write}}, rg(1<<50, 1<<50), Read, &lock{bob, rg(100, ToEOF), Write}},
		{"unlock conflicts with nothing", []lock{{bob, rg(0, 9), Write}}, rg(0, 9), Unlock, nil},
		{"an invalid range conflicts with nothing", []lock{{bob, rg(0, 9), Write}}, rg(9, 0), Write, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := New()
			for _, l := range tc.locks {
				mustSetLk(t, tb, testIno, l.o, l.r, l.typ)
			}
			got := tb.GetLk(testIno, alice, tc.r, tc.typ)
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("GetLk = %+v, want nil", got)
			case tc.want == nil:
			case got == nil:
				t.Fatalf("GetLk = nil, want %+v", tc.want)
			case got.Owner != tc.want.o || got.Range != tc.want.r || got.Type != tc.want.typ || got.Kind != KindPosix || got.Token == 0:
				t.Fatalf("GetLk = %+v, want %+v", got, tc.want)
			}
			// GetLk predicts SetLk.
			snap := tb.Digest()
			if _, ok := tb.SetLk(testIno, alice, tc.r, tc.typ, 0); ok != (got == nil) && tc.r.Valid() {
				t.Fatalf("SetLk granted %v, GetLk returned %+v", ok, got)
			}
			if got != nil && tb.Digest() != snap {
				t.Fatal("a refused SetLk changed the table")
			}
		})
	}
}

func TestTokens(t *testing.T) {
	tb := New()
	var last uint64
	grant := func(what string, tok uint64) uint64 {
		t.Helper()
		if tok <= last {
			t.Fatalf("%s: token %d not above %d", what, tok, last)
		}
		last = tok
		return tok
	}
	t1 := grant("read", mustSetLk(t, tb, 1, alice, rg(0, 99), Read).Token)
	grant("flock", mustFlock(t, tb, 1, bob, Shared).Token)
	grant("other inode", mustSetLk(t, tb, 2, alice, rg(0, 0), Write).Token)

	if tok := mustSetLk(t, tb, 1, alice, rg(10, 20), Read).Token; tok != t1 {
		t.Fatalf("a lock already held got token %d, want its own %d", tok, t1)
	}
	if tok := mustSetLk(t, tb, 1, alice, rg(40, 59), Unlock).Token; tok != 0 {
		t.Fatalf("unlock returned token %d", tok)
	}
	if l := tb.Locks(1); l[0].Range != rg(0, 39) || l[0].Token != t1 || l[1].Range != rg(60, 99) || l[1].Token != t1 {
		t.Fatalf("the pieces of a split keep their token %d: %+v", t1, l)
	}
	t4 := grant("merge", mustSetLk(t, tb, 1, alice, rg(40, 49), Read).Token)
	if got := posixOf(tb, 1, alice); !slices.Equal(got, []span{{0, 49, Read}, {60, 99, Read}}) {
		t.Fatalf("alice holds %v", got)
	}
	if l := tb.Locks(1); l[0].Token != t4 || l[1].Token != t1 {
		t.Fatalf("the merged range takes the new token, the other keeps its own: %+v", l)
	}
	grant("upgrade", mustSetLk(t, tb, 1, alice, rg(60, 99), Write).Token)
	grant("flock upgrade", mustFlock(t, tb, 1, bob, Exclusive).Token)
	if tb.Token() != last {
		t.Fatalf("Token() = %d, want %d", tb.Token(), last)
	}

	cases := []struct {
		name  string
		ino   uint64
		o     Owner
		tok   uint64
		holds bool
	}{
		{"own token", 1, alice, t1, true},
		{"an older token", 1, alice, 1, true},
		{"the latest token", 1, alice, t4, true},
		{"a future token", 1, alice, last + 1, false},
		{"token 0", 1, alice, 0, false},
		{"another owner", 1, carol, t1, false},
		{"another inode", 3, alice, t1, false},
		{"flock holder", 1, bob, last, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tb.Holds(tc.ino, tc.o, tc.tok); got != tc.holds {
				t.Fatalf("Holds(%d, %v, %d) = %v", tc.ino, tc.o, tc.tok, got)
			}
		})
	}
}

// A mount whose session expired cannot prove it holds its lock any more,
// even with its old token, once the lock went to someone else.
func TestHoldsAfterReleaseSession(t *testing.T) {
	tb := New()
	old := mustSetLk(t, tb, testIno, alice, rg(0, math.MaxUint64), Write).Token
	fl := mustFlock(t, tb, testIno, alice, Exclusive).Token
	if !tb.Holds(testIno, alice, old) || !tb.Holds(testIno, alice, fl) {
		t.Fatal("the holder does not hold")
	}
	if g := tb.ReleaseSession(alice.Session); len(g) != 0 {
		t.Fatalf("grants %+v with nobody waiting", g)
	}
	mustValid(t, tb)
	if tb.Holds(testIno, alice, old) || tb.Holds(testIno, alice, fl) {
		t.Fatal("Holds true after ReleaseSession")
	}
	if tb.Counts() != (Counts{}) {
		t.Fatalf("Counts = %+v after the only session ended", tb.Counts())
	}
	tok := mustSetLk(t, tb, testIno, bob, rg(0, 9), Write).Token
	if tok <= fl || !tb.Holds(testIno, bob, tok) {
		t.Fatalf("new grant token %d (old %d), held %v", tok, fl, tb.Holds(testIno, bob, tok))
	}
	if tb.Holds(testIno, alice, old) || tb.Holds(testIno, alice, fl) {
		t.Fatal("Holds true for the expired owner after a new grant")
	}
}

func TestReleaseOwner(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Write)
	mustSetLk(t, tb, testIno, alice, rg(20, 29), Read)
	mustSetLk(t, tb, testIno, bob, rg(20, 29), Read)
	mustSetLk(t, tb, testIno+1, alice, rg(0, 9), Write)
	mustFlock(t, tb, testIno, alice, Exclusive)
	tb.ReleaseOwner(testIno, alice)
	mustValid(t, tb)
	if got := posixOf(tb, testIno, alice); got != nil {
		t.Fatalf("alice still holds %v", got)
	}
	if posixOf(tb, testIno, bob) == nil || posixOf(tb, testIno+1, alice) == nil || flockOf(tb, testIno, alice) != Exclusive {
		t.Fatal("ReleaseOwner dropped more than the owner's POSIX locks on the inode")
	}
	if g := tb.ReleaseOwner(testIno, carol); g != nil {
		t.Fatalf("releasing an owner without locks granted %+v", g)
	}
}
