package fs

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// TestRemovalLeasesSubdirectoriesAhead: the first removal in a directory
// the mount walked (read-leased, with its subdirectories) write-leases the
// subdirectories it read-leases too, 16 in one command, in the
// background, with the read copies as their view (no listing), and theirs
// down to aheadDepth levels below; not one it did not look into. A
// removal at that depth leases the next level. The removals in them then
// ask the service for no lease, and are written behind; another mount
// sees what is left.
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
	// s0/l1/l2/l3/l4: l1 is 2 levels below d, l4 5.
	chain := []uint64{subs[0]}
	for i := 1; i <= 4; i++ {
		chain = append(chain, mustMkdir(t, b, chain[i-1], fmt.Sprint("l", i)).Ino)
	}
	mustCreate(t, b, chain[3], "f")
	// a walks d, s0..s19 and the chain (the first listing of each revokes
	// b's write lease; the next takes the read lease).
	for _, dir := range append(append([]uint64{d}, subs...), chain[1:]...) {
		mustReadLease(t, a, dir)
	}
	cm.allLeaseModes()
	batches, readdirs := cm.grantBatches.Load(), cm.readdirs.Load()
	mustErrno(t, "a unlink top", a.Unlink(ctx, d, "top"), 0)
	waitUntil(t, "the subdirectories to be write-leased", 10*time.Second, func() bool {
		for _, s := range append(subs, chain[1:4]...) {
			if l := a.leases.get(s); l == nil || !l.held.Load() {
				return false
			}
		}
		return true
	})
	if n := cm.readdirs.Load() - readdirs; n != 0 {
		t.Fatalf("%d listings by the service: the read copies are the write leases' view", n)
	}
	if a.leases.get(other) != nil {
		t.Fatal("a leased a subdirectory it never looked into")
	}
	a.reads.wait() // the read leases' releases are sent: every lease command is counted below
	if a.leases.get(chain[4]) != nil {
		t.Fatal("a leased ahead 5 levels below the removal")
	}
	grants := 0
	for _, m := range cm.allLeaseModes() {
		if m == 4 {
			grants++
		}
	}
	if got := cm.grantBatches.Load() - batches; grants != n+4 || got < 2 || got > 5 {
		t.Fatalf("%d write leases in %d batches; want %d (d, then s0..s19, l1, l2, l3 in 2 to 5 batches)", grants, got, n+4)
	}
	mustErrno(t, "a unlink l3/f", a.Unlink(ctx, chain[3], "f"), 0)
	waitUntil(t, "l4 to be write-leased", 10*time.Second, func() bool {
		l := a.leases.get(chain[4])
		return l != nil && l.held.Load()
	})
	cm.allLeaseModes()
	for i := 4; i >= 1; i-- {
		mustErrno(t, "rmdir", a.Rmdir(ctx, chain[i-1], fmt.Sprint("l", i)), 0)
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

// heldMeta holds the first lease command until open is closed, and
// records the lease commands.
type heldMeta struct {
	Meta
	once          sync.Once
	entered, open chan struct{}
	mu            sync.Mutex
	cmds          []*metapb.Command
}

func (m *heldMeta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if cmd.GetLease() != nil || cmd.GetMulti() != nil {
		m.mu.Lock()
		m.cmds = append(m.cmds, cmd)
		m.mu.Unlock()
		m.once.Do(func() { close(m.entered); <-m.open })
	}
	return m.Meta.Apply(ctx, cmd)
}

// TestReadLeaseReleasesSentTogether: releases of read leases asked for
// while one is on its way are sent together after it, in one command, and
// each caller returns once its own was sent.
func TestReadLeaseReleasesSentTogether(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := &heldMeta{entered: make(chan struct{}), open: make(chan struct{})}
	a := e.mount("a", func(c *Config) { m.Meta = c.Meta; c.Meta = m }, nil)
	sess := a.pipe.session()
	s := a.reads.releaser
	var wg sync.WaitGroup
	wg.Go(func() { s.release(1000, sess) })
	<-m.entered
	const n = 20
	var returned atomic.Int64
	for i := range n {
		wg.Go(func() { s.release(uint64(2000+i), sess); returned.Add(1) })
	}
	waitUntil(t, "the releases to be queued", 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.next != nil && len(s.next.dirs) == n
	})
	if returned.Load() != 0 {
		t.Fatal("a release returned before it was sent")
	}
	close(m.open)
	wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.cmds) != 2 || m.cmds[0].GetLease().GetMode() != 6 || len(m.cmds[1].GetMulti().GetCommands()) != n {
		t.Fatalf("%d lease commands (%v); want the first release alone, then the %d others in one", len(m.cmds), m.cmds, n)
	}
	dirs := map[uint64]bool{}
	for _, c := range m.cmds[1].GetMulti().GetCommands() {
		if l := c.GetLease(); l.GetMode() == 6 && l.Session == sess {
			dirs[l.Dir] = true
		}
	}
	if len(dirs) != n {
		t.Fatalf("the batch releases %d of the %d directories", len(dirs), n)
	}
}

// mustReadLease lists dir on a until a holds its read lease (the first
// listing may revoke another mount's write lease).
func mustReadLease(t *testing.T, a *FS, dir uint64) {
	t.Helper()
	waitUntil(t, "a read lease", 10*time.Second, func() bool {
		if _, _, errno := a.ReadDir(testCtx(t), dir, 0, 1000); errno != 0 {
			t.Fatalf("readdir: %v", errno)
		}
		return a.reads.holds(dir)
	})
}
