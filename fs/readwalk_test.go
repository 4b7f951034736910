package fs

import (
	"fmt"
	"slices"
	"testing"
	"time"
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
// file, as a cold walk does) has, from the third directory on, the next
// one's read lease taken ahead: looking up its files asks the service
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
	for i := range 3 {
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
	waitUntil(t, "d3 read-leased ahead", 10*time.Second, settled(dirs[3]))
	if n := walk(3); n != 0 {
		t.Errorf("d3, taken ahead: %d service calls for 5 lookups, want 0", n)
	}
	// And so on: d4 is taken ahead once d3 is.
	waitUntil(t, "d4 read-leased ahead", 10*time.Second, settled(dirs[4]))
	if n := walk(4); n != 0 {
		t.Errorf("d4, taken ahead: %d service calls for 5 lookups, want 0", n)
	}
}

// TestWalkAheadIsPacedAndBatched: the directories taken ahead of a walk
// are leased several in one call to the service, and only so far ahead of
// the walk: a parent's other child directories are left alone until the
// walk comes near them.
func TestWalkAheadIsPacedAndBatched(t *testing.T) {
	t.Parallel()
	a, cm, dirs := walkTree(t, 24, 3)
	ctx := testCtx(t)
	walk := func(i int) {
		t.Helper()
		for j := range 3 {
			if _, errno := a.Lookup(ctx, dirs[i], fmt.Sprintf("f%d", j)); errno != 0 {
				t.Fatalf("lookup d%02d/f%d: %v", i, j, errno)
			}
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
	for i := range 2 {
		walk(i)
	}
	applies, readdirs := cm.applies.Load(), cm.readdirs.Load()
	walk(2) // the third: d03..d10 are taken ahead
	waitUntil(t, "d03 to d10 taken ahead", 10*time.Second, func() bool { return a.reads.holds(dirs[10]) })
	a.reads.wait()
	// d02's own lease, and one call for the eight ahead.
	if n := cm.applies.Load() - applies; n != 2 {
		t.Errorf("%d calls to change leases for d02 and the eight directories after it, want 2", n)
	}
	if n := cm.readdirs.Load() - readdirs; n != 9 {
		t.Errorf("%d listings for d02 and the eight directories after it, want 9", n)
	}
	if h := held(); !slices.Equal(h, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("held %v after the walk went into d02, want d00 to d10", h)
	}
	// Into d03..d06: four of the eight after d06 are held still.
	for i := 3; i <= 6; i++ {
		walk(i)
	}
	a.reads.wait()
	if h := held(); len(h) != 11 {
		t.Fatalf("held %v after the walk went into d06: nothing more should be taken yet", h)
	}
	// Into d07: d11 to d15 are taken, in one call.
	applies = cm.applies.Load()
	walk(7)
	waitUntil(t, "d11 to d15 taken ahead", 10*time.Second, func() bool { return a.reads.holds(dirs[15]) })
	a.reads.wait()
	if n := cm.applies.Load() - applies; n != 1 {
		t.Errorf("%d calls to lease d11 to d15, want 1", n)
	}
	if h := held(); slices.Contains(h, 16) {
		t.Errorf("held %v: d16 taken more than eight directories ahead of the walk", h)
	}
}

// TestWalkCountsDirectoriesLeasedBeforeTheirParent: a walk's first
// directories are read-leased before their parent is (the parent's own
// lookups come one per directory); they count as walked into, so the
// directories after the third are taken ahead.
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
