package locks

import "testing"

func TestFlock(t *testing.T) {
	type op struct {
		o   Owner
		typ LockType
		ok  bool
		tok string // "new": a new token; "same": the owner's token; "zero"; "": not checked (refused)
	}
	cases := []struct {
		name string
		ops  []op
		want map[Owner]LockType
	}{
		{"shared locks share",
			[]op{{alice, Shared, true, "new"}, {bob, Shared, true, "new"}, {carol, Shared, true, "new"}},
			map[Owner]LockType{alice: Shared, bob: Shared, carol: Shared}},
		{"exclusive excludes shared",
			[]op{{alice, Exclusive, true, "new"}, {bob, Shared, false, ""}},
			map[Owner]LockType{alice: Exclusive}},
		{"exclusive excludes exclusive",
			[]op{{alice, Exclusive, true, "new"}, {bob, Exclusive, false, ""}},
			map[Owner]LockType{alice: Exclusive}},
		{"shared excludes exclusive",
			[]op{{alice, Shared, true, "new"}, {bob, Exclusive, false, ""}},
			map[Owner]LockType{alice: Shared}},
		{"sole holder upgrades",
			[]op{{alice, Shared, true, "new"}, {alice, Exclusive, true, "new"}},
			map[Owner]LockType{alice: Exclusive}},
		{"upgrade refused while another holds shared keeps the shared lock",
			[]op{{alice, Shared, true, "new"}, {bob, Shared, true, "new"}, {alice, Exclusive, false, ""}},
			map[Owner]LockType{alice: Shared, bob: Shared}},
		{"upgrade once the other unlocked",
			[]op{{alice, Shared, true, "new"}, {bob, Shared, true, "new"}, {bob, Unlock, true, "zero"}, {alice, Exclusive, true, "new"}},
			map[Owner]LockType{alice: Exclusive}},
		{"downgrade lets others share",
			[]op{{alice, Exclusive, true, "new"}, {alice, Shared, true, "new"}, {bob, Shared, true, "new"}},
			map[Owner]LockType{alice: Shared, bob: Shared}},
		{"the same type again keeps the token",
			[]op{{alice, Exclusive, true, "new"}, {alice, Exclusive, true, "same"}},
			map[Owner]LockType{alice: Exclusive}},
		{"unlock then another takes it",
			[]op{{alice, Exclusive, true, "new"}, {alice, Unlock, true, "zero"}, {bob, Exclusive, true, "new"}},
			map[Owner]LockType{bob: Exclusive}},
		{"unlock without a lock",
			[]op{{alice, Unlock, true, "zero"}, {bob, Shared, true, "new"}, {alice, Unlock, true, "zero"}},
			map[Owner]LockType{bob: Shared}},
		{"same session, other open file description",
			[]op{{alice, Exclusive, true, "new"}, {Owner{alice.Session, alice.ID + 1}, Shared, false, ""}},
			map[Owner]LockType{alice: Exclusive}},
		{"invalid types are refused",
			[]op{{alice, 0, false, ""}, {alice, LockType(4), false, ""}},
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := New()
			owned := map[Owner]uint64{}
			for i, op := range tc.ops {
				before := tb.Token()
				res, ok := tb.Flock(testIno, op.o, op.typ)
				if ok != op.ok {
					t.Fatalf("op %d: Flock(%v, %v) = %v, want %v", i, op.o, op.typ, ok, op.ok)
				}
				mustValid(t, tb)
				switch op.tok {
				case "new":
					if res.Token != before+1 || tb.Token() != res.Token {
						t.Fatalf("op %d: token %d, want the new %d", i, res.Token, before+1)
					}
				case "same":
					if res.Token != owned[op.o] || tb.Token() != before {
						t.Fatalf("op %d: token %d, want the held %d", i, res.Token, owned[op.o])
					}
				case "zero":
					if res.Token != 0 {
						t.Fatalf("op %d: unlock returned token %d", i, res.Token)
					}
				}
				if !ok && tb.Token() != before {
					t.Fatalf("op %d: a refused request took a token", i)
				}
				if ok {
					owned[op.o] = res.Token
				}
			}
			for _, o := range []Owner{alice, bob, carol} {
				if got := flockOf(tb, testIno, o); got != tc.want[o] {
					t.Errorf("%v holds %v, want %v", o, got, tc.want[o])
				}
			}
		})
	}
}

// flock and POSIX locks do not see each other, as in Linux.
func TestFlockAndPosixIndependent(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, ToEOF), Write)
	mustFlock(t, tb, testIno, bob, Exclusive)
	mustSetLk(t, tb, testIno, alice, rg(0, ToEOF), Unlock)
	if flockOf(tb, testIno, bob) != Exclusive {
		t.Fatal("a POSIX unlock dropped a flock")
	}
	mustFlock(t, tb, testIno, bob, Unlock)
	if tb.Counts() != (Counts{}) {
		t.Fatalf("Counts = %+v, want empty", tb.Counts())
	}
}

func TestReleaseFlock(t *testing.T) {
	tb := New()
	mustFlock(t, tb, testIno, alice, Exclusive)
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Write)
	mustWait(t, tb, bob, KindFlock, Range{}, Shared, 1, false)
	mustWait(t, tb, carol, KindFlock, Range{}, Exclusive, 2, false)
	mustWait(t, tb, bob, KindPosix, rg(0, 0), Read, 3, false)

	// bob's open file description goes away: its flock request with it.
	if g := tb.ReleaseFlock(testIno, bob); len(g) != 0 {
		t.Fatalf("grants %+v", g)
	}
	mustValid(t, tb)
	wantIDs(t, "queued", queuedIDs(tb, testIno), []uint64{2, 3})

	g := tb.ReleaseFlock(testIno, alice)
	mustValid(t, tb)
	wantIDs(t, "granted", reqIDs(g), []uint64{2})
	if flockOf(tb, testIno, carol) != Exclusive || posixOf(tb, testIno, alice) == nil {
		t.Fatal("ReleaseFlock: wrong locks afterwards")
	}
	if !tb.Holds(testIno, carol, g[0].Token) || g[0].Owner != carol || g[0].Ino != testIno {
		t.Fatalf("grant %+v not held", g[0])
	}
}
