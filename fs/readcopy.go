package fs

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// The read leases' state, the copy of a read-leased directory, how it is
// taken from the service, and the backoff of directories whose lease
// changes took (readlease.go).

// readLoad is a read lease being taken: a change of the mount's own in the
// directory or of one of its children meanwhile spoils it.
type readLoad struct {
	spoiled bool
	touched []uint64 // inodes own changes touched while it loaded
	walked  bool     // taken ahead, and the walk got there first
}

// readLeases is the read leases the mount holds. Its lock, mu, is a leaf.
type readLeases struct {
	*base
	pipe    *pipeline
	handles *handleTable // closes of handles registered late (register)
	off     bool

	kernel   *kernelCache
	releaser *releaser // sends the releases (release)
	// renewed: when the session's last renewal that succeeded was sent
	// (unix ns): the service keeps the session, and so its read leases,
	// at least SessionTTL from then.
	renewed atomic.Int64
	copier  *copier

	mu       lockorder.Mutex
	dirs     map[uint64]*readDir
	byIno    map[uint64]*readDir // a child's (or the directory's own) lease
	loads    map[uint64]*readLoad
	tracks   map[*readLoad]bool // write leases' loads (track)
	inflight map[uint64]int     // inodes own changes in progress touch
	entries  int
	hits     map[uint64]int // lookups through the service, by directory
	cool     map[uint64]cooldown
	lazy     map[*Handle]*lazyOpen // opens not registered yet (readopen.go)
	writes   map[uint64]bool       // directories changed here while read-leased (wantWrite)
	// leasing: directories the mount is write-leasing (handOver until
	// leased): no copy of one is taken meanwhile. One published after the
	// write lease's grant would answer listings without what this mount
	// then writes behind.
	leasing map[uint64]*handing
	// releasing: releases on their way, by directory: no lease of one is
	// taken meanwhile (the service would grant it, and the release
	// coming after end it while its copy answers).
	releasing map[uint64]int
	releases  sync.WaitGroup

	walks  map[uint64]int // per parent, its child directories a walk went into (aheadOf)
	walkAt uint64         // the directory a walk went into last
	// refusedAhead: when taking a directory ahead was last refused (for
	// another mount's write lease): it is not taken ahead for aheadCool.
	refusedAhead map[uint64]time.Time

	kick chan struct{} // a lease was taken: watch for its revocation (leaseTable.watch)
}

// Read lease tuning.
const (
	readAfter      = 3                      // lookups through the service in a directory before it is read-leased
	walkAfter      = 2                      // child directories of one parent a walk goes into before the next are taken ahead
	walkLook       = 32                     // directories after a walk's position taken ahead of it, at most
	walkUp         = 8                      // parents a walk's order is followed up through, at most
	aheadRetry     = 32 * time.Millisecond  // the longest wait before a lease taken ahead is asked again
	aheadCool      = time.Second            // how long a directory whose lease was refused is not taken ahead
	readMaxDir     = 100000                 // entries: a larger directory is not read-leased
	readMaxEntries = 250000                 // entries cached in all; the least used leases go first
	readIdle       = time.Minute            // a lease unused this long is given back
	readInvalWait  = 500 * time.Millisecond // how long a release waits for the kernel's invalidations
	readKeep       = 10 * time.Second       // how long the kernel may keep what a copy answered, at most
	readOwnWait    = 100 * time.Millisecond // how long a release for a change of the mount's own waits for them
	readDirsOff    = time.Minute            // how long a service that did not know ReadDirsReq is not asked it
)

func newReadLeases(b *base, pipe *pipeline, handles *handleTable, off bool) *readLeases {
	r := &readLeases{base: b, pipe: pipe, copier: &copier{base: b, pipe: pipe}, handles: handles, off: off, kernel: newKernelCache(b.log), releaser: newReleaser(b, pipe), dirs: map[uint64]*readDir{}, lazy: map[*Handle]*lazyOpen{}, writes: map[uint64]bool{}, leasing: map[uint64]*handing{}, releasing: map[uint64]int{},
		byIno: map[uint64]*readDir{}, loads: map[uint64]*readLoad{}, tracks: map[*readLoad]bool{}, inflight: map[uint64]int{},
		hits: map[uint64]int{}, cool: map[uint64]cooldown{}, walks: map[uint64]int{}, refusedAhead: map[uint64]time.Time{}, kick: make(chan struct{}, 1)}
	r.mu.Init(levelReads, "readLeases.mu")
	r.renewed.Store(time.Now().UnixNano())
	return r
}

// readDir is a directory the mount holds a read lease of, and its copy:
// immutable once published, but for used, the served marks, parent,
// ahead, kept and subs (under readLeases.mu). The entries are kept flat:
// as protobuf messages, a million of them took three times the memory.
type readDir struct {
	dir    uint64
	sess   uint64
	self   flatAttr
	ents   []readEnt        // as the service lists them, by cookie
	byName map[string]int32 // index in ents
	byIno  map[uint64]int32 // a child's index in ents
	used   atomic.Int64     // when it last answered (unix ns)
	taken  time.Time        // when it was published
	// parent: the read-leased directory that listed it when it was
	// taken (0: none); ahead: taken ahead of a walk, and not used since
	// (walkOn).
	parent uint64
	ahead  bool
	kept   int64   // until when the kernel may keep what it answered (unix ns)
	subs   []int32 // its child directories' entries in name order, once asked (subsAfter)
}

// readEnt is an entry of a copy.
type readEnt struct {
	name   string
	cookie uint64
	a      flatAttr
	served bool // the name was given to the kernel
}

// flatAttr is metapb.Attr without a message's overhead.
type flatAttr struct {
	ino, size, version  uint64
	atime, mtime, ctime int64
	mode, uid, gid      uint32
	nlink, rdev         uint32
	typ                 uint8
	served              bool // given to the kernel
}

func flatten(a *metapb.Attr) flatAttr {
	return flatAttr{ino: a.Ino, size: a.Size, version: a.Version, atime: a.Atime, mtime: a.Mtime, ctime: a.Ctime,
		mode: a.Mode, uid: a.Uid, gid: a.Gid, nlink: a.Nlink, rdev: a.Rdev, typ: uint8(a.Type)}
}

func (f *flatAttr) pb() *metapb.Attr {
	return &metapb.Attr{Ino: f.ino, Type: uint32(f.typ), Mode: f.mode, Uid: f.uid, Gid: f.gid, Nlink: f.nlink,
		Size: f.size, Atime: f.atime, Mtime: f.mtime, Ctime: f.ctime, Rdev: f.rdev, Version: f.version}
}

// heldKids counts d's child directories held in dirs, and returns the
// index of the last in d's entries; each is told d is its parent. The
// caller holds readLeases.mu.
func (d *readDir) heldKids(dirs map[uint64]*readDir) (last int32, n int) {
	last = -1
	for ino, i := range d.byIno {
		if c := dirs[ino]; c != nil {
			c.parent = d.dir
			n++
			last = max(last, i)
		}
	}
	return last, n
}

// keep is until when the kernel may keep what d answers now (Kept): the
// sooner of readKeep from now and until, the copy's trust; noted in d.
// readLeases.mu is held.
func (d *readDir) keep(until time.Time) time.Time {
	u := min(until.UnixNano(), time.Now().Add(readKeep).UnixNano())
	d.kept = max(d.kept, u)
	return time.Unix(0, u)
}

// takeServed returns what the kernel was given from d and clears the
// marks. readLeases.mu is held.
func (d *readDir) takeServed() (names []string, inos []uint64) {
	if d.self.served {
		inos = append(inos, d.dir)
		d.self.served = false
	}
	for i := range d.ents {
		e := &d.ents[i]
		if e.served {
			names = append(names, e.name)
			e.served = false
		}
		if e.a.served {
			inos = append(inos, e.a.ino)
			e.a.served = false
		}
	}
	return names, inos
}

// nextFiles lists up to n regular files, with content in block 0 only,
// that a reader going through a tree reads after ino (dataPlane.prefetch):
// those after it in the copy that holds it (in its listing's order), then
// those of the copies of the directories a walk in name order goes into
// next (walkOrder: the directory's subdirectories depth first, then its
// parent's next ones, and so on up), of the first walkDirs of them.
func (r *readLeases) nextFiles(ino uint64, n int, maxSize uint64) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.byIno[ino]
	if d == nil || d.dir == ino {
		return nil
	}
	var out []uint64
	add := func(c *readDir, from int) {
		for j := from; j < len(c.ents) && len(out) < n; j++ {
			a := &c.ents[j].a
			if namespace.FileType(a.typ) == namespace.TypeFile && a.size > 0 && a.size <= maxSize {
				out = append(out, a.ino)
			}
		}
	}
	add(d, int(d.byIno[ino])+1)
	for _, dir := range walkOrder(r.dirs, d, walkDirs) {
		if len(out) >= n {
			break
		}
		if c := r.dirs[dir]; c != nil {
			add(c, 0)
		}
	}
	return out
}

// walkOrder lists the first n directories a depth-first walk in name
// order reaches after going into c: c's subdirectories, each followed by
// its own as far as their copies are held, then the next ones of c's
// parent, and so on up; dirs: the copies held. readLeases.mu is held.
func walkOrder(dirs map[uint64]*readDir, c *readDir, n int) []uint64 {
	var out []uint64
	var down func(p *readDir, subs []int32)
	down = func(p *readDir, subs []int32) {
		for _, i := range subs {
			if len(out) >= n {
				return
			}
			ino := p.ents[i].a.ino
			out = append(out, ino)
			if sc := dirs[ino]; sc != nil {
				down(sc, sc.subsAfter(""))
			}
		}
	}
	down(c, c.subsAfter(""))
	for hops := 0; len(out) < n && hops < walkUp; hops++ {
		p := dirs[c.parent]
		at, listed := int32(0), false
		if p != nil {
			at, listed = p.byIno[c.dir]
		}
		if !listed {
			break
		}
		down(p, p.subsAfter(p.ents[at].name))
		c = p
	}
	return out
}

// subsAfter returns the entries (indices in ents) of d's child
// directories whose names sort after after, in name order: the end of a
// list sorted once per copy, which the caller must not change.
// readLeases.mu is held.
func (d *readDir) subsAfter(after string) []int32 {
	if d.subs == nil {
		subs := make([]int32, 0, 4)
		for i := range d.ents {
			if namespace.FileType(d.ents[i].a.typ) == namespace.TypeDir {
				subs = append(subs, int32(i))
			}
		}
		slices.SortFunc(subs, func(i, j int32) int { return strings.Compare(d.ents[i].name, d.ents[j].name) })
		d.subs = subs
	}
	i := sort.Search(len(d.subs), func(i int) bool { return d.ents[d.subs[i]].name > after })
	return d.subs[i:]
}

// cooldown keeps a directory whose read lease was lost to a change from
// being read-leased again at once: where mounts take turns changing and
// listing a directory, each listing would take a lease (a Raft commit)
// that the next change revokes (another commit, and a wait).
type cooldown struct {
	until time.Time
	wait  time.Duration
}

// Backoff of read leases lost to changes: doubled at each loss, from
// readCoolMin to readCoolMax; a lease that lasted readCoolMax starts over.
const (
	readCoolMin = 50 * time.Millisecond
	readCoolMax = 5 * time.Second
)

// backoff records that dir's read lease, taken at taken, was lost to a
// change. r.mu is held.
func (r *readLeases) backoff(dir uint64, taken time.Time) {
	if len(r.cool) > 4096 {
		clear(r.cool)
	}
	c := r.cool[dir]
	if time.Since(taken) > readCoolMax {
		c.wait = 0
	}
	c.wait = min(max(2*c.wait, readCoolMin), readCoolMax)
	c.until = time.Now().Add(c.wait)
	r.cool[dir] = c
}

// releaser sends the read leases' releases. Those asked for while one is
// on its way go together after it, in one command per session: each is a
// Raft commit otherwise, and rm -rf on a mount that walked the tree gives
// back a copy at every directory.
type releaser struct {
	*base
	pipe    *pipeline
	mu      lockorder.Mutex // a leaf
	next    *releaseBatch   // the releases asked for since the one on its way
	sending bool            // a caller of release sends the batches
}

type releaseBatch struct {
	dirs, sess []uint64
	done       chan struct{} // closed once the service was told
}

func newReleaser(b *base, pipe *pipeline) *releaser {
	s := &releaser{base: b, pipe: pipe}
	s.mu.Init(levelReleaser, "releaser.mu")
	return s
}

// release queues dir's release and waits until it is sent: by the first
// caller to find none on its way, or after the one on its way.
func (s *releaser) release(dir, sess uint64) {
	s.mu.Lock()
	b := s.next
	if b == nil {
		b = &releaseBatch{done: make(chan struct{})}
		s.next = b
	}
	b.dirs, b.sess = append(b.dirs, dir), append(b.sess, sess)
	lead := !s.sending
	s.sending = true
	s.mu.Unlock()
	if lead {
		s.sendNext()
	}
	<-b.done
}

// sendNext sends the batch queued, then, in the background, the one
// queued meanwhile if any (its callers wait for it).
func (s *releaser) sendNext() {
	s.mu.Lock()
	b := s.next
	s.next = nil
	s.mu.Unlock()
	s.send(b)
	close(b.done)
	s.mu.Lock()
	more := s.next != nil
	s.sending = more
	s.mu.Unlock()
	if more {
		go s.sendNext()
	}
}

// send tells the service of b's releases, one command per session.
func (s *releaser) send(b *releaseBatch) {
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	bySess := map[uint64][]*metapb.Command{}
	for i, dir := range b.dirs {
		sess := b.sess[i]
		bySess[sess] = append(bySess[sess], &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
			Session: sess, Dir: dir, Mode: 6}}})
	}
	for sess, cmds := range bySess {
		cmd := cmds[0]
		if len(cmds) > 1 {
			cmd = &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds, ErrorsOnly: true}}}
		}
		if _, err := s.pipe.meta.Apply(ctx, cmd); err != nil {
			s.log.Warn("releasing read leases", "dirs", len(cmds), "err", err)
		}
	}
}

// released ends a release of dir's lease counted in releasing.
func (r *readLeases) released(dir uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.releasing[dir]--; r.releasing[dir] <= 0 {
		delete(r.releasing, dir)
	}
}
