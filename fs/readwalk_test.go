package fs

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// walkTree has mount b make p with nDirs directories of nFiles files
// each, and mount a (its calls counted) read-lease p once b gave back the
// leases of what it made.
func walkTree(t *testing.T, nDirs, nFiles int) (a *FS, cm *countingMeta, dirs []uint64) {
	t.Helper()
	e := newEnv(t)
	a, cm = e.countedMount("a")
	b := e.mount("b", nil, nil)
	p := mustMkdir(t, b, RootIno, "p").Ino
	for i := range nDirs {
		d := mustMkdir(t, b, p, fmt.Sprintf("d%02d", i)).Ino
		dirs = append(dirs, d)
		for j := range nFiles {
			mustCreate(t, b, d, fmt.Sprintf("f%d", j))
		}
	}
	ctx := testCtx(t)
	// a leases p (its listing), and b gives back what it made.
	waitUntil(t, "a read lease of p", 10*time.Second, func() bool {
		if _, _, errno := a.ReadDir(ctx, p, 0, 1000); errno != 0 {
			t.Fatalf("readdir: %v", errno)
		}
		return a.reads.holds(p)
	})
	for _, d := range dirs {
		waitUntil(t, "b to give back its leases", 10*time.Second, func() bool {
			_, errno := a.Lookup(ctx, d, "f0")
			return errno == 0 && b.leases.get(d) == nil
		})
	}
	return a, cm, dirs
}

// TestWalkTakesNextDirectoryAhead: a mount looking up the files of one
// directory after another of a tree another mount wrote (stat of each
// file, as a cold walk does) has, from the third directory on, its
// read lease taken ahead: looking up its files asks the service
// nothing. (A sibling another mount write-leases cannot be listed in the
// parent's copy: taking that copy revoked it, and writing there again
// revokes the copy.)
func TestWalkTakesNextDirectoryAhead(t *testing.T) {
	t.Parallel()
	a, cm, dirs := walkTree(t, 6, 5)
	ctx := testCtx(t)
	walk := func(i int) int64 {
		before := cm.n.Load()
		for j := range 5 {
			if _, errno := a.Lookup(ctx, dirs[i], fmt.Sprintf("f%d", j)); errno != 0 {
				t.Fatalf("lookup d%02d/f%d: %v", i, j, errno)
			}
		}
		return cm.n.Load() - before
	}
	for i := range 2 {
		if n := walk(i); n == 0 {
			t.Errorf("d%d: looked up with no service call before any walk was seen", i)
		}
	}
	// Held, and the copies taken with it loaded (their listings would
	// count as the walk's calls).
	settled := func(d uint64) func() bool {
		return func() bool {
			a.reads.mu.Lock()
			loading := len(a.reads.loads)
			a.reads.mu.Unlock()
			return loading == 0 && a.reads.holds(d)
		}
	}
	for i := 2; i < 6; i++ {
		waitUntil(t, fmt.Sprintf("d%d read-leased ahead", i), 10*time.Second, settled(dirs[i]))
		if n := walk(i); n != 0 {
			t.Errorf("d%d, taken ahead: %d service calls for 5 lookups, want 0", i, n)
		}
	}
}

// TestWalkAheadIsPacedAndBatched: the directories taken ahead of a walk
// are leased several in one call to the service and listed in one query,
// and only so far ahead of the walk: a parent's other child directories
// are left alone until the walk comes near them.
func TestWalkAheadIsPacedAndBatched(t *testing.T) {
	t.Parallel()
	a, cm, dirs := walkTree(t, 48, 1)
	ctx := testCtx(t)
	walk := func(i int) {
		t.Helper()
		if _, errno := a.Lookup(ctx, dirs[i], "f0"); errno != 0 {
			t.Fatalf("lookup d%02d/f0: %v", i, errno)
		}
		// (a copy taken ahead is used at once; one not taken yet after
		// readAfter lookups)
		for range readAfter - 1 {
			_, _ = a.Lookup(ctx, dirs[i], "f0")
		}
	}
	held := func() (out []int) {
		for i, d := range dirs {
			if a.reads.holds(d) {
				out = append(out, i)
			}
		}
		return out
	}
	upTo := func(n int) []int {
		out := make([]int, n+1)
		for i := range out {
			out[i] = i
		}
		return out
	}
	walk(0)
	applies, readdirs, listings := cm.applies.Load(), cm.readdirs.Load(), cm.listings.Load()
	walk(1) // the second: the next walkLook are taken ahead
	waitUntil(t, "d02 to d33 taken ahead", 10*time.Second, func() bool { return a.reads.holds(dirs[33]) })
	a.reads.wait()
	// d01's own lease, and one call for the 32 ahead; d01's own
	// listing, and one query for the 32.
	if n := cm.applies.Load() - applies; n != 2 {
		t.Errorf("%d calls to change leases for d01 and the 32 directories after it, want 2", n)
	}
	if n, m := cm.readdirs.Load()-readdirs, cm.listings.Load()-listings; n != 1 || m != 1 {
		t.Errorf("%d listings and %d queries of several for d01 and the 32 directories after it, want 1 and 1", n, m)
	}
	if h := held(); !slices.Equal(h, upTo(33)) {
		t.Fatalf("held %v after the walk went into d01, want d00 to d33", h)
	}
	// Into d02..d17: the 16 after d17 are held still.
	for i := 2; i <= 17; i++ {
		walk(i)
	}
	a.reads.wait()
	if h := held(); !slices.Equal(h, upTo(33)) {
		t.Fatalf("held %v after the walk went into d17: nothing more should be taken yet", h)
	}
	// Into d18: d34 to d47 are taken, in one call and one query.
	applies, listings = cm.applies.Load(), cm.listings.Load()
	walk(18)
	waitUntil(t, "d34 to d47 taken ahead", 10*time.Second, func() bool { return a.reads.holds(dirs[47]) })
	a.reads.wait()
	if n, m := cm.applies.Load()-applies, cm.listings.Load()-listings; n != 1 || m != 1 {
		t.Errorf("%d calls to lease d34 to d47 and %d queries to list them, want 1 and 1", n, m)
	}
}

// TestWalkCountsDirectoriesLeasedBeforeTheirParent: a walk's first
// directories are read-leased before their parent is (the parent's own
// lookups come one per directory); they count as walked into, so the
// directories after them are taken ahead.
func TestWalkCountsDirectoriesLeasedBeforeTheirParent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.mount("a", nil, nil)
	b := e.mount("b", nil, nil)
	p := mustMkdir(t, b, RootIno, "p").Ino
	for i := range 8 {
		d := mustMkdir(t, b, p, fmt.Sprintf("d%d", i)).Ino
		for j := range 3 {
			mustCreate(t, b, d, fmt.Sprintf("f%d", j))
		}
	}
	// b gives back what it made (c's listing of p revokes it).
	c := e.mount("c", nil, nil)
	ctx := testCtx(t)
	waitUntil(t, "b to give back p", 10*time.Second, func() bool {
		_, _, errno := c.ReadDir(ctx, p, 0, 1000)
		return errno == 0 && b.leases.get(p) == nil
	})
	for i := range 3 {
		// As a stat of each file: the directory's name, then its files.
		at, errno := a.Lookup(ctx, p, fmt.Sprintf("d%d", i))
		mustErrno(t, "lookup", errno, 0)
		waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
			for j := range 3 {
				_, errno := a.Lookup(ctx, at.Ino, fmt.Sprintf("f%d", j))
				mustErrno(t, "lookup", errno, 0)
			}
			return a.reads.holds(at.Ino)
		})
	}
	if !a.reads.holds(p) {
		t.Fatal("p not read-leased after three lookups")
	}
	d3, errno := a.Lookup(ctx, p, "d3")
	mustErrno(t, "lookup d3", errno, 0)
	waitUntil(t, "d3 taken ahead", 10*time.Second, func() bool { return a.reads.holds(d3.Ino) })
}

// TestWalkTakesChildDirectoriesAhead: a walk going depth first through a
// tree another mount wrote has, once it went into two of a directory's
// child directories, the directories it reaches next in that order taken
// ahead: the rest of its parent's, and theirs below them once their copies
// show them, in a few calls to lease them and queries to list them; it
// then lists and looks up names there with no service call.
func TestWalkTakesChildDirectoriesAhead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	p := mustMkdir(t, b, RootIno, "p").Ino
	all := []uint64{p}
	for i := range 3 {
		d := mustMkdir(t, b, p, fmt.Sprintf("d%d", i)).Ino
		all = append(all, d)
		for j := range 4 {
			s := mustMkdir(t, b, d, fmt.Sprintf("s%d", j)).Ino
			all = append(all, s)
			mustCreate(t, b, s, "f")
		}
	}
	// b gives back what it made: a's queries revoke it.
	giveBack(t, a, b, all)
	// walk lists dir and looks up each name in it, as find does, going
	// down into the directories; it returns the service calls.
	var walk func(dir uint64, deep bool) int64
	walk = func(dir uint64, deep bool) int64 {
		before := cm.n.Load()
		ents, _, errno := a.ReadDir(ctx, dir, 0, 1000)
		mustErrno(t, "readdir", errno, 0)
		var subs []uint64
		for _, en := range ents {
			at, errno := a.Lookup(ctx, dir, en.Name)
			mustErrno(t, "lookup "+en.Name, errno, 0)
			if at.Type == uint32(namespace.TypeDir) {
				subs = append(subs, at.Ino)
			}
		}
		n := cm.n.Load() - before
		for _, s := range subs {
			if deep {
				n += walk(s, deep)
			}
		}
		return n
	}
	_, _, errno := a.ReadDir(ctx, p, 0, 1000)
	mustErrno(t, "readdir p", errno, 0)
	d := func(i int) uint64 { return all[1+5*i] }
	s := func(i, j int) uint64 { return all[2+5*i+j] }
	// Into d0, and its s0 and s1: the second child directory gone into
	// takes the rest ahead.
	applies, listings := cm.applies.Load(), cm.listings.Load()
	for _, dir := range []uint64{d(0), s(0, 0), s(0, 1)} {
		if n := walk(dir, false); n == 0 {
			t.Fatal("a directory not taken ahead was walked with no service call")
		}
	}
	settled(t, a)
	if n, m := cm.applies.Load()-applies, cm.listings.Load()-listings; n > 3+2 || m > 2 {
		t.Errorf("%d calls to change leases (3 own), %d queries listing several: want at most 5 and 2", n, m)
	}
	for i := range 3 {
		for j := range 4 {
			if !a.reads.holds(s(i, j)) {
				t.Errorf("d%d/s%d not taken ahead", i, j)
			}
		}
	}
	before := cm.n.Load()
	for _, dir := range []uint64{s(0, 2), s(0, 3), d(1), d(2)} {
		if n := walk(dir, true); n != 0 {
			t.Errorf("%d service calls to walk a tree taken ahead", n)
		}
	}
	if n := cm.n.Load() - before; n != 0 {
		t.Errorf("%d service calls", n)
	}
}

// dirsMeta answers queries listing several directories as a member
// without them would (ENOSYS), or with at most max entries in all.
type dirsMeta struct {
	Meta
	old   bool
	max   uint32
	asked atomic.Int64 // queries listing several
}

func (m *dirsMeta) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	if rd := q.GetReaddirs(); rd != nil {
		m.asked.Add(1)
		if m.old {
			return &metapb.ReadResp{Errno: uint32(syscall.ENOSYS)}, nil
		}
		if m.max > 0 {
			q = proto.Clone(q).(*metapb.ReadReq)
			q.GetReaddirs().Max = m.max
		}
	}
	return m.Meta.Read(ctx, q)
}

// TestListAllAsOneByOne: the copies listed several in one query are those
// listed one by one, also when the query stops short (the rest is asked
// for) and when the service does not know it (asked dir by dir, and not
// again for a while).
func TestListAllAsOneByOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dm := &dirsMeta{}
	a := e.mount("a", func(c *Config) { dm.Meta = c.Meta; c.Meta = dm }, nil)
	b := e.mount("b", nil, nil)
	var dirs []uint64
	for i := range 4 {
		d := mustMkdir(t, b, RootIno, fmt.Sprintf("d%d", i)).Ino
		dirs = append(dirs, d)
		for j := range 2 + 2*i {
			mustCreate(t, b, d, fmt.Sprintf("f%d", j))
		}
	}
	dirs = append(dirs, 1<<40) // none such
	giveBack(t, a, b, dirs[:4])
	sess := a.pipe.session()
	same := func(what string, got []*readDir) {
		t.Helper()
		if len(got) != len(dirs) || got[4] != nil {
			t.Fatalf("%s: %d copies, the missing directory's %v", what, len(got), got[len(got)-1])
		}
		for i, d := range dirs[:4] {
			want := a.reads.copier.list(d, sess)
			g := got[i]
			if g == nil || want == nil || g.dir != d || g.self.ino != d || len(g.ents) != len(want.ents) || len(g.ents) != 2+2*i {
				t.Fatalf("%s: copy of d%d: %+v, one by one %+v", what, i, g, want)
			}
			for k := range g.ents {
				if g.ents[k].name != want.ents[k].name || g.ents[k].a != want.ents[k].a || g.byName[g.ents[k].name] != int32(k) {
					t.Fatalf("%s: d%d entry %d: %+v, one by one %+v", what, i, k, g.ents[k], want.ents[k])
				}
			}
		}
	}
	same("one query", a.reads.copier.listAll(dirs, sess))
	if n := dm.asked.Load(); n != 1 {
		t.Fatalf("%d queries listing several for 5 directories, want 1", n)
	}
	// Three entries in all per query: the listings go on one by one, the
	// directories after in another query.
	dm.max = 3
	same("3 entries a query", a.reads.copier.listAll(dirs, sess))
	if n := dm.asked.Load(); n < 3 {
		t.Fatalf("%d queries listing several, 3 entries each, want 3 or more", n-1)
	}
	dm.max, dm.old = 0, true
	asked := dm.asked.Load()
	same("an older service", a.reads.copier.listAll(dirs, sess))
	same("an older service, again", a.reads.copier.listAll(dirs, sess))
	if n := dm.asked.Load() - asked; n != 1 {
		t.Fatalf("an older service was asked %d queries listing several, want 1 (then none for a while)", n)
	}
}

// TestWalkAheadLeavesRefusedDirectoriesBe: a directory whose lease taken
// ahead of a walk is refused (another session write-leases a child
// directory of it and does not give it back) is asked again a few times,
// then not taken ahead again for a while as the walk goes on.
func TestWalkAheadLeavesRefusedDirectoriesBe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	p := mustMkdir(t, b, RootIno, "p").Ino
	var dirs, kids []uint64
	for i := range 6 {
		d := mustMkdir(t, b, p, fmt.Sprintf("d%d", i)).Ino
		dirs = append(dirs, d)
		kids = append(kids, mustMkdir(t, b, d, "k").Ino)
		mustCreate(t, b, d, "f")
	}
	giveBack(t, a, b, append(append([]uint64{p}, dirs...), kids...))
	// A session that write-leases d3/k and never gives it back.
	z := e.client()
	r, err := z.Apply(ctx, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}})
	if err != nil || r.SessionId == 0 {
		t.Fatalf("session: %v %v", r, err)
	}
	zs := r.SessionId
	if r, err := z.Apply(ctx, &metapb.Command{LeaseSession: zs, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: zs, Dir: kids[3], Mode: 1}}}); err != nil || r.Errno != 0 {
		t.Fatalf("write lease of d3/k: %v %v", r, err)
	}
	walk := func(d uint64) {
		ents, _, errno := a.ReadDir(ctx, d, 0, 1000)
		mustErrno(t, "readdir", errno, 0)
		for _, en := range ents {
			_, errno := a.Lookup(ctx, d, en.Name)
			mustErrno(t, "lookup", errno, 0)
		}
	}
	walk(p)
	walk(dirs[0])
	walk(dirs[1]) // the second: d2..d5 taken ahead, d3 refused
	settled(t, a)
	if !a.reads.holds(dirs[2]) || !a.reads.holds(dirs[4]) || a.reads.holds(dirs[3]) {
		t.Fatalf("held d2 %v, d3 %v, d4 %v: want d2 and d4, not d3", a.reads.holds(dirs[2]), a.reads.holds(dirs[3]), a.reads.holds(dirs[4]))
	}
	n := cm.readsOf(dirs[3])
	if n < 2 {
		t.Fatalf("d3's lease asked for %d times: a refusal is asked again", n)
	}
	walk(dirs[2]) // taken ahead: the walk moves on, and d3 is left be
	settled(t, a)
	if m := cm.readsOf(dirs[3]); m != n {
		t.Fatalf("d3's lease asked for %d more times as the walk went on, want none for a while", m-n)
	}
}

// BenchmarkWalkOrderWideDirectory: the order a walk's take-ahead looks at,
// from each of 4,096 subdirectories of one copy in turn (the walk going
// through them): each step costs about as much as the 32 directories it
// lists, not a sort of the parent's entries.
func BenchmarkWalkOrderWideDirectory(b *testing.B) {
	const n = 4096
	p := &readDir{dir: 1, byName: map[string]int32{}, byIno: map[uint64]int32{}}
	dirs := map[uint64]*readDir{1: p}
	for i := range n {
		ino := uint64(100 + i)
		name := fmt.Sprintf("d%05d", (i*7919)%n) // listed out of name order
		p.byName[name], p.byIno[ino] = int32(i), int32(i)
		p.ents = append(p.ents, readEnt{name: name, cookie: uint64(i + 3), a: flatAttr{ino: ino, typ: uint8(namespace.TypeDir)}})
		dirs[ino] = &readDir{dir: ino, parent: 1, byName: map[string]int32{}, byIno: map[uint64]int32{}}
	}
	b.ResetTimer()
	for b.Loop() {
		for i := range n {
			c := dirs[p.ents[i].a.ino]
			if got := walkOrder(dirs, c, walkLook); len(got) > walkLook {
				b.Fatalf("%d directories", len(got))
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/step")
}

// giveBack waits until b gave back its leases of dirs, which a's lookups
// there revoke.
func giveBack(t *testing.T, a, b *FS, dirs []uint64) {
	t.Helper()
	for _, d := range dirs {
		waitUntil(t, "b to give back its leases", 10*time.Second, func() bool {
			_, errno := a.Lookup(testCtx(t), d, "none")
			return errno == syscall.ENOENT && b.leases.get(d) == nil
		})
	}
}

// settled waits until a loaded the copies it takes ahead.
func settled(t *testing.T, a *FS) {
	t.Helper()
	waitUntil(t, "the copies taken ahead loaded", 10*time.Second, func() bool {
		a.reads.mu.Lock()
		defer a.reads.mu.Unlock()
		return len(a.reads.loads) == 0
	})
	a.reads.wait()
}
