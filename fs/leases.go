package fs

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Directory leases and write-behind.
//
// Every directory this mount makes is leased to it (MkdirOp.lease): until
// another mount touches it, the directory is this mount's alone. The mount
// then answers lookups in it from its own copy of the entries, numbers the
// inodes it creates there itself (from ranges reserved with InoAllocOp),
// and keeps the files it creates there ("eligible" inodes: their attributes
// are the mount's) as its own: create, open, small writes (inline), chmod,
// chown, utimes, close, rename within leased directories and unlink go to
// the journal and are sent in batches; none waits for a Raft commit. The
// data of a file larger than the inline threshold is written behind too:
// close seals its buffers and reserves its slice commit's place in the
// journal (sealBehind), and the journal's sender waits there until the
// data is on its stores' write quorum.
//
// The promises hold because the lease is exclusive: another mount's
// command or query that touches a leased directory is refused by the
// metadata service, which marks the lease revoked; this mount sees that
// (watchLeases), stops writing behind in the directory, sends its journal
// and releases the lease; the other mount's retry then sees everything
// (close-to-open, O_EXCL across mounts). fsync waits until the journal has
// been applied. What a crash of this mount loses is what a crash of a local
// disk's host loses: changes made since the last fsync.
type dirLease struct {
	dir  uint64
	sess uint64 // the session it was granted to: what is written behind under it is sent under it
	// parent: the directory it was made in (0: not known), for giving
	// back a tree's leases together (withIdle).
	parent uint64
	// mu: read-held by an operation writing behind in the directory;
	// write-held to give the lease up (locking.go). held changes only
	// under mu write-held; it may be read without mu (localAttr).
	mu   lockorder.RWMutex
	held atomic.Bool
	// ahead: the subdirectories were queued to be leased ahead (at the
	// first removal under the lease, or as it was leased ahead:
	// leaseahead.go).
	ahead atomic.Bool
	used  atomic.Int64 // when it was last written behind in (unix ns)

	emu    lockorder.Mutex // guards ents, inodes and scan
	ents   map[string]dirEnt
	inodes []*inode // inodes made eligible under this lease, in that order
	scan   int      // where the last prefetch found its file in inodes
}

type dirEnt struct {
	ino uint64
	typ namespace.FileType
}

// leaseTable is the directory leases the mount holds: it grants itself
// leases (add, acquire), gives them back when the service revokes them or
// they idle (watch), and keeps changes made through the service from
// racing what is written behind (lockService). Its locks: svcMu (level 0),
// each lease's mu (1) and emu (2), and lmu, a leaf over the map.
type leaseTable struct {
	*base
	pipe   *pipeline
	inodes *inodeTable
	reads  *readLeases // the read leases: watched for revocation here too
	off    bool        // --no-write-behind: no leases

	// svcMu: read-held by a change through the service from before it is
	// applied until the mount's view has recorded it (lockService);
	// write-held by acquire while it loads a directory's entries, so that
	// no change made here through the service is missed by both the load
	// and its note (locking.go, level 0).
	svcMu lockorder.RWMutex

	lmu       lockorder.Mutex
	leases    map[uint64]*dirLease
	returning map[uint64]int // directories being given back (giveBack)
	// released: directories whose lease was given back while the mount
	// had none listed (oldest first in releasedOrder, at most
	// maxReleased). A lease a command granted (a mkdir through the
	// service) may be revoked, and released by giveBackAll, before the
	// mount lists it (add): then add lists nothing. Otherwise the mount
	// answered lookups from a lease the service had taken back.
	released      map[uint64]bool
	releasedOrder []uint64

	hitsMu lockorder.Mutex
	hits   map[uint64]int // changes through the service, by directory
	// toAcquire: directories to lease, leased one after another by one
	// goroutine (acquiring): rm -rf going from one directory to the
	// next leases each, not only those asked for while none was.
	toAcquire []uint64
	acquiring bool
	// toAhead: directories to lease ahead of removals, in batches, by one
	// goroutine (leasingAhead; leaseahead.go).
	toAhead      []aheadDir
	leasingAhead bool

	kick    chan struct{} // a lease was granted: watch for its revocation
	watched chan struct{} // closed when watch returns

	// idleWith: a lease unused this long (ns) is given back with one that
	// was revoked and idled as long (revokeIdle; tests change it).
	idleWith atomic.Int64
}

func newLeaseTable(b *base, pipe *pipeline, inodes *inodeTable, off bool) *leaseTable {
	t := &leaseTable{base: b, pipe: pipe, inodes: inodes, off: off, leases: map[uint64]*dirLease{},
		returning: map[uint64]int{}, released: map[uint64]bool{}, kick: make(chan struct{}, 1), watched: make(chan struct{})}
	t.svcMu.Init(levelService, "leaseTable.svcMu")
	t.lmu.Init(levelLeases, "leaseTable.lmu")
	t.hitsMu.Init(levelHits, "leaseTable.hitsMu")
	t.idleWith.Store(int64(revokeIdle))
	return t
}

// newDirLease is a lease of dir granted to session sess, not held yet.
func newDirLease(dir, sess uint64) *dirLease {
	l := &dirLease{dir: dir, sess: sess, ents: map[string]dirEnt{}}
	l.mu.InitKey(levelLease, "dirLease.mu", dir)
	l.emu.InitKey(levelEntries, "dirLease.emu", dir)
	return l
}

// get returns the lease of dir the mount holds or is taking, or nil.
func (t *leaseTable) get(dir uint64) *dirLease {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	return t.leases[dir]
}

// forget drops dir's lease if it is still l.
func (t *leaseTable) forget(dir uint64, l *dirLease) {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	if t.leases[dir] == l {
		delete(t.leases, dir)
	}
}

// count is how many leases the mount holds.
func (t *leaseTable) count() int {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	return len(t.leases)
}

// run gives back leases the service revoked or that idle (watch), and all
// of them when a batch written behind failed (the mount's view of those
// directories may be wrong: everything is asked of the service again),
// until ctx ends.
func (t *leaseTable) run(ctx context.Context) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.pipe.failures:
				t.dropAll(true)
			}
		}
	}()
	t.watch(ctx)
}

// held returns dir's lease, read-locked, if the mount holds it; the
// caller read-unlocks it.
func (t *leaseTable) held(dir uint64) *dirLease {
	l := rlockHeld(t.get(dir))
	if l != nil {
		l.used.Store(time.Now().UnixNano())
	}
	return l
}

// eligible returns the lease under which in's attributes are the mount's,
// read-locked, or nil.
func (t *leaseTable) eligible(in *inode) *dirLease {
	in.mu.Lock()
	l := in.wb
	in.mu.Unlock()
	return rlockHeld(l)
}

// rlockHeld read-locks l and returns it if it is held (nil otherwise, and
// for a nil l).
func rlockHeld(l *dirLease) *dirLease {
	if l == nil {
		return nil
	}
	l.mu.RLock()
	if !l.held.Load() {
		l.mu.RUnlock()
		return nil
	}
	return l
}

// addLease records a lease granted to the mount for a directory it just
// made (empty) in parent, whose attributes a are the mount's from now on.
// The lease is complete before anyone can see it (dropLeases may end it at
// once).
func (t *leaseTable) add(dir, parent, sess uint64, a *metapb.Attr) *dirLease {
	t.lmu.Lock()
	gone := t.released[dir] // revoked and given back before it was listed (released)
	t.lmu.Unlock()
	if gone {
		return nil
	}
	l := newDirLease(dir, sess)
	l.parent = parent
	l.held.Store(true)
	l.used.Store(time.Now().UnixNano())
	t.newLocal(l, a, 0)
	t.lmu.Lock()
	if t.released[dir] {
		t.lmu.Unlock()
		l.held.Store(false) // its inode's attributes are not the mount's
		return nil
	}
	t.leases[dir] = l
	t.lmu.Unlock()
	t.kickWatch()
	return l
}

// kickWatch tells the watcher a lease was granted: to watch for its
// revocation.
func (t *leaseTable) kickWatch() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// giveBack ends the lease of dir: no more writing behind in it, the journal
// is applied, the inodes made under it become ordinary, and the service
// is told.
func (t *leaseTable) giveBack(dir uint64) { t.giveBackAll([]uint64{dir}) }

// endLease stops writing behind under l and makes its inodes ordinary once
// the journal is applied, with the opens made under it registered first
// (unless register is false: the session ended, and its handles are
// registered again under the next one: handleTable.reopen).
func (t *leaseTable) endLease(l *dirLease, register bool) {
	l.mu.Lock()
	l.held.Store(false)
	l.mu.Unlock()
	if register {
		l.emu.Lock()
		ins := slices.Clone(l.inodes)
		l.emu.Unlock()
		for _, in := range ins {
			in.jmu.Lock()
			t.registerOpens(in)
			in.jmu.Unlock()
		}
	}
	t.pipe.drain()
	l.emu.Lock()
	ins := l.inodes
	l.inodes, l.ents = nil, nil
	l.emu.Unlock()
	for _, in := range ins {
		in.mu.Lock()
		if in.wb == l {
			in.wb, in.attr = nil, nil
		}
		in.mu.Unlock()
		t.inodes.settled(in)
	}
}

// registerOpens sends, through the journal, the opens of in made under a
// write lease and not registered yet (view.open): before a change that
// may free the file at the service (its last name removed here), and at
// the lease's end. A handle registered again under a new session
// (handleTable.reopen: no longer wb) is left out. in.jmu is held.
func (t *leaseTable) registerOpens(in *inode) {
	for _, h := range in.lazy {
		h.mu.Lock()
		wb, id := h.wb, h.id
		h.mu.Unlock()
		if wb && h.lazy {
			t.pipe.behindOpenClose(id>>40, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: id >> 40, Ino: in.ino, Handle: id}}}, in.ino)
		}
		h.lazy = false
	}
	in.lazy = nil
}

// dropLeases forgets every lease: the session was replaced (its leases
// ended with it), or a batch of the journal could not be applied (the
// mount's view of those directories may be wrong: they are given back, so
// that everything is asked of the service, and another mount that waits
// for one of them is not left waiting: a mount with no lease does not
// watch for revocations).
func (t *leaseTable) dropAll(giveBack bool) {
	t.lmu.Lock()
	ls := make([]*dirLease, 0, len(t.leases))
	for _, l := range t.leases {
		ls = append(ls, l)
	}
	t.lmu.Unlock()
	for _, l := range ls {
		if giveBack {
			t.giveBack(l.dir)
			continue
		}
		t.endLease(l, false)
		t.forget(l.dir, l)
	}
}

// watchLeases gives back the leases the service revoked: another mount
// waits for them. While the mount holds leases it keeps one long poll
// (RevokesReq.wait_ms) open; it also gives back leases idle for leaseIdle.
func (t *leaseTable) watch(ctx context.Context) {
	defer close(t.watched)
	lastSweep := time.Now()
	// One poll may fail now and then (a leader change, a member cut off):
	// the next one goes to another member. Two in a row are worth a word.
	fails := failures{after: 2}
	for ctx.Err() == nil {
		t.lmu.Lock()
		n := len(t.leases)
		var idle []uint64
		sweep := time.Since(lastSweep) > leaseIdle/10
		if sweep {
			lastSweep = time.Now()
			old := time.Now().Add(-leaseIdle).UnixNano()
			for dir, l := range t.leases {
				if l.used.Load() < old {
					idle = append(idle, dir)
				}
			}
		}
		t.lmu.Unlock()
		for _, dir := range idle {
			t.giveBack(dir) // its entries and inodes need no memory any more
		}
		if sweep {
			t.reads.idle()
		}
		n += t.reads.count()
		if n == 0 {
			select { // nothing to watch until a lease is granted
			case <-ctx.Done():
			case <-t.kick:
			case <-t.reads.kick:
			case <-time.After(leaseIdle / 10):
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, leaseWait+t.cfg.MetaTimeout)
		r, err := t.pipe.meta.Read(cctx, &metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{
			Session: t.pipe.session(), WaitMs: uint32(leaseWait / time.Millisecond)}}})
		cancel()
		if err != nil || r.Errno != 0 {
			if ctx.Err() == nil {
				fails.fail(t.log, "watching for revoked directory leases", "err", err, "errno", r.GetErrno())
				_ = sleepCtx(ctx, time.Second)
			}
			continue
		}
		fails.ok(t.log, "watching for revoked directory leases again")
		t.reads.revoked(r.ReadDirs)
		t.giveBackAll(t.withIdle(slices.Sorted(slices.Values(r.Dirs)), r.KidDirs))
	}
}

// withIdle adds to dirs, the leases another mount revoked, the leases of
// the directories this mount made under them (as far as it holds the
// leases between) that idle for idleWith and were last used before the
// revoked one, if one of dirs idles: another mount going through a tree
// this mount wrote a while ago (diff -r, rm -rf, a backup) would otherwise
// wait for a revocation in one directory after another. The mount's other
// leases stay, among them those of subtrees it went through after it last
// used the revoked directory (when that is the root, say, every tree is
// under it), and the trees under leases revoked only so that another
// mount could read-lease their parent (kids: it did not go into them).
func (t *leaseTable) withIdle(dirs, kids []uint64) []uint64 {
	if len(dirs) == 0 {
		return nil
	}
	old := time.Now().UnixNano() - t.idleWith.Load()
	t.lmu.Lock()
	defer t.lmu.Unlock()
	if !slices.ContainsFunc(dirs, func(d uint64) bool {
		l := t.leases[d]
		return l != nil && l.used.Load() <= old && !slices.Contains(kids, d)
	}) {
		return dirs
	}
	under := func(l *dirLease) bool {
		for p, hops := l.parent, 0; p != 0 && hops < 256; hops++ {
			pl := t.leases[p]
			if slices.Contains(dirs, p) {
				return pl != nil && l.used.Load() <= pl.used.Load() && !slices.Contains(kids, p)
			}
			if pl == nil {
				return false
			}
			p = pl.parent
		}
		return false
	}
	out := slices.Clone(dirs)
	for d, l := range t.leases {
		if l.used.Load() <= old && t.returning[d] == 0 && !slices.Contains(dirs, d) && under(l) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// giveBackAll gives back the leases of dirs (ascending) as giveBack says,
// with one drain of the journal and one call to the service per session
// they were granted to (in batches of maxReleases).
func (t *leaseTable) giveBackAll(dirs []uint64) {
	t.lmu.Lock()
	ls := make([]*dirLease, len(dirs))
	for i, d := range dirs {
		ls[i] = t.leases[d]
		t.returning[d]++ // acquire keeps off until the service is told
		if ls[i] == nil && !t.released[d] {
			t.released[d] = true // a lease granted and not listed yet is not listed (add)
			t.releasedOrder = append(t.releasedOrder, d)
			if len(t.releasedOrder) > maxReleased {
				delete(t.released, t.releasedOrder[0])
				t.releasedOrder = t.releasedOrder[1:]
			}
		}
	}
	t.lmu.Unlock()
	defer func() {
		t.lmu.Lock()
		for _, d := range dirs {
			if t.returning[d]--; t.returning[d] <= 0 {
				delete(t.returning, d)
			}
		}
		t.lmu.Unlock()
	}()
	bySess := map[uint64][]*metapb.Command{}
	for i, l := range ls {
		sess := t.pipe.session()
		if l != nil {
			// Ended while still listed: a change through the service
			// meanwhile locks it (lockService) and so waits for the
			// changes written behind under it; only then is it forgotten.
			sess = l.sess
			t.endLease(l, true)
			t.forget(l.dir, l)
		}
		bySess[sess] = append(bySess[sess], &metapb.Command{Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: sess, Dir: dirs[i], Mode: 2}}})
	}
	t.pipe.drain()
	// What the kernel was given from read leases' copies before these
	// write leases, and kept (kernelCache.park).
	t.reads.kernel.unpark(dirs, time.Now().Add(readInvalWait))
	for sess, cmds := range bySess {
		for len(cmds) > 0 {
			n := min(len(cmds), maxReleases)
			cmd := cmds[0]
			if n > 1 {
				cmd = &metapb.Command{Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds[:n], ErrorsOnly: true}}}
			}
			cmd.LeaseSession = sess
			cctx, cancel := t.ctx(context.Background())
			if _, err := t.pipe.meta.Apply(cctx, cmd); err != nil {
				t.log.Warn("releasing directory leases", "leases", n, "err", err)
			}
			cancel()
			cmds = cmds[n:]
		}
	}
	if t.debugOn {
		t.log.Debug("directory leases given back", "dirs", dirs)
	}
}

// maxReleases bounds the lease releases sent in one call.
const maxReleases = 1024

// maxReleased bounds the directories remembered as released unlisted.
const maxReleased = 4096

// revokeIdle: see leaseTable.idleWith.
const revokeIdle = 2 * time.Second

// lockService write-locks the leases this mount holds of dirs (ascending,
// as locking.go orders them) for a change made through the service in
// them, and returns what unlocks them. From before the change is applied
// until its note has recorded it in the mount's view (noteEnt, noteGone,
// noteRename), nothing is written behind in those directories: a change
// written behind is never based on a view that lacks one the service has
// already applied.
func (t *leaseTable) lockService(dirs ...uint64) (unlock func()) {
	t.svcMu.RLock()
	dirs = slices.Compact(slices.Sorted(slices.Values(dirs)))
	var ls []*dirLease
	for _, d := range dirs {
		t.lmu.Lock()
		l := t.leases[d]
		t.lmu.Unlock()
		if l != nil {
			l.mu.Lock()
			ls = append(ls, l)
		}
	}
	if t.debugOn {
		locked := make([]uint64, len(ls))
		for i, l := range ls {
			locked[i] = l.dir
		}
		t.log.Debug("locked for a change through the service", "dirs", dirs, "leased", locked)
	}
	return func() {
		for i := len(ls) - 1; i >= 0; i-- {
			ls[i].mu.Unlock()
		}
		t.svcMu.RUnlock()
	}
}

// dropRemoved forgets the lease of dir (0: none), which a change through
// the service removed; the caller holds its mu (lockService) and ends it
// (endLease) once it has let go.
func (t *leaseTable) dropRemoved(dir uint64) *dirLease {
	if dir == 0 {
		return nil
	}
	t.lmu.Lock()
	l := t.leases[dir]
	delete(t.leases, dir)
	t.lmu.Unlock()
	if l != nil {
		l.held.Store(false)
	}
	return l
}

// newLocal records a new eligible inode under l (l.emu is held, or l is
// not published yet).
func (t *leaseTable) newLocal(l *dirLease, a *metapb.Attr, opens int) *inode {
	in := t.inodes.getLocked(a.Ino)
	in.attr, in.cacheVer, in.wb, in.made = a, a.Version, l, true
	in.invalidate()
	in.opens += opens
	in.noCapsAt = time.Now() // a new file has no xattrs
	in.mu.Unlock()
	l.inodes = append(l.inodes, in)
	return in
}

// leaseWait is how long one long poll for revocations lasts.
const leaseWait = 5 * time.Second

// leaseIdle is how long a lease is kept without being written behind in.
const leaseIdle = 5 * time.Minute

// Leasing directories the mount did not make: after leaseAfter changes
// through the service in one directory, the mount tries to lease it (if
// no other mount holds it) and loads its entries; up to leaseMaxEntries.
const (
	leaseAfter      = 8
	leaseMaxEntries = 100000
)
