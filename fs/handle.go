package fs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Handle is an open file: registered with the metadata service, so the
// file's data outlives its last name until the handle is released.
type Handle struct {
	Ino uint64
	id  uint64
	wb  bool // registered through the journal: closed through it too

	// seen is how many failures of the file this descriptor was told of
	// (errseq; guarded by the inode's mu).
	seen uint64
	// fenced: a lock was taken through this descriptor under a session
	// that has since expired (the lock may be another mount's now): it
	// writes nothing more, and its fsync and close report EIO.
	fenced atomic.Bool
	// writes counts the writes through the descriptor; flushed is one more
	// than it was when the last flush began (0: never flushed): Release
	// need not flush (nor report to nobody) what a FLUSH already did.
	writes, flushed atomic.Uint64

	mu     sync.Mutex
	owners map[lockOwner]bool // lock owners that locked through this handle
}

type lockOwner struct {
	kind  uint32
	owner uint64
}

// Lock kinds and types, as the metadata service numbers them.
const (
	KindPosix = 1
	KindFlock = 2

	LockRead   = 1
	LockWrite  = 2
	LockUnlock = 3
)

// Open opens ino, registered with the service in one step that also
// returns the current attributes (close-to-open: what another mount closed
// before is seen); keepCache
// reports that the kernel's page cache of the file is still valid. With
// O_TRUNC the file is truncated.
func (f *FS) Open(ctx context.Context, ino uint64, flags uint32) (h *Handle, keepCache bool, errno syscall.Errno) {
	if h, ok := f.wbOpen(ino, flags); ok {
		f.track(h)
		return h, false, 0
	}
	in := f.inode(ino)
	in.mu.Lock()
	prev := uint64(0)
	if in.attr != nil {
		prev = in.attr.Version
	}
	in.mu.Unlock()
	sess := f.session.Load()
	h = f.newHandle(ino, sess)
	r, errno := f.apply(ctx, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: sess, Ino: ino, Handle: h.id}}})
	if errno != 0 {
		return nil, false, errno
	}
	a := f.remember(r.Attr)
	in.mu.Lock()
	in.opens++
	h.seen = in.errsSeen
	keepCache = prev != 0 && prev == in.cacheVer && flags&syscall.O_TRUNC == 0
	in.mu.Unlock()
	f.track(h)
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY && a.Size > 0 {
		if _, errno := f.SetAttr(ctx, ino, SetAttrIn{Valid: namespace.SetSize, Size: 0}); errno != 0 {
			f.Release(ctx, h)
			return nil, false, errno
		}
	}
	return h, keepCache, 0
}

// newHandle makes a handle id unique across the cluster: the session in the
// top bits, a counter below.
func (f *FS) newHandle(ino, session uint64) *Handle {
	return &Handle{Ino: ino, id: session<<40 | f.handles.Add(1)&(1<<40-1)}
}

// CreateOpen creates a regular file (or, without O_EXCL, finds the
// existing one) and opens it, in one metadata step. With O_TRUNC an
// existing file is truncated.
func (f *FS) CreateOpen(ctx context.Context, parent uint64, name string, mode, uid, gid, flags uint32) (*metapb.Attr, *Handle, syscall.Errno) {
	if a, h, ok, errno := f.wbCreateOpen(ctx, parent, name, mode, uid, gid, flags); ok {
		if errno == 0 {
			f.track(h)
		}
		return a, h, errno
	}
	sess := f.session.Load()
	h := f.newHandle(0, sess)
	excl := flags&syscall.O_EXCL != 0
	unlock := f.lockService(parent)
	r, errno := f.apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: parent, Name: name, Type: uint32(namespace.TypeFile), Mode: mode, Uid: uid, Gid: gid, Excl: excl,
		Session: sess, Handle: h.id}}})
	if errno == 0 && r.Created {
		f.noteEnt(parent, name, r.Attr.Ino, namespace.TypeFile)
	}
	unlock()
	if errno != 0 {
		return nil, nil, errno
	}
	h.Ino = r.Attr.Ino
	if r.Created {
		f.noteChange(parent)
	}
	in := f.inode(h.Ino)
	in.mu.Lock()
	in.setAttr(r.Attr)
	in.opens++
	h.seen = in.errsSeen
	if r.Created {
		in.noCapsAt = time.Now() // a new file has no xattrs
	}
	in.mu.Unlock()
	f.track(h)
	a := r.Attr
	if flags&syscall.O_TRUNC != 0 && a.Size > 0 {
		if a, errno = f.SetAttr(ctx, h.Ino, SetAttrIn{Valid: namespace.SetSize, Size: 0}); errno != 0 {
			f.Release(ctx, h)
			return nil, nil, errno
		}
	}
	return a, h, 0
}

// Release closes a handle: its data is committed, the locks taken through
// it are dropped at once, and the service forgets the handle within
// closeDelay (an unlinked file is freed by its last close): closes go in
// batches, so that they do not hold up the next file's commits.
func (f *FS) Release(ctx context.Context, h *Handle) syscall.Errno {
	var errno syscall.Errno
	if h.flushed.Load() == h.writes.Load()+1 {
		// Flushed (close(2) sent FLUSH) and not written since: the
		// failures since were told to nobody and stay for the next fsync
		// or close; only uploads still running are waited for.
		f.wait(h.Ino)
		errno = h.told(0)
	} else {
		errno = f.FlushFile(ctx, h)
	}
	f.untrack(h)
	h.mu.Lock()
	owners := h.owners
	h.owners = nil
	id, wb := h.id, h.wb
	h.mu.Unlock()
	for o := range owners {
		if _, e := f.apply(ctx, &metapb.Command{Op: &metapb.Command_UnlockOwner{UnlockOwner: &metapb.UnlockOwnerOp{
			Session: f.session.Load(), Ino: h.Ino, Owner: o.owner, Kind: o.kind}}}); e != 0 && e != syscall.ESTALE && errno == 0 {
			errno = e
		}
	}
	in := f.inode(h.Ino)
	in.jmu.Lock() // a change decided while it was open is journaled before the close
	if wb {
		// Its open went through the journal: so does its close, after it.
		f.jr.addOpenClose(id>>40, &metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Session: id >> 40, Handle: id}}}, h.Ino)
	} else {
		f.closer.add(id)
	}
	in.mu.Lock()
	in.opens--
	in.mu.Unlock()
	in.jmu.Unlock()
	return errno
}

// Fsync commits what was written to ino, and every change the mount
// wrote behind before (the file's name and attributes among them), and
// reports a failure no descriptor was told of (EIO).
func (f *FS) Fsync(ctx context.Context, ino uint64) syscall.Errno {
	return f.fsync(ctx, ino, nil)
}

// FsyncFile is Fsync through descriptor h: it reports every failure of the
// file since h was last told of one (errseq: another descriptor's fsync
// does not take it away), and EIO for a descriptor whose locks were lost
// with an expired session.
func (f *FS) FsyncFile(ctx context.Context, h *Handle) syscall.Errno {
	return h.told(f.fsync(ctx, h.Ino, &h.seen))
}

// told is what the descriptor's fsync or close reports: errno, or EIO if
// it is fenced.
func (h *Handle) told(errno syscall.Errno) syscall.Errno {
	if h.fenced.Load() {
		return syscall.EIO
	}
	return errno
}

func (f *FS) fsync(ctx context.Context, ino uint64, cur *uint64) syscall.Errno {
	f.wait(ino)
	f.jr.drain()
	in := f.inode(ino)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.werr = nil
	return in.takeErr(cur)
}

// ErrSeq samples ino's error sequence for a new descriptor of a directory
// (see SyncDir).
func (f *FS) ErrSeq(ino uint64) uint64 {
	in := f.inode(ino)
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.errsSeen
}

// SyncDir returns once every change written behind so far is applied, and
// reports EIO if a change of directory ino (an entry made, removed or
// renamed in it) failed since the descriptor whose cursor is cur was last
// told. A failure elsewhere is not reported here, nor taken from anyone.
func (f *FS) SyncDir(ctx context.Context, ino uint64, cur *uint64) syscall.Errno {
	return f.fsync(ctx, ino, cur)
}

// LockIn describes a lock request: a byte range [Start, End] (End
// math.MaxUint64: to the end of the file) of type LockRead, LockWrite or
// LockUnlock, of kind KindPosix or KindFlock, by owner.
type LockIn struct {
	Kind       uint32
	Type       uint32
	Owner      uint64
	Start, End uint64
	Pid        uint32 // the process that asks (POSIX): F_GETLK reports it to others
}

// Lock takes, converts or drops a lock, cluster-wide. Without wait a
// conflicting request fails with EAGAIN; with wait it queues until granted
// or ctx ends (EINTR, and the request is withdrawn).
func (f *FS) Lock(ctx context.Context, h *Handle, l LockIn, wait bool) syscall.Errno {
	if l.Kind == KindFlock {
		l.Start, l.End = 0, math.MaxUint64
	}
	op := &metapb.LockOp{Session: f.session.Load(), Ino: h.Ino, Owner: l.Owner, Kind: l.Kind, Type: l.Type,
		Start: l.Start, End: l.End, Wait: wait && l.Type != LockUnlock, Pid: l.Pid}
	if op.Wait {
		var b [8]byte
		_, _ = rand.Read(b[:])
		op.ReqId = binary.LittleEndian.Uint64(b[:]) | 1
	}
	if l.Type != LockUnlock {
		h.mu.Lock()
		if h.owners == nil {
			h.owners = map[lockOwner]bool{}
		}
		h.owners[lockOwner{l.Kind, l.Owner}] = true
		h.mu.Unlock()
	}
	r, errno := f.apply(ctx, &metapb.Command{Op: &metapb.Command_Lock{Lock: op}})
	if errno != 0 || !r.Queued {
		return errno
	}
	// Queued: poll until the grant shows up in the log.
	delay := 5 * time.Millisecond
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			cctx, cancel := f.ctx(context.WithoutCancel(ctx))
			_, _ = f.meta.Apply(cctx, &metapb.Command{Op: &metapb.Command_CancelWait{CancelWait: &metapb.CancelWaitOp{ReqId: op.ReqId}}})
			cancel()
			return syscall.EINTR
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
		q, errno := f.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_LockWait{LockWait: &metapb.LockWaitReq{ReqId: op.ReqId}}})
		switch {
		case errno == syscall.ENOENT:
			// Withdrawn: the session ended (the mount was cut off past
			// its TTL). No signal is pending, so not EINTR (which the
			// kernel would turn into ERESTARTSYS for the program).
			return syscall.ENOLCK
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return errno
		case q.Token > 0:
			return 0
		}
	}
}

// Conflict is a lock that would block a request (F_GETLK); Type 0: none.
type Conflict struct {
	Type       uint32
	Start, End uint64
	Owner      uint64
	Pid        uint32 // the process that took it, as its mount recorded it
}

// GetLk reports the first lock that conflicts with l.
func (f *FS) GetLk(ctx context.Context, ino uint64, l LockIn) (Conflict, syscall.Errno) {
	r, errno := f.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Getlk{Getlk: &metapb.GetLkReq{
		Session: f.session.Load(), Ino: ino, Owner: l.Owner, Type: l.Type, Start: l.Start, End: l.End}}})
	if errno != 0 {
		return Conflict{}, errno
	}
	return Conflict{Type: r.ConflictType, Start: r.ConflictStart, End: r.ConflictEnd, Owner: r.ConflictOwner, Pid: r.ConflictPid}, 0
}

// closeDelay is how long a released handle may stay registered with the
// metadata service: closes are sent in batches, one Raft entry for many.
const closeDelay = 50 * time.Millisecond

// closer sends the closes of released handles in batches.
type closer struct {
	fs      *FS
	mu      sync.Mutex
	pending []uint64
	kick    chan struct{}
	done    chan struct{}
}

func (c *closer) add(id uint64) {
	c.mu.Lock()
	c.pending = append(c.pending, id)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run sends what is pending every closeDelay until stop is closed, then
// sends the rest.
func (c *closer) run(stop <-chan struct{}) {
	defer close(c.done)
	for {
		select {
		case <-c.kick:
		case <-stop:
			c.flush()
			return
		}
		t := time.NewTimer(closeDelay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
		}
		c.flush()
	}
}

// flush sends every pending close at once (the group commit puts them in
// one Raft entry).
func (c *closer) flush() {
	c.mu.Lock()
	ids := c.pending
	c.pending = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// EBADF: it went with its expired session already.
			if _, e := c.fs.apply(context.Background(), &metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Session: id >> 40, Handle: id}}}); e != 0 && e != syscall.EBADF {
				c.fs.log.Warn("closing a handle", "handle", id, "errno", e)
			}
		}()
	}
	wg.Wait()
}

func (f *FS) track(h *Handle) {
	f.hmu.Lock()
	f.opened[h] = struct{}{}
	f.hmu.Unlock()
}

func (f *FS) untrack(h *Handle) {
	f.hmu.Lock()
	delete(f.opened, h)
	f.hmu.Unlock()
}

// openHandles is the descriptors open now.
func (f *FS) openHandles() []*Handle {
	f.hmu.Lock()
	defer f.hmu.Unlock()
	hs := make([]*Handle, 0, len(f.opened))
	for h := range f.opened {
		hs = append(hs, h)
	}
	return hs
}

// fence marks every open descriptor that took a lock as fenced: the
// session is about to be replaced, and its locks may be another mount's by
// now. Called before the new session is stored, so that a write either
// sees the fence or is buffered under the old session (whose commit the
// service refuses).
func (f *FS) fence() {
	n := 0
	for _, h := range f.openHandles() {
		h.mu.Lock()
		if len(h.owners) > 0 {
			h.fenced.Store(true)
			n++
		}
		h.mu.Unlock()
	}
	if n > 0 {
		f.log.Error("the mount's session expired while files were locked here: those descriptors report EIO from now on", "descriptors", n)
	}
}

// reopen registers every open handle again under session sess (the old
// one expired: the service forgot them). A file freed meanwhile (unlinked
// by another mount while no registration kept it) is said in the log.
func (f *FS) reopen(ctx context.Context, sess uint64) {
	hs := f.openHandles()
	for _, h := range hs {
		id := f.newHandle(h.Ino, sess).id
		_, errno := f.apply(ctx, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: sess, Ino: h.Ino, Handle: id}}})
		if errno != 0 {
			f.log.Error("a file open here was freed while the mount's session was gone: its reads fail", "ino", h.Ino, "errno", errno.Error())
			continue
		}
		h.mu.Lock()
		h.id, h.wb = id, false
		h.mu.Unlock()
		f.hmu.Lock()
		_, still := f.opened[h]
		f.hmu.Unlock()
		if !still {
			f.closer.add(id) // released meanwhile
		}
	}
	if len(hs) > 0 {
		f.log.Warn("open files registered again under the new session", "files", len(hs), "session", sess)
	}
}
