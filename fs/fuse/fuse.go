// Package fuse adapts the mount's core (package fs) to the kernel through
// go-fuse's node API: nodes that embed go-fuse's Inode translate each
// request, call the core by inode number, and map its answer. Nothing here
// decides anything about the filesystem; the core imports no FUSE library.
package fuse

import (
	"context"
	"log"
	"math"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/fs"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions configures the kernel side of a mount.
type MountOptions struct {
	AllowOther  bool          // let other users in (-o allow_other)
	AttrTimeout time.Duration // how long the kernel keeps attributes and names (0: it asks every time)
	Debug       bool          // log every FUSE request
	FsName      string        // shown in /proc/mounts
	Observe     Observer      // told of every request answered, if set
	Moved       *atomic.Int64 // if set, counts the bytes read and written through the mount
}

// Mount mounts f on mountpoint and serves it in the background; the
// returned server's Wait returns once it is unmounted.
func Mount(f *fs.FS, mountpoint string, o MountOptions) (*fuse.Server, error) {
	opts := mountOptions(o)
	busy := newBusyDirs()
	raw := observed{RawFileSystem: fusefs.NewNodeFS(&node{core: f, ttl: *opts.EntryTimeout}, opts), obs: o.Observe, busy: busy, moved: o.Moved}
	srv, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, err
	}
	f.SetInvalidator(invalidator{srv: srv, busy: busy})
	return srv, nil
}

// mountOptions is go-fuse's configuration of a mount.
func mountOptions(o MountOptions) *fusefs.Options {
	o.AttrTimeout = max(o.AttrTimeout, 0)
	neg := time.Duration(0)
	if o.FsName == "" {
		o.FsName = "ecfs"
	}
	return &fusefs.Options{
		EntryTimeout:    &o.AttrTimeout,
		AttrTimeout:     &o.AttrTimeout,
		NegativeTimeout: &neg,
		RootStableAttr:  &fusefs.StableAttr{Ino: fs.RootIno, Mode: syscall.S_IFDIR},
		// The kernel's node ids are the inode numbers (never reused), so
		// that the core's invalidations can name them (invalidator).
		ExternalNodeID: true,
		// A mode of 0000 is a mode (chmod 0, open(O_CREAT, 0)): go-fuse
		// would show it as 0644/0755 otherwise. The kernel checks
		// permissions (default_permissions), not go-fuse.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			AllowOther:    o.AllowOther,
			Options:       []string{"default_permissions"},
			FsName:        o.FsName,
			Name:          "ecfs",
			MaxWrite:      1 << 20,
			MaxReadAhead:  1 << 20,
			MaxBackground: 64,
			EnableLocks:   true,
			DirectMount:   true,
			Debug:         o.Debug,
			Logger:        log.New(os.Stderr, "fuse: ", log.Lmicroseconds),
		},
	}
}

// uninterruptible: every call but a blocking lock wait ignores the
// kernel's interrupts (the context go-fuse cancels). A Go program's own
// preemption signals interrupt FUSE requests all the time; a close or an
// unlink that answered EINTR after (or without) taking effect would be a
// wrong answer that the caller cannot retry. Mutations are bounded by
// --meta-timeout instead.

// node is one inode as go-fuse sees it.
type node struct {
	fusefs.Inode
	core *fs.FS
	// ttl: how long the kernel keeps names and attributes (AttrTimeout):
	// those of a lookup, a getattr or a setattr (longer for an answer
	// from a read lease's copy, fs.Kept), and a name the mount said is
	// missing from a directory it write-leases.
	// Elsewhere it keeps no missing name (NegativeTimeout 0): another mount
	// may make the name at any time.
	ttl time.Duration
}

var (
	_ fusefs.NodeLookuper       = (*node)(nil)
	_ fusefs.NodeGetattrer      = (*node)(nil)
	_ fusefs.NodeSetattrer      = (*node)(nil)
	_ fusefs.NodeCreater        = (*node)(nil)
	_ fusefs.NodeMknoder        = (*node)(nil)
	_ fusefs.NodeMkdirer        = (*node)(nil)
	_ fusefs.NodeSymlinker      = (*node)(nil)
	_ fusefs.NodeLinker         = (*node)(nil)
	_ fusefs.NodeUnlinker       = (*node)(nil)
	_ fusefs.NodeRmdirer        = (*node)(nil)
	_ fusefs.NodeRenamer        = (*node)(nil)
	_ fusefs.NodeReadlinker     = (*node)(nil)
	_ fusefs.NodeOpendirHandler = (*node)(nil)
	_ fusefs.NodeGetxattrer     = (*node)(nil)
	_ fusefs.NodeSetxattrer     = (*node)(nil)
	_ fusefs.NodeRemovexattrer  = (*node)(nil)
	_ fusefs.NodeListxattrer    = (*node)(nil)
	_ fusefs.NodeStatfser       = (*node)(nil)
	_ fusefs.NodeOpener         = (*node)(nil)
	_ fusefs.NodeReader         = (*node)(nil)
	_ fusefs.NodeWriter         = (*node)(nil)
	_ fusefs.NodeFlusher        = (*node)(nil)
	_ fusefs.NodeFsyncer        = (*node)(nil)
	_ fusefs.NodeReleaser       = (*node)(nil)
	_ fusefs.NodeGetlker        = (*node)(nil)
	_ fusefs.NodeSetlker        = (*node)(nil)
	_ fusefs.NodeSetlkwer       = (*node)(nil)
	_ fusefs.NodeAllocater      = (*node)(nil)
	_ fusefs.NodeOnForgetter    = (*node)(nil)
)

func (n *node) ino() uint64 { return n.StableAttr().Ino }

// fill copies attributes into a FUSE attr.
func fill(a *metapb.Attr, out *fuse.Attr) {
	out.Ino = a.Ino
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Blksize = 1 << 20
	out.Mode = namespace.FileType(a.Type).IFMT() | a.Mode
	out.Nlink = a.Nlink
	out.Owner = fuse.Owner{Uid: a.Uid, Gid: a.Gid}
	out.Rdev = a.Rdev
	out.Atime, out.Atimensec = uint64(a.Atime/1e9), uint32(a.Atime%1e9)
	out.Mtime, out.Mtimensec = uint64(a.Mtime/1e9), uint32(a.Mtime%1e9)
	out.Ctime, out.Ctimensec = uint64(a.Ctime/1e9), uint32(a.Ctime%1e9)
}

// child makes the go-fuse inode of a looked-up or created entry.
func (n *node) child(ctx context.Context, a *metapb.Attr, out *fuse.EntryOut) *fusefs.Inode {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	fill(a, &out.Attr)
	mode := namespace.FileType(a.Type).IFMT()
	return n.NewInode(ctx, &node{core: n.core, ttl: n.ttl}, fusefs.StableAttr{Mode: mode, Ino: a.Ino})
}

func caller(ctx context.Context) (uid, gid uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	a, kept, errno := n.core.LookupKept(ctx, n.ino(), name)
	if errno == syscall.ENOENT && kept.Own {
		out.SetEntryTimeout(n.ttl) // observed.Lookup answers a negative entry kept this long
	}
	if errno != 0 {
		return nil, errno
	}
	if d := n.keep(kept.Until); d > 0 {
		out.SetEntryTimeout(d)
		out.SetAttrTimeout(d)
	}
	return n.child(ctx, a, out), 0
}

// keep is how long the kernel may keep an answer the core says it may
// keep until (fs.Kept), if that is longer than the mount's attribute
// timeout (0 otherwise: go-fuse fills that in).
func (n *node) keep(until time.Time) time.Duration {
	if d := time.Until(until); d > n.ttl {
		return d
	}
	return 0
}

func (n *node) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	a, kept, errno := n.core.GetAttrKept(ctx, n.ino())
	if errno != 0 {
		return stale(errno)
	}
	fill(a, &out.Attr)
	if d := n.keep(kept); d > 0 {
		out.SetTimeout(d)
	}
	return 0
}

// stale turns "no such inode" into ESTALE for an operation on an inode the
// kernel found by name earlier: another mount has since replaced or removed
// that name's file (a rename over it). The kernel then looks the name up
// again once (LOOKUP_REVAL) and retries, as it does for NFS, so that
// open(2) and stat(2) of a name that always exists never fail with ENOENT.
func stale(errno syscall.Errno) syscall.Errno {
	if errno == syscall.ENOENT {
		return syscall.ESTALE
	}
	return errno
}

func (n *node) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	var s fs.SetAttrIn
	if m, ok := in.GetMode(); ok {
		s.Valid |= namespace.SetMode
		s.Mode = m & namespace.PermMask
	}
	if u, ok := in.GetUID(); ok {
		s.Valid |= namespace.SetUid
		s.Uid = u
	}
	if g, ok := in.GetGID(); ok {
		s.Valid |= namespace.SetGid
		s.Gid = g
	}
	if sz, ok := in.GetSize(); ok {
		s.Valid |= namespace.SetSize
		s.Size = sz
	}
	switch {
	case in.Valid&fuse.FATTR_ATIME_NOW != 0:
		s.Valid |= namespace.SetAtimeNow
	case in.Valid&fuse.FATTR_ATIME != 0:
		s.Valid |= namespace.SetAtime
		s.Atime = int64(in.Atime)*1e9 + int64(in.Atimensec)
	}
	switch {
	case in.Valid&fuse.FATTR_MTIME_NOW != 0:
		s.Valid |= namespace.SetMtimeNow
	case in.Valid&fuse.FATTR_MTIME != 0:
		s.Valid |= namespace.SetMtime
		s.Mtime = int64(in.Mtime)*1e9 + int64(in.Mtimensec)
	}
	a, errno := n.core.SetAttr(ctx, n.ino(), s)
	if errno != 0 {
		return errno
	}
	fill(a, &out.Attr)
	out.SetTimeout(n.ttl) // go-fuse leaves it 0: the kernel would ask again at the next stat
	return 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	uid, gid := caller(ctx)
	a, h, errno := n.core.CreateOpen(ctx, n.ino(), name, mode&namespace.PermMask, uid, gid, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return n.child(ctx, a, out), h, 0, 0
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	var typ namespace.FileType
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		typ = namespace.TypeFile
	case syscall.S_IFIFO:
		typ = namespace.TypeFifo
	case syscall.S_IFSOCK:
		typ = namespace.TypeSocket
	case syscall.S_IFCHR:
		typ = namespace.TypeChar
	case syscall.S_IFBLK:
		typ = namespace.TypeBlock
	default:
		return nil, syscall.EINVAL
	}
	uid, gid := caller(ctx)
	a, errno := n.core.Create(ctx, n.ino(), name, typ, mode&namespace.PermMask, dev, uid, gid, true)
	if errno != 0 {
		return nil, errno
	}
	return n.child(ctx, a, out), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	uid, gid := caller(ctx)
	a, errno := n.core.Mkdir(ctx, n.ino(), name, mode&namespace.PermMask, uid, gid)
	if errno != 0 {
		return nil, errno
	}
	return n.child(ctx, a, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	uid, gid := caller(ctx)
	a, errno := n.core.Symlink(ctx, n.ino(), name, target, uid, gid)
	if errno != 0 {
		return nil, errno
	}
	return n.child(ctx, a, out), 0
}

func (n *node) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	a, errno := n.core.Link(ctx, target.EmbeddedInode().StableAttr().Ino, n.ino(), name)
	if errno != 0 {
		return nil, errno
	}
	return n.child(ctx, a, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	return n.core.Unlink(ctx, n.ino(), name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	return n.core.Rmdir(ctx, n.ino(), name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	return n.core.Rename(ctx, n.ino(), name, newParent.EmbeddedInode().StableAttr().Ino, newName, flags)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	t, errno := n.core.Readlink(ctx, n.ino())
	return []byte(t), errno
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	v, errno := n.core.GetXattr(ctx, n.ino(), attr)
	if errno != 0 {
		return 0, errno
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	return n.core.SetXattr(ctx, n.ino(), attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	return n.core.RemoveXattr(ctx, n.ino(), attr)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	names, errno := n.core.ListXattr(ctx, n.ino())
	if errno != 0 {
		return 0, errno
	}
	var b []byte
	for _, nm := range names {
		b = append(append(b, nm...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	s, errno := n.core.Statfs(ctx)
	if errno != 0 {
		return errno
	}
	const bs = 4096
	out.Bsize, out.Frsize = bs, bs
	out.Blocks, out.Bfree, out.Bavail = s.Total/bs, s.Free/bs, s.Free/bs
	out.Files, out.Ffree = s.Inodes+(1<<32), 1<<32
	out.NameLen = 255
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	h, keep, errno := n.core.Open(ctx, n.ino(), flags)
	if errno != 0 {
		return nil, 0, stale(errno)
	}
	var ff uint32
	if keep {
		ff |= fuse.FOPEN_KEEP_CACHE
	}
	return h, ff, 0
}

func (n *node) Read(ctx context.Context, fh fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	k, errno := n.core.Read(ctx, n.ino(), dest, off)
	if errno != 0 {
		// An open file whose inode the service no longer has (replaced
		// elsewhere before this mount's open reached it) is a stale
		// handle, never "no such file".
		return nil, stale(errno)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Write(ctx context.Context, fh fusefs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	h, ok := fh.(*fs.Handle)
	if !ok {
		return 0, syscall.EBADF
	}
	k, errno := n.core.WriteFile(ctx, h, data, off)
	return uint32(k), errno
}

func (n *node) Flush(ctx context.Context, fh fusefs.FileHandle) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	if h, ok := fh.(*fs.Handle); ok {
		return n.core.FlushFile(ctx, h)
	}
	return n.core.Flush(ctx, n.ino())
}

func (n *node) Fsync(ctx context.Context, fh fusefs.FileHandle, flags uint32) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	if h, ok := fh.(*fs.Handle); ok {
		return n.core.FsyncFile(ctx, h)
	}
	return n.core.Fsync(ctx, n.ino())
}

func (n *node) Release(ctx context.Context, fh fusefs.FileHandle) syscall.Errno {
	h, ok := fh.(*fs.Handle)
	if !ok {
		return 0
	}
	// The kernel does not wait for a release; give it a context of its own.
	return n.core.Release(context.Background(), h)
}

func (n *node) OnForget() { n.core.Forget(n.ino()) }

// lockIn converts a FUSE lock request.
func lockIn(owner uint64, lk *fuse.FileLock, flags uint32) fs.LockIn {
	l := fs.LockIn{Kind: fs.KindPosix, Owner: owner, Start: lk.Start, End: lk.End, Pid: lk.Pid}
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		l.Kind = fs.KindFlock
	}
	if l.End >= math.MaxInt64 {
		l.End = math.MaxUint64
	}
	switch lk.Typ {
	case syscall.F_RDLCK:
		l.Type = fs.LockRead
	case syscall.F_WRLCK:
		l.Type = fs.LockWrite
	default:
		l.Type = fs.LockUnlock
	}
	return l
}

func (n *node) Getlk(ctx context.Context, fh fusefs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	c, errno := n.core.GetLk(ctx, n.ino(), lockIn(owner, lk, flags))
	if errno != 0 {
		return errno
	}
	switch c.Type {
	case 0:
		*out = fuse.FileLock{Typ: syscall.F_UNLCK}
	default:
		out.Start, out.End = c.Start, min(c.End, math.MaxInt64)
		out.Typ = syscall.F_RDLCK
		if c.Type == fs.LockWrite {
			out.Typ = syscall.F_WRLCK
		}
		out.Pid = c.Pid // the kernel shows 0 for a process it does not know (another host's)
	}
	return 0
}

func (n *node) Setlk(ctx context.Context, fh fusefs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	h, ok := fh.(*fs.Handle)
	if !ok {
		return syscall.EBADF
	}
	return n.core.Lock(ctx, h, lockIn(owner, lk, flags), false)
}

func (n *node) Setlkw(ctx context.Context, fh fusefs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	h, ok := fh.(*fs.Handle)
	if !ok {
		return syscall.EBADF
	}
	return n.core.Lock(ctx, h, lockIn(owner, lk, flags), true)
}

// Allocate supports fallocate mode 0 (extend the size; the new range reads
// as zeros, as a hole does) and FALLOC_FL_KEEP_SIZE (nothing to reserve:
// space is taken when written). Other modes: EOPNOTSUPP.
func (n *node) Allocate(ctx context.Context, fh fusefs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	const keepSize = 1
	switch mode {
	case keepSize:
		return 0
	case 0:
	default:
		return syscall.EOPNOTSUPP
	}
	a, errno := n.core.GetAttr(ctx, n.ino())
	if errno != 0 {
		return errno
	}
	if end := off + size; end > a.Size {
		_, errno = n.core.SetAttr(ctx, n.ino(), fs.SetAttrIn{Valid: namespace.SetSize, Size: end})
	}
	return errno
}
