package locks

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestModel runs random operations of six owners (three sessions) on two
// inodes against the table and the reference model, and compares every
// decision, token, grant, error, and the whole resulting state, after every
// step. Every few hundred steps the table goes through a snapshot round trip
// and the run continues on the restored table. In odd seeds owners behave as
// single-threaded processes: one with a queued request does nothing until it
// is granted or cancelled.
func TestModel(t *testing.T) {
	seeds, steps := 16, 4000
	if testing.Short() {
		seeds, steps = 3, 1000
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			h := newHarness(t, uint64(seed))
			h.single = seed%2 == 1
			for h.step = 0; h.step < steps; h.step++ {
				h.randomOp()
				h.compare()
				h.stats["queued-sum"] += len(h.m.reqs)
				h.stats["queued-max"] = max(h.stats["queued-max"], len(h.m.reqs))
				if h.step%300 == 299 {
					h.restore()
				}
			}
			h.logStats()
		})
	}
}

var (
	testOwners = []Owner{{1, 1}, {1, 2}, {2, 1}, {2, 2}, {3, 1}, {3, 2}}
	testInos   = []uint64{1, 2}
)

type harness struct {
	t       testing.TB
	rng     *rand.Rand
	tb      *Table
	m       *model
	step    int
	single  bool // owners with a queued request make no other request
	nextReq uint64
	last    string // the last operation, for failure messages
	stats   map[string]int
}

func newHarness(t testing.TB, seed uint64) *harness {
	return &harness{t: t, rng: rand.New(rand.NewPCG(seed, 0x10c45)), tb: New(), m: newModel(), nextReq: 1, stats: map[string]int{}}
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("step %d (%s): %s", h.step, h.last, fmt.Sprintf(format, args...))
}

// owner picks an owner; in single mode one without a queued request, if
// there is one.
func (h *harness) owner() (Owner, bool) {
	for range 4 * len(testOwners) {
		o := testOwners[h.rng.IntN(len(testOwners))]
		if !h.single || h.pending(o, 0) == 0 {
			return o, true
		}
	}
	return Owner{}, false
}

// pending counts the queued requests of o (of kind, if not 0).
func (h *harness) pending(o Owner, kind Kind) int {
	n := 0
	for _, ino := range testInos {
		for _, w := range h.m.in(ino).queue {
			if w.owner == o && (kind == 0 || w.kind == kind) {
				n++
			}
		}
	}
	return n
}

func (h *harness) ino() uint64 { return testInos[h.rng.IntN(len(testInos))] }

// cells returns a random range of cells: often short, sometimes to EOF.
func (h *harness) cells() (int, int) {
	a := h.rng.IntN(mCells)
	switch h.rng.IntN(10) {
	case 0, 1:
		return a, mEOF
	case 2:
		return a, a
	}
	return a, min(mEOF, a+h.rng.IntN(12))
}

func (h *harness) typ(unlock bool) LockType {
	n := 2
	if unlock {
		n = 3
	}
	return []LockType{Read, Write, Unlock}[h.rng.IntN(n)]
}

func (h *harness) randomOp() {
	ino, o := h.ino(), Owner{}
	p := h.rng.IntN(100)
	if p < 66 || p >= 76 { // not CancelWait
		var ok bool
		if o, ok = h.owner(); !ok {
			p = 70 // every owner waits: only a cancel can happen
		}
	}
	switch {
	case p < 30:
		a, b := h.cells()
		typ := h.typ(true)
		h.last = fmt.Sprintf("SetLk(%d, %v, %v, %v)", ino, o, cellRange(a, b), typ)
		got, gotOK := h.tb.SetLk(ino, o, cellRange(a, b), typ, 0)
		want, wantOK := h.m.setLk(ino, o, a, b, typ)
		h.compareResult(got, gotOK, nil, want, wantOK, nil)
		h.count("setlk", gotOK)
	case p < 40:
		typ := h.typ(true)
		h.last = fmt.Sprintf("Flock(%d, %v, %v)", ino, o, typ)
		got, gotOK := h.tb.Flock(ino, o, typ)
		want, wantOK := h.m.flock(ino, o, typ)
		h.compareResult(got, gotOK, nil, want, wantOK, nil)
		h.count("flock", gotOK)
	case p < 48:
		a, b := h.cells()
		typ := h.typ(false)
		h.last = fmt.Sprintf("GetLk(%d, %v, %v, %v)", ino, o, cellRange(a, b), typ)
		got := h.tb.GetLk(ino, o, cellRange(a, b), typ)
		want, err := h.m.getLk(ino, o, a, b, typ)
		if err != nil {
			h.fatalf("%v", err)
		}
		if (got == nil) != (want == nil) || (got != nil && *got != *want) {
			h.fatalf("GetLk = %+v, model %+v", got, want)
		}
	case p < 66:
		h.randomWait(ino, o)
	case p < 76:
		reqID := h.nextReq + 1000 // not queued
		if reqs := h.queued(); len(reqs) > 0 && h.rng.IntN(4) > 0 {
			reqID = reqs[h.rng.IntN(len(reqs))]
		}
		h.last = fmt.Sprintf("CancelWait(%d)", reqID)
		got, gotOK := h.tb.CancelWait(reqID)
		want, wantOK := h.m.cancel(reqID)
		h.compareResult(Result{Grants: got}, gotOK, nil, Result{Grants: want}, wantOK, nil)
		h.count("cancel", gotOK)
	case p < 87:
		h.last = fmt.Sprintf("ReleaseOwner(%d, %v)", ino, o)
		h.compareGrants(h.tb.ReleaseOwner(ino, o), h.m.releaseOwner(ino, o))
	case p < 98:
		h.last = fmt.Sprintf("ReleaseFlock(%d, %v)", ino, o)
		h.compareGrants(h.tb.ReleaseFlock(ino, o), h.m.releaseFlock(ino, o))
	default:
		h.last = fmt.Sprintf("ReleaseSession(%d)", o.Session)
		h.compareGrants(h.tb.ReleaseSession(o.Session), h.m.releaseSession(o.Session))
		for _, ino := range testInos {
			for _, x := range testOwners {
				if x.Session == o.Session && h.tb.Holds(ino, x, 1) {
					h.fatalf("%v still holds a lock on %d", x, ino)
				}
			}
		}
	}
}

func (h *harness) randomWait(ino uint64, o Owner) {
	kind := KindPosix
	a, b := h.cells()
	if h.rng.IntN(4) == 0 {
		kind, a, b = KindFlock, 0, mEOF
	}
	reqID := h.nextReq
	h.nextReq++
	if reqs := h.queued(); len(reqs) > 0 && h.rng.IntN(20) == 0 {
		reqID = reqs[h.rng.IntN(len(reqs))]
	}
	typ := h.typ(false)
	h.last = fmt.Sprintf("Wait(%d, %v, %v, %v, %v, %d)", ino, o, kind, cellRange(a, b), typ, reqID)
	got, gotOK, gotErr := h.tb.Wait(ino, o, kind, cellRange(a, b), typ, reqID, 0)
	want, wantOK, wantErr := h.m.wait(ino, &mWaiter{reqID: reqID, kind: kind, owner: o, a: a, b: b, typ: typ})
	h.compareResult(got, gotOK, gotErr, want, wantOK, wantErr)
	if errors.Is(gotErr, ErrDeadlock) {
		h.checkDeadlock(&waiter{reqID: reqID, ino: ino, kind: kind, owner: o, r: cellRange(a, b), typ: typ})
	}
	switch {
	case gotErr != nil:
		h.stats["wait-"+gotErr.Error()]++
	case gotOK:
		h.stats["wait-granted"]++
	default:
		h.stats["wait-queued"]++
	}
}

// checkDeadlock checks that a request refused with ErrDeadlock would
// really never be granted: on a copy of the table where it is queued anyway,
// every owner that waits for nothing releases all its locks, again and
// again (owners whose requests were all granted join them), and the request
// must still be queued at the end.
func (h *harness) checkDeadlock(w *waiter) {
	h.t.Helper()
	var buf bytes.Buffer
	if _, err := h.tb.WriteTo(&buf); err != nil {
		h.fatalf("WriteTo: %v", err)
	}
	tb, err := ReadTable(&buf)
	if err != nil {
		h.fatalf("ReadTable: %v", err)
	}
	tb.enqueue(tb.inode(w.ino), w)
	for progress := true; progress; {
		progress = false
		waiting := map[Owner]bool{}
		for _, x := range tb.waiters {
			waiting[x.owner] = true
		}
		for _, ino := range tb.sortedInos() {
			for _, l := range tb.Locks(ino) {
				if waiting[l.Owner] {
					continue
				}
				progress = true
				if l.Kind == KindPosix {
					tb.ReleaseOwner(ino, l.Owner)
				} else {
					tb.Flock(ino, l.Owner, Unlock)
				}
			}
		}
	}
	if tb.waiters[w.reqID] == nil {
		// The detector assumes that an owner's locks do not change while it
		// waits; an owner with several queued requests (threads) breaks
		// that when one of them, granted, lowers a lock that blocks the
		// others. Linux has such false positives with threads too.
		for _, o := range testOwners {
			if h.pending(o, KindPosix)+bool2int(o == w.owner) > 1 {
				h.stats["deadlocks-false-with-threads"]++
				return
			}
		}
		h.fatalf("ErrDeadlock, but the request is granted once every free owner unlocks")
	}
	h.stats["deadlocks-checked"]++
}

// queued returns the queued request ids, sorted.
func (h *harness) queued() []uint64 {
	var reqs []uint64
	for id := range h.m.reqs {
		reqs = append(reqs, id)
	}
	slices.Sort(reqs)
	return reqs
}

func (h *harness) count(op string, ok bool) {
	if ok {
		h.stats[op+"-ok"]++
	} else {
		h.stats[op+"-refused"]++
	}
}

func (h *harness) compareResult(got Result, gotOK bool, gotErr error, want Result, wantOK bool, wantErr error) {
	h.t.Helper()
	if gotOK != wantOK || !errors.Is(gotErr, wantErr) || (gotErr == nil) != (wantErr == nil) || got.Token != want.Token {
		h.fatalf("got %v token %d err %v, model %v token %d err %v", gotOK, got.Token, gotErr, wantOK, want.Token, wantErr)
	}
	h.compareGrants(got.Grants, want.Grants)
	// A new token is the largest given so far.
	if want.Token != 0 && want.Token > h.m.token {
		h.fatalf("token %d beyond the counter %d", want.Token, h.m.token)
	}
}

func (h *harness) compareGrants(got, want []Grant) {
	h.t.Helper()
	if !slices.Equal(got, want) {
		h.fatalf("grants %+v, model %+v", got, want)
	}
	for i, g := range got {
		// Tokens increase along the grants, except that a request the
		// owner already holds (another of its requests just got it)
		// keeps the token of the lock.
		if p := slices.IndexFunc(got[:i], func(p Grant) bool { return p.Token >= g.Token }); p >= 0 &&
			(got[p].Token != g.Token || got[p].Owner != g.Owner) {
			h.fatalf("grant tokens do not increase: %+v", got)
		}
		if !h.tb.Holds(g.Ino, g.Owner, g.Token) {
			h.fatalf("granted %+v but Holds is false", g)
		}
	}
	h.stats["grants"] += len(got)
}

// compare checks the whole state of the table against the model.
func (h *harness) compare() {
	h.t.Helper()
	if err := h.tb.validate(); err != nil {
		h.fatalf("invariant: %v", err)
	}
	if h.tb.Token() != h.m.token {
		h.fatalf("token counter %d, model %d", h.tb.Token(), h.m.token)
	}
	var c Counts
	for _, ino := range testInos {
		want, err := h.m.locks(ino)
		if err != nil {
			h.fatalf("%v", err)
		}
		if got := h.tb.Locks(ino); !slices.Equal(got, want) {
			h.fatalf("inode %d locks\n got %+v\nwant %+v", ino, got, want)
		}
		wantW := h.m.waiters(ino)
		if got := h.tb.Waiters(ino); !slices.Equal(got, wantW) {
			h.fatalf("inode %d waiters\n got %+v\nwant %+v", ino, got, wantW)
		}
		for _, l := range want {
			if l.Kind == KindPosix {
				c.Posix++
			} else {
				c.Flocks++
			}
		}
		c.Waiters += len(wantW)
		if len(want)+len(wantW) > 0 {
			c.Inodes++
		}
		for _, o := range testOwners {
			for _, tok := range []uint64{0, 1, h.m.token, h.m.token + 1, h.rng.Uint64N(h.m.token + 1)} {
				if got, want := h.tb.Holds(ino, o, tok), h.m.holds(ino, o, tok); got != want {
					h.fatalf("Holds(%d, %v, %d) = %v, model %v", ino, o, tok, got, want)
				}
			}
		}
	}
	if got := h.tb.Counts(); got != c {
		h.fatalf("Counts = %+v, want %+v", got, c)
	}
}

// restore replaces the table with its snapshot round trip.
func (h *harness) restore() {
	h.t.Helper()
	var buf bytes.Buffer
	if _, err := h.tb.WriteTo(&buf); err != nil {
		h.fatalf("WriteTo: %v", err)
	}
	snap := slices.Clone(buf.Bytes())
	got, err := ReadTable(&buf)
	if err != nil {
		h.fatalf("ReadTable: %v", err)
	}
	if buf.Len() != 0 {
		h.fatalf("ReadTable left %d bytes", buf.Len())
	}
	if got.Digest() != h.tb.Digest() {
		h.fatalf("digest changed by the round trip")
	}
	var again bytes.Buffer
	if _, err := got.WriteTo(&again); err != nil || !bytes.Equal(again.Bytes(), snap) {
		h.fatalf("snapshot of the restored table differs (err %v)", err)
	}
	h.tb = got
	h.stats["restores"]++
}

func (h *harness) logStats() {
	keys := make([]string, 0, len(h.stats))
	for k := range h.stats {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, h.stats[k])
	}
	h.t.Log(b.String())
}

func bool2int(b bool) int {
	if b {
		return 1
	}
	return 0
}
