package fs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"math"
	"slices"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

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
	if h, ok := f.view.open(ino, flags); ok {
		f.handles.track(h)
		return h, false, 0
	}
	in := f.inodes.get(ino)
	in.mu.Lock()
	prev := uint64(0)
	if in.attr != nil {
		prev = in.attr.Version
	}
	openHere := in.opens > 0
	in.mu.Unlock()
	sess := f.pipe.session()
	h = f.handles.newHandle(ino, sess)
	var a *metapb.Attr
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0 {
		a, _ = f.reads.openLazy(h) // under a read lease: registered only if the lease goes (readchange.go)
	}
	if a == nil {
		r, errno := f.pipe.apply(ctx, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: sess, Ino: ino, Handle: h.id}}})
		if errno != 0 {
			return nil, false, errno
		}
		a = r.Attr
		if a.GetNlink() == 0 && !openHere {
			// A file no name leads to any more, kept by another's open:
			// opened here by a name the kernel kept a moment after a read
			// lease ended while its directory stayed busy (kernelcache.go),
			// which another mount has since removed or replaced. ESTALE
			// makes the kernel look the name up again and open what it
			// names now.
			f.handles.closer.add(h.id)
			return nil, false, syscall.ESTALE
		}
	}
	a = f.inodes.remember(a)
	in = f.inodes.getLocked(ino) // the one in the table now
	in.opens++
	h.seen = in.errsSeen
	keepCache = prev != 0 && prev == in.cacheVer && flags&syscall.O_TRUNC == 0
	in.mu.Unlock()
	f.handles.track(h)
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY && a.Size > 0 {
		if _, errno := f.SetAttr(ctx, ino, SetAttrIn{Valid: namespace.SetSize, Size: 0}); errno != 0 {
			f.Release(ctx, h)
			return nil, false, errno
		}
	}
	return h, keepCache, 0
}

// CreateOpen creates a regular file (or, without O_EXCL, finds the
// existing one) and opens it, in one metadata step. With O_TRUNC an
// existing file is truncated.
func (f *FS) CreateOpen(ctx context.Context, parent uint64, name string, mode, uid, gid, flags uint32) (*metapb.Attr, *Handle, syscall.Errno) {
	f.leases.leaseNow(parent)
	if a, h, ok, errno := f.view.createOpen(ctx, parent, name, mode, uid, gid, flags); ok {
		if errno == 0 {
			f.handles.track(h)
		}
		return a, h, errno
	}
	sess := f.pipe.session()
	h := f.handles.newHandle(0, sess)
	excl := flags&syscall.O_EXCL != 0
	unlock := f.leases.lockService(parent)
	r, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: parent, Name: name, Type: uint32(namespace.TypeFile), Mode: mode, Uid: uid, Gid: gid, Excl: excl,
		Session: sess, Handle: h.id}}})
	if errno == 0 && r.Created {
		f.view.noteEnt(parent, name, r.Attr.Ino, namespace.TypeFile)
	}
	unlock()
	if errno != 0 {
		return nil, nil, errno
	}
	h.Ino = r.Attr.Ino
	if r.Created {
		f.leases.noteChange(parent)
	}
	in := f.inodes.getLocked(h.Ino)
	in.setAttr(r.Attr)
	in.opens++
	h.seen = in.errsSeen
	if r.Created {
		in.noCapsAt = time.Now() // a new file has no xattrs
	}
	in.mu.Unlock()
	f.handles.track(h)
	a := r.Attr
	if flags&syscall.O_TRUNC != 0 && a.Size > 0 {
		if a, errno = f.SetAttr(ctx, h.Ino, SetAttrIn{Valid: namespace.SetSize, Size: 0}); errno != 0 {
			f.Release(ctx, h)
			return nil, nil, errno
		}
	}
	return a, h, 0
}

// Release closes a handle: its data is committed (and a failure it was not
// told of reported, unless close(2) flushed it already: FlushFile), the locks taken through
// it are dropped at once, and the service forgets the handle within
// closeDelay (an unlinked file is freed by its last close): closes go in
// batches, so that they do not hold up the next file's commits.
func (f *FS) Release(ctx context.Context, h *Handle) syscall.Errno {
	var errno syscall.Errno
	if h.flushed.Load() == h.writes.Load()+1 {
		// Flushed (close(2) sent FLUSH) and not written since: the
		// failures since were told to nobody and stay for the next fsync
		// or close; only uploads still running are waited for.
		f.data.settle(h.Ino)
		errno = h.told(0)
	} else {
		errno = f.FlushFile(ctx, h)
	}
	f.handles.untrack(h)
	h.mu.Lock()
	owners := h.owners
	h.owners = nil
	id, wb := h.id, h.wb
	h.mu.Unlock()
	for o := range owners {
		if _, e := f.pipe.apply(ctx, &metapb.Command{Op: &metapb.Command_UnlockOwner{UnlockOwner: &metapb.UnlockOwnerOp{
			Session: f.pipe.session(), Ino: h.Ino, Owner: o.owner, Kind: o.kind}}}); e != 0 && e != syscall.ESTALE && errno == 0 {
			errno = e
		}
	}
	in := f.inodes.get(h.Ino)
	in.jmu.Lock() // a change decided while it was open is journaled before the close
	switch {
	case wb && h.lazy:
		// Never registered: nothing to tell.
		h.lazy = false
		in.lazy = slices.DeleteFunc(in.lazy, func(o *Handle) bool { return o == h })
	case wb:
		// Its open went through the journal: so does its close, after it.
		f.pipe.behindOpenClose(id>>40, &metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Session: id >> 40, Handle: id}}}, h.Ino)
	case f.reads.closeLazy(h):
		// Never registered (or its registration on the way closes it).
	default:
		f.handles.closer.add(id)
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

func (f *FS) fsync(ctx context.Context, ino uint64, cur *uint64) syscall.Errno {
	f.data.wait(ino)
	f.pipe.drain()
	in := f.inodes.get(ino)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.werr = nil
	return in.takeErr(cur)
}

// ErrSeq samples ino's error sequence for a new descriptor of a directory
// (see SyncDir).
func (f *FS) ErrSeq(ino uint64) uint64 {
	in := f.inodes.get(ino)
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
	op := &metapb.LockOp{Session: f.pipe.session(), Ino: h.Ino, Owner: l.Owner, Kind: l.Kind, Type: l.Type,
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
	r, errno := f.pipe.apply(ctx, &metapb.Command{Op: &metapb.Command_Lock{Lock: op}})
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
			cctx, cancel := f.base.ctx(context.WithoutCancel(ctx))
			_, _ = f.meta.Apply(cctx, &metapb.Command{Op: &metapb.Command_CancelWait{CancelWait: &metapb.CancelWaitOp{ReqId: op.ReqId}}})
			cancel()
			return syscall.EINTR
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
		q, errno := f.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_LockWait{LockWait: &metapb.LockWaitReq{ReqId: op.ReqId}}})
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
	r, errno := f.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Getlk{Getlk: &metapb.GetLkReq{
		Session: f.pipe.session(), Ino: ino, Owner: l.Owner, Type: l.Type, Start: l.Start, End: l.End}}})
	if errno != 0 {
		return Conflict{}, errno
	}
	return Conflict{Type: r.ConflictType, Start: r.ConflictStart, End: r.ConflictEnd, Owner: r.ConflictOwner, Pid: r.ConflictPid}, 0
}

// WriteFile is Write through descriptor h: a descriptor whose locks were
// lost with an expired session writes nothing more (EIO), so a holder that
// froze past its lease cannot overwrite what the next holder wrote.
func (f *FS) WriteFile(ctx context.Context, h *Handle, data []byte, off int64) (int, syscall.Errno) {
	sess := f.pipe.session()
	if h.fenced.Load() {
		return 0, syscall.EIO
	}
	h.writes.Add(1)
	return f.data.write(ctx, h.Ino, sess, data, off)
}

// Write buffers data at offset off of file ino. Full blocks are uploaded in
// the background; the rest waits for Flush, Fsync or memory pressure. The
// data is committed under the mount's current session, or not at all.
func (f *FS) Write(ctx context.Context, ino uint64, data []byte, off int64) (int, syscall.Errno) {
	return f.data.write(ctx, ino, f.pipe.session(), data, off)
}

// Flush uploads and commits everything written to ino (for a file the
// mount writes behind under a lease, the commit only takes its place in the
// journal, not waited for) and reports a failure no descriptor was told of
// yet (EIO): for callers without one.
func (f *FS) Flush(ctx context.Context, ino uint64) syscall.Errno {
	return f.data.flush(ctx, ino, nil)
}

// FlushFile is Flush for descriptor h (close): it reports a failure of the
// file since h was last told of one, and EIO for a descriptor whose locks
// were lost with an expired session.
func (f *FS) FlushFile(ctx context.Context, h *Handle) syscall.Errno {
	h.flushed.Store(h.writes.Load() + 1)
	return h.told(f.data.flush(ctx, h.Ino, &h.seen))
}

// FlushAll flushes every file (unmount) and says which lost data or
// changes no descriptor was told of.
func (f *FS) FlushAll(ctx context.Context) error { return f.data.flushAll(ctx) }

// Read reads file ino at off into p: committed data, with what this mount
// wrote and has not committed yet laid over it (read-after-write). It
// returns fewer bytes only at the end of the file.
func (f *FS) Read(ctx context.Context, ino uint64, p []byte, off int64) (int, syscall.Errno) {
	return f.data.read(ctx, ino, p, off)
}

// Forget drops what the mount holds of ino once nothing uses it (the
// kernel forgot it, no handle is open and no data waits for upload).
func (f *FS) Forget(ino uint64) { f.inodes.forget(ino) }
