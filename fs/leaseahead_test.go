package fs

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

// TestRemovalLeasesSubdirectoriesAhead: the first removal in a directory
// the mount walked (read-leased, with its subdirectories) write-leases the
// subdirectories it read-leases too, 16 in one command, in the
// background; not one it did not look into. The removals in them then ask
// the service for no lease, and are written behind; another mount sees
// what is left.
func TestRemovalLeasesSubdirectoriesAhead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	mustCreate(t, b, d, "top")
	other := mustMkdir(t, b, d, "other").Ino
	const n = 20
	var subs []uint64
	for i := range n {
		s := mustMkdir(t, b, d, fmt.Sprint("s", i)).Ino
		subs = append(subs, s)
		for j := range 3 {
			mustCreate(t, b, s, fmt.Sprint("f", j))
		}
	}
	// a walks d and s0..s19 (the first listing of each revokes b's write
	// lease; the next takes the read lease).
	for _, dir := range append([]uint64{d}, subs...) {
		waitUntil(t, "a read lease", 10*time.Second, func() bool {
			if _, _, errno := a.ReadDir(ctx, dir, 0, 1000); errno != 0 {
				t.Fatalf("readdir: %v", errno)
			}
			return a.reads.holds(dir)
		})
	}
	cm.allLeaseModes()
	batches := cm.grantBatches.Load()
	mustErrno(t, "a unlink top", a.Unlink(ctx, d, "top"), 0)
	waitUntil(t, "the subdirectories to be write-leased", 10*time.Second, func() bool {
		for _, s := range subs {
			if l := a.leases.get(s); l == nil || !l.held.Load() {
				return false
			}
		}
		return true
	})
	if a.leases.get(other) != nil {
		t.Fatal("a leased a subdirectory it never looked into")
	}
	grants := 0
	for _, m := range cm.allLeaseModes() {
		if m == 4 {
			grants++
		}
	}
	if got := cm.grantBatches.Load() - batches; grants != n+1 || got != 2 {
		t.Fatalf("%d write leases in %d batches; want %d (d, then s0..s19 in 2 batches)", grants, got, n+1)
	}

	for i, s := range subs {
		for j := range 3 {
			mustErrno(t, "unlink", a.Unlink(ctx, s, fmt.Sprint("f", j)), 0)
		}
		mustErrno(t, "rmdir", a.Rmdir(ctx, d, fmt.Sprint("s", i)), 0)
	}
	if modes := cm.allLeaseModes(); slices.Contains(modes, 4) {
		t.Fatalf("lease modes %v while removing the leased subdirectories: want no grant", modes)
	}
	if got := listNames(t, b, d); !maps.Equal(got, map[string]bool{"other": true}) {
		t.Fatalf("b lists %v in d, want other only", slices.Sorted(maps.Keys(got)))
	}
}
