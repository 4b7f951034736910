package fs

import (
	"slices"
	"sync"

	"github.com/ecfs/ecfs/cluster/namespace"
)

// Leasing ahead. A removal in a directory (rm -rf, rsync --delete) goes on
// in its subdirectories, and the mount write-leases each of them at its
// first change there (leaseNow): a grant, one Raft commit, and a listing,
// which the removal waits for, directory after directory. So at the first
// removal under a write lease, the subdirectories the mount holds read
// copies of (it walked them lately: the diff before an rm -rf) are
// write-leased in the background, aheadBatch in one command, their
// listings read aheadLoads at a time (none when the read copy is taken
// over), each lease usable once its own listing is in; and theirs in turn,
// down to aheadDepth levels below the removal.
//
// Only those read-leased: the mount looked into them, and no other mount
// changed them since (that would have revoked the copy).

const (
	aheadBatch = 16  // directories leased in one command
	aheadLoads = 4   // listings read at once
	maxAhead   = 256 // directories waiting to be leased ahead, at most
	// aheadDepth: how many levels below the directory of a removal are
	// leased ahead: a directory leased ahead queues its own subdirectories
	// (rm -rf goes down into them next) until this depth.
	aheadDepth = 4
)

// aheadDir is a directory to lease ahead, depth levels below the removal
// that queued it.
type aheadDir struct {
	dir   uint64
	depth int
}

// ahead queues dir's read-leased subdirectories for leasing, at the first
// removal under the mount's write lease of dir. The caller holds no lock.
func (t *leaseTable) ahead(dir uint64) {
	if t.off {
		return
	}
	if l := t.get(dir); l != nil && l.held.Load() {
		t.queueKids(l, 1)
	}
}

// queueKids queues the subdirectories of l's directory that the mount
// holds read copies of (and leases no other way) for leasing ahead, as
// depth levels below a removal; once per lease.
func (t *leaseTable) queueKids(l *dirLease, depth int) {
	if l.ahead.Load() || l.ahead.Swap(true) { // (every removal comes here: no write once done)
		return
	}
	var subs []uint64
	l.emu.Lock()
	for _, e := range l.ents {
		if e.typ == namespace.TypeDir {
			subs = append(subs, e.ino)
		}
	}
	l.emu.Unlock()
	subs = slices.DeleteFunc(subs, func(d uint64) bool { return t.get(d) != nil || !t.reads.holds(d) })
	if len(subs) == 0 {
		return
	}
	t.hitsMu.Lock()
	for _, d := range subs {
		if len(t.toAhead) < maxAhead && !slices.ContainsFunc(t.toAhead, func(a aheadDir) bool { return a.dir == d }) {
			t.toAhead = append(t.toAhead, aheadDir{d, depth})
		}
	}
	start := !t.leasingAhead
	t.leasingAhead = true
	t.hitsMu.Unlock()
	if start {
		go t.leaseAhead()
	}
}

// leaseAhead leases the directories queued by ahead until none is left.
func (t *leaseTable) leaseAhead() {
	for {
		t.hitsMu.Lock()
		n := min(len(t.toAhead), aheadBatch)
		if n == 0 {
			t.leasingAhead = false
			t.hitsMu.Unlock()
			return
		}
		batch := slices.Clone(t.toAhead[:n])
		t.toAhead = t.toAhead[n:]
		t.hitsMu.Unlock()
		t.acquireBatch(batch)
	}
}

// acquireBatch leases those of batch the mount still holds read copies of
// and leases no other way, in one command, and loads them (acquire does
// one); each queues its own subdirectories if it is less than aheadDepth
// below the removal.
func (t *leaseTable) acquireBatch(batch []aheadDir) {
	t.svcMu.Lock()
	defer t.svcMu.Unlock()
	depth := map[uint64]int{}
	var dirs []uint64
	for _, a := range batch {
		if t.reads.holds(a.dir) {
			dirs = append(dirs, a.dir)
			depth[a.dir] = a.depth
		}
	}
	ls := t.reserve(dirs)
	if len(ls) == 0 {
		return
	}
	tracks := make([]*readLoad, len(ls))
	for i := range ls {
		tracks[i] = t.reads.track()
	}
	queued := t.pipe.pendingInos()
	granted, at := t.try(ls)
	var wg sync.WaitGroup
	sem := make(chan struct{}, aheadLoads)
	for i, l := range ls {
		if !granted[i] {
			t.reads.untrack(tracks[i])
			t.publish(l, false)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if t.publish(l, t.list(l, tracks[i], queued, at[i])) && depth[l.dir] < aheadDepth {
				t.queueKids(l, depth[l.dir]+1)
			}
			<-sem
		}()
	}
	wg.Wait()
	t.kickWatch()
}
