package fs

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// The copy of a read-leased directory, how it is taken from the service,
// and the backoff of directories whose lease changes took (readlease.go).

// readDir is a directory the mount holds a read lease of, and its copy:
// immutable once published, but for used, the served marks, parent,
// ahead and kept (under readLeases.mu). The entries are kept flat: as protobuf messages, a
// million of them took three times the memory.
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
	kept   int64 // until when the kernel may keep what it answered (unix ns)
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

// nextFiles lists up to n regular files that follow ino in the copy that
// holds it (in its listing's order), with content in block 0 only: what a
// reader going through the directory reads next (dataPlane.prefetch).
func (r *readLeases) nextFiles(ino uint64, n int, maxSize uint64) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.byIno[ino]
	if d == nil || d.dir == ino {
		return nil
	}
	var out []uint64
	for j := int(d.byIno[ino]) + 1; j < len(d.ents) && len(out) < n; j++ {
		a := &d.ents[j].a
		if namespace.FileType(a.typ) == namespace.TypeFile && a.size > 0 && a.size <= maxSize {
			out = append(out, a.ino)
		}
	}
	return out
}

// grant asks for the read leases of dirs for sess, in one call. refused:
// the service refused one for another mount's lease.
func (r *readLeases) grant(sess uint64, dirs []uint64) (granted, refused []bool) {
	ctx, cancel := r.ctx(context.Background())
	defer cancel()
	granted, refused = make([]bool, len(dirs)), make([]bool, len(dirs))
	cmds := make([]*metapb.Command, len(dirs))
	for i, dir := range dirs {
		cmds[i] = &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: sess, Dir: dir, Mode: 5}}}
	}
	cmd := cmds[0]
	if len(cmds) > 1 {
		cmd = &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds, ErrorsOnly: true}}}
	}
	res, err := r.pipe.meta.Apply(ctx, cmd)
	if err != nil {
		return granted, refused
	}
	results := []*metapb.Result{res}
	if len(cmds) > 1 {
		results = res.Results
	}
	for i, res := range results[:min(len(results), len(dirs))] {
		granted[i], refused[i] = res.Errno == 0, res.Leased
	}
	return granted, refused
}

// list reads the copy of dir, read-leased to sess: its entries with their
// attributes (nil if that fails).
func (r *readLeases) list(dir, sess uint64) *readDir {
	ctx, cancel := r.ctx(context.Background())
	defer cancel()
	d := &readDir{dir: dir, sess: sess, byName: map[string]int32{}, byIno: map[uint64]int32{}}
	for cookie := uint64(0); ; {
		q, errno := r.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{
			Ino: dir, Cookie: cookie, Max: 4096, Plus: true}}})
		if errno != 0 || len(d.ents)+len(q.Entries) > readMaxDir || q.Attr == nil {
			return nil
		}
		d.self = flatten(q.Attr)
		for _, e := range q.Entries {
			if e.Attr == nil {
				return nil // gone meanwhile: not while leased
			}
			i := int32(len(d.ents))
			d.ents = append(d.ents, readEnt{name: e.Name, cookie: e.Cookie, a: flatten(e.Attr)})
			d.byName[e.Name] = i
			d.byIno[e.Ino] = i
			cookie = e.Cookie
		}
		if len(q.Entries) == 0 || q.Eof {
			break
		}
	}
	d.used.Store(time.Now().UnixNano())
	return d
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
