package locks

import (
	"errors"
	"testing"
)

// Waiters are granted oldest first by each kind of release, each with a new,
// larger token, and those still blocked stay queued in order.
func TestWaitGrantsFIFO(t *testing.T) {
	releases := []struct {
		name    string
		release func(tb *Table) []Grant
	}{
		{"unlock", func(tb *Table) []Grant { res, _ := tb.SetLk(testIno, alice, rg(0, 99), Unlock, 0); return res.Grants }},
		{"ReleaseOwner", func(tb *Table) []Grant { return tb.ReleaseOwner(testIno, alice) }},
		{"ReleaseSession", func(tb *Table) []Grant { return tb.ReleaseSession(alice.Session) }},
		{"downgrade", func(tb *Table) []Grant { res, _ := tb.SetLk(testIno, alice, rg(0, 99), Read, 0); return res.Grants }},
	}
	for _, rel := range releases {
		t.Run(rel.name, func(t *testing.T) {
			tb := New()
			mustSetLk(t, tb, testIno, alice, rg(0, 99), Write)
			mustWait(t, tb, bob, KindPosix, rg(200, 299), Read, 1, true) // no conflict: granted at once
			mustWait(t, tb, bob, KindPosix, rg(0, 9), Read, 2, false)
			mustWait(t, tb, carol, KindPosix, rg(50, 59), Read, 3, false)
			mustWait(t, tb, dave, KindPosix, rg(0, 99), Write, 4, false)
			mustWait(t, tb, carol, KindPosix, rg(90, 99), Read, 5, false)
			wantIDs(t, "queued", queuedIDs(tb, testIno), []uint64{2, 3, 4, 5})
			before := tb.Token()

			g := rel.release(tb)
			mustValid(t, tb)
			// dave's write now waits for bob and carol; carol's second
			// read, queued behind it, passes it since dave waits for
			// carol anyway.
			if rel.name == "downgrade" {
				before++ // the downgrade's own token
			}
			wantIDs(t, "granted", reqIDs(g), []uint64{2, 3, 5})
			wantIDs(t, "queued", queuedIDs(tb, testIno), []uint64{4})
			for i, gr := range g {
				if gr.Token != before+uint64(i)+1 || !tb.Holds(testIno, gr.Owner, gr.Token) || gr.Ino != testIno {
					t.Fatalf("grant %d = %+v: want token %d, held", i, gr, before+uint64(i)+1)
				}
			}
			if g[0].Owner != bob || g[1].Owner != carol || g[2].Owner != carol {
				t.Fatalf("grants %+v", g)
			}
		})
	}
}

// A queued writer is not starved by readers that come after it, although
// they could share the lock with the current readers.
func TestWaitNoStarvation(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 99), Read)
	mustWait(t, tb, bob, KindPosix, rg(0, 99), Write, 1, false)
	mustWait(t, tb, carol, KindPosix, rg(0, 9), Read, 2, false)
	mustWait(t, tb, dave, KindPosix, rg(90, 199), Read, 3, false)
	mustWait(t, tb, dave, KindPosix, rg(100, 199), Read, 4, true) // no conflict with bob's range

	g := tb.ReleaseOwner(testIno, alice)
	mustValid(t, tb)
	wantIDs(t, "granted after the reader left", reqIDs(g), []uint64{1})
	g = tb.ReleaseOwner(testIno, bob)
	mustValid(t, tb)
	wantIDs(t, "granted after the writer left", reqIDs(g), []uint64{2, 3})

	// Same with flock.
	tb = New()
	mustFlock(t, tb, testIno, alice, Shared)
	mustWait(t, tb, bob, KindFlock, Range{}, Exclusive, 1, false)
	mustWait(t, tb, carol, KindFlock, Range{}, Shared, 2, false)
	res, _ := tb.Flock(testIno, alice, Unlock)
	wantIDs(t, "flock", reqIDs(res.Grants), []uint64{1})
	// A non-blocking request ignores the queue, as F_SETLK does.
	tb = New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Read)
	mustWait(t, tb, bob, KindPosix, rg(0, 9), Write, 1, false)
	mustSetLk(t, tb, testIno, carol, rg(0, 9), Read)
}

// A queued request does not block a later one of an owner it waits for:
// a process extending or upgrading its own read lock is not queued behind a
// writer that waits for that very lock (which would deadlock).
func TestWaitOwnerNotBehindItsWaiter(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Read)
	mustSetLk(t, tb, testIno, carol, rg(0, 9), Read)
	mustWait(t, tb, bob, KindPosix, rg(0, 9), Write, 1, false)
	mustWait(t, tb, alice, KindPosix, rg(5, 19), Read, 2, true)
	if res, ok, err := tb.Wait(testIno, alice, KindPosix, rg(0, 9), Write, 3, 0); ok || err != nil || len(res.Grants) != 0 {
		t.Fatalf("upgrade beside carol's read: %v, %v, %+v", ok, err, res)
	}
	mustValid(t, tb)
	g := tb.ReleaseOwner(testIno, carol)
	mustValid(t, tb)
	wantIDs(t, "granted", reqIDs(g), []uint64{3}) // alice's upgrade, before bob
	if got := posixOf(tb, testIno, alice); len(got) != 2 || got[0] != (span{0, 9, Write}) {
		t.Fatalf("alice holds %v", got)
	}
	g = tb.ReleaseOwner(testIno, alice)
	wantIDs(t, "granted", reqIDs(g), []uint64{1})
}

func TestDeadlock(t *testing.T) {
	type wait struct {
		o   Owner
		ino uint64
		r   Range
		typ LockType
	}
	cases := []struct {
		name  string
		locks []wait // granted with SetLk first
		waits []wait // queued in order, the last one must fail with ErrDeadlock
	}{
		{"two owners",
			[]wait{{alice, 1, rg(0, 0), Write}, {bob, 1, rg(1, 1), Write}},
			[]wait{{alice, 1, rg(1, 1), Write}, {bob, 1, rg(0, 0), Write}}},
		{"three owners",
			[]wait{{alice, 1, rg(0, 0), Write}, {bob, 1, rg(1, 1), Write}, {carol, 1, rg(2, 2), Write}},
			[]wait{{alice, 1, rg(1, 1), Write}, {bob, 1, rg(2, 2), Write}, {carol, 1, rg(0, 0), Read}}},
		{"across inodes",
			[]wait{{alice, 1, rg(0, ToEOF), Write}, {bob, 2, rg(0, ToEOF), Write}},
			[]wait{{alice, 2, rg(0, 0), Read}, {bob, 1, rg(5, 5), Read}}},
		{"two readers upgrading",
			[]wait{{alice, 1, rg(0, 9), Read}, {bob, 1, rg(0, 9), Read}},
			[]wait{{alice, 1, rg(0, 9), Write}, {bob, 1, rg(5, 5), Write}}},
		{"through a queued request",
			// carol waits for alice's lock; bob's request is queued behind
			// carol's (FIFO); alice then waiting for bob closes the cycle.
			[]wait{{alice, 1, rg(0, 0), Write}, {bob, 1, rg(20, 20), Write}},
			[]wait{{carol, 1, rg(0, 9), Write}, {bob, 1, rg(1, 1), Write}, {alice, 1, rg(20, 20), Read}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := New()
			for _, l := range tc.locks {
				mustSetLk(t, tb, l.ino, l.o, l.r, l.typ)
			}
			for i, w := range tc.waits {
				_, ok, err := tb.Wait(w.ino, w.o, KindPosix, w.r, w.typ, uint64(i+1), 0)
				last := i == len(tc.waits)-1
				switch {
				case last && !errors.Is(err, ErrDeadlock):
					t.Fatalf("wait %d: %v, %v; want ErrDeadlock", i, ok, err)
				case !last && (ok || err != nil):
					t.Fatalf("wait %d: %v, %v; want queued", i, ok, err)
				}
				mustValid(t, tb)
			}
			if n := tb.Counts().Waiters; n != len(tc.waits)-1 {
				t.Fatalf("%d waiters, want %d: the refused one must not be queued", n, len(tc.waits)-1)
			}
			// The refused owner gives up its lock: the others proceed.
			w := tc.waits[len(tc.waits)-1]
			g := tb.ReleaseSession(w.o.Session)
			mustValid(t, tb)
			if len(g) == 0 {
				t.Fatal("nothing granted once the cycle was broken")
			}
		})
	}

	// A chain without a cycle is not a deadlock.
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 0), Write)
	mustSetLk(t, tb, testIno, bob, rg(1, 1), Write)
	mustWait(t, tb, alice, KindPosix, rg(1, 1), Write, 1, false)
	mustWait(t, tb, carol, KindPosix, rg(0, 0), Write, 2, false)
	mustWait(t, tb, dave, KindPosix, rg(0, 1), Read, 3, false)
	// flock requests are never refused as deadlocks (Linux does not track
	// them either): bob waits for alice's flock while alice waits for bob.
	mustFlock(t, tb, testIno, alice, Exclusive)
	mustWait(t, tb, bob, KindFlock, Range{}, Exclusive, 4, false)
}

// Two owners upgrading their shared flock do not deadlock: a blocking
// conversion drops the old lock first, as in Linux.
func TestWaitFlockUpgrade(t *testing.T) {
	tb := New()
	mustFlock(t, tb, testIno, alice, Shared)
	mustFlock(t, tb, testIno, bob, Shared)
	mustWait(t, tb, carol, KindFlock, Range{}, Exclusive, 1, false)
	res := mustWait(t, tb, alice, KindFlock, Range{}, Exclusive, 2, false)
	if len(res.Grants) != 0 || flockOf(tb, testIno, alice) != 0 {
		t.Fatalf("the blocked upgrade kept its shared lock or granted %+v", res.Grants)
	}
	res = mustWait(t, tb, bob, KindFlock, Range{}, Exclusive, 3, true)
	if flockOf(tb, testIno, bob) != Exclusive || res.Token != tb.Token() {
		t.Fatal("the sole holder's upgrade was not granted")
	}
	g, _ := tb.Flock(testIno, bob, Unlock)
	wantIDs(t, "granted", reqIDs(g.Grants), []uint64{1})
	g, _ = tb.Flock(testIno, carol, Unlock)
	wantIDs(t, "granted", reqIDs(g.Grants), []uint64{2})
	// A downgrade never waits.
	mustWait(t, tb, alice, KindFlock, Range{}, Shared, 4, true)
}

func TestCancelWait(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Read)
	mustWait(t, tb, bob, KindPosix, rg(0, 9), Write, 1, false)
	mustWait(t, tb, carol, KindPosix, rg(0, 9), Read, 2, false)
	mustWait(t, tb, dave, KindPosix, rg(0, 9), Write, 3, false)
	g, ok := tb.CancelWait(1)
	mustValid(t, tb)
	if !ok {
		t.Fatal("CancelWait of a queued request: false")
	}
	wantIDs(t, "granted once the writer gave up", reqIDs(g), []uint64{2})
	wantIDs(t, "queued", queuedIDs(tb, testIno), []uint64{3})
	if g, ok := tb.CancelWait(1); ok || g != nil {
		t.Fatal("CancelWait twice")
	}
	if _, ok := tb.CancelWait(2); ok {
		t.Fatal("CancelWait of a granted request")
	}
	if g, ok := tb.CancelWait(3); !ok || len(g) != 0 {
		t.Fatalf("CancelWait(3) = %+v, %v", g, ok)
	}
	if c := tb.Counts(); c.Waiters != 0 || c.Posix != 2 {
		t.Fatalf("Counts = %+v", c)
	}
}

func TestReleaseSessionWaiters(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Write)
	mustSetLk(t, tb, testIno+1, alice, rg(0, 9), Write)
	mustWait(t, tb, bob, KindPosix, rg(0, 9), Write, 1, false)
	mustWait(t, tb, carol, KindPosix, rg(0, 9), Write, 2, false)
	if _, _, err := tb.Wait(testIno+1, carol, KindPosix, rg(5, 5), Read, 3, 0); err != nil {
		t.Fatal(err)
	}
	// bob's session ends while it waits: its request goes, carol's moves up.
	if g := tb.ReleaseSession(bob.Session); len(g) != 0 {
		t.Fatalf("grants %+v", g)
	}
	wantIDs(t, "queued", queuedIDs(tb, testIno), []uint64{2})
	// alice's ends: carol gets both inodes, in inode order.
	g := tb.ReleaseSession(alice.Session)
	mustValid(t, tb)
	wantIDs(t, "granted", reqIDs(g), []uint64{2, 3})
	if g[0].Ino != testIno || g[1].Ino != testIno+1 || g[1].Token <= g[0].Token {
		t.Fatalf("grants %+v", g)
	}
	if c := tb.Counts(); c != (Counts{Inodes: 2, Posix: 2}) {
		t.Fatalf("Counts = %+v", c)
	}
}

func TestWaitErrors(t *testing.T) {
	tb := New()
	mustSetLk(t, tb, testIno, alice, rg(0, 9), Write)
	mustWait(t, tb, bob, KindPosix, rg(0, 9), Read, 1, false)
	cases := []struct {
		name  string
		kind  Kind
		r     Range
		typ   LockType
		reqID uint64
		err   error
	}{
		{"duplicate request id", KindPosix, rg(20, 29), Read, 1, ErrDuplicate},
		{"unlock", KindPosix, rg(0, 9), Unlock, 2, ErrInvalid},
		{"no type", KindFlock, Range{}, 0, 2, ErrInvalid},
		{"bad kind", Kind(3), rg(0, 9), Read, 2, ErrInvalid},
		{"zero kind", 0, rg(0, 9), Read, 2, ErrInvalid},
		{"inverted range", KindPosix, rg(9, 0), Read, 2, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tb.Digest()
			if _, ok, err := tb.Wait(testIno, carol, tc.kind, tc.r, tc.typ, tc.reqID, 0); ok || !errors.Is(err, tc.err) {
				t.Fatalf("Wait = %v, %v; want %v", ok, err, tc.err)
			}
			if tb.Digest() != before {
				t.Fatal("a refused Wait changed the table")
			}
		})
	}
}
