package fs

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"
)

// What the kernel keeps from read leases' copies, and how it is told to
// drop it.
//
// An answer from a copy (a name, or attributes) may be kept by the kernel
// for as long as the copy could answer it (Kept), up to readKeep: longer
// than --attr-timeout, so that a tree this mount walked is walked again
// without a single request. Whenever a copy stops answering before then
// (revoked, given up for a change of the mount's own, idle, evicted), the
// kernel is told to drop what it was given from it, before the lease is
// released (giveBack).
//
// Attributes are dropped at once (the kernel takes no lock for it). A name
// is dropped under the directory's lock, which the kernel holds for every
// request that changes the directory (and shared, for a listing or a
// lookup of a name it does not know). A mount killed while its
// invalidation waits for a request of its own stays stuck in the kernel,
// with every request holding that lock, until someone aborts its FUSE
// connection. So the adapter drops a name only once no request in the
// directory is in progress (Invalidator.InvalEntries). A release waits a
// short while for that; names left then are dropped in the background
// once the directory is idle, or expire first. Until then a name another
// mount renamed may still resolve here, to its file's current attributes
// (a removed file's are asked of the service, which says it is gone, and
// the kernel looks the name up again).
//
// A read-leased directory the mount starts writing in (rm -rf, rsync
// --delete) is write-leased (leaseTable.acquire), and no other mount can
// change its names until that lease ends. The names the kernel was given
// from the copy that the write lease's listing still holds, for the same
// files, are then parked rather than dropped (the kernel would ask for
// each again, one lookup per file the rm is about to remove), and dropped
// when the write lease ends (unpark), unless they expired.

// Invalidator drops what the kernel caches; the FUSE adapter (fs/fuse)
// implements it.
type Invalidator interface {
	// InvalEntries makes the kernel forget names in directory parent,
	// in order, each once no request in parent is in progress, waiting
	// for that moment until by at most. It returns how many it made the
	// kernel forget.
	InvalEntries(parent uint64, names []string, by time.Time) int
	// InvalAttr makes the kernel ask for ino's attributes again.
	InvalAttr(ino uint64)
}

// Kept says how long the kernel may keep an answer of LookupKept or
// GetAttrKept beyond the mount's attribute timeout.
type Kept struct {
	// Own: a name missing from a directory this mount write-leases. No
	// other mount can make it until the lease is given back, which tells
	// the kernel: it may keep "no such name" as long as it keeps a name.
	Own bool
	// Until: an answer from a read lease's copy, which the kernel may
	// keep until then (zero: not from a copy).
	Until time.Time
}

// kernelCache tells the kernel to drop what it was given from copies. Its
// lock, mu, is a leaf.
type kernelCache struct {
	log     *slog.Logger
	inval   atomic.Pointer[Invalidator]
	pending sync.WaitGroup // names waiting for their directory to be idle

	mu     lockorder.Mutex         // a leaf; guards parked
	parked map[uint64]*parkedNames // by directory: names kept while the mount write-leases it
}

// parkedNames is names the kernel keeps until a time.
type parkedNames struct {
	names []string
	until time.Time
}

func newKernelCache(log *slog.Logger) *kernelCache {
	k := &kernelCache{log: log, parked: map[uint64]*parkedNames{}}
	k.mu.Init(levelKernel, "kernelCache.mu")
	return k
}

// park keeps names in dir, which the kernel may keep until until, until
// the mount's write lease of dir ends (unpark).
func (k *kernelCache) park(dir uint64, names []string, until time.Time) {
	now := time.Now()
	if len(names) == 0 || !now.Before(until) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.parked) > 4096 {
		for d, p := range k.parked {
			if !now.Before(p.until) {
				delete(k.parked, d)
			}
		}
	}
	p := k.parked[dir]
	if p == nil {
		p = &parkedNames{}
		k.parked[dir] = p
	}
	p.names = append(p.names, names...)
	if until.After(p.until) {
		p.until = until
	}
}

// unpark drops the names parked in dirs, whose write leases end: waiting
// for each directory to be idle until by at most, the rest later.
func (k *kernelCache) unpark(dirs []uint64, by time.Time) {
	k.mu.Lock()
	var ps []*parkedNames
	var ds []uint64
	for _, d := range dirs {
		if p := k.parked[d]; p != nil {
			delete(k.parked, d)
			ps, ds = append(ps, p), append(ds, d)
		}
	}
	k.mu.Unlock()
	for i, p := range ps {
		wait := by
		if p.until.Before(wait) {
			wait = p.until
		}
		if time.Now().Before(p.until) {
			k.later(ds[i], k.names(ds[i], p.names, wait), p.until)
		}
	}
}

func (k *kernelCache) set(i Invalidator) { k.inval.Store(&i) }

// attrs makes the kernel ask for inos' attributes again.
func (k *kernelCache) attrs(inos []uint64) {
	ip := k.inval.Load()
	if ip == nil {
		return
	}
	for _, ino := range inos {
		(*ip).InvalAttr(ino)
	}
}

// names makes the kernel forget names in dir, waiting for dir to be idle
// until by at most, and returns those it did not.
func (k *kernelCache) names(dir uint64, names []string, by time.Time) []string {
	ip := k.inval.Load()
	if ip == nil || len(names) == 0 {
		return nil
	}
	return names[(*ip).InvalEntries(dir, names, by):]
}

// later makes the kernel forget names in dir in the background, once dir
// is idle, unless they expire (kept) first.
func (k *kernelCache) later(dir uint64, names []string, kept time.Time) {
	if len(names) == 0 || !time.Now().Before(kept) {
		return
	}
	k.pending.Add(1)
	go func() {
		defer k.pending.Done()
		if left := k.names(dir, names, kept); len(left) > 0 {
			k.log.Debug("the kernel kept cached names until they expired: their directory stayed busy", "dir", dir, "names", len(left))
		}
	}()
}

// wait waits for the names still to be dropped (the mount is closing).
func (k *kernelCache) wait() { k.pending.Wait() }
