package fs

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"google.golang.org/protobuf/proto"
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
// the journal and are sent in batches; none waits for a Raft commit. A file
// larger than the inline threshold still reaches its stores' write quorum
// before close returns; only its slice commit is written behind.
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
	// mu: read-held by an operation writing behind in the directory;
	// write-held to give the lease up (locking.go). held changes only
	// under mu write-held; it may be read without mu (localAttr).
	mu   sync.RWMutex
	held atomic.Bool
	used atomic.Int64 // when it was last written behind in (unix ns)

	emu    sync.Mutex // guards ents and inodes
	ents   map[string]dirEnt
	inodes []*inode // inodes made eligible under this lease
}

type dirEnt struct {
	ino uint64
	typ namespace.FileType
}

// wbLease returns dir's lease, read-locked, if the mount holds it; the
// caller read-unlocks it.
func (f *FS) wbLease(dir uint64) *dirLease {
	f.lmu.Lock()
	l := f.leases[dir]
	f.lmu.Unlock()
	if l == nil {
		return nil
	}
	l.mu.RLock()
	if !l.held.Load() {
		l.mu.RUnlock()
		return nil
	}
	l.used.Store(time.Now().UnixNano())
	return l
}

// eligible returns the lease under which in's attributes are the mount's,
// read-locked, or nil.
func (f *FS) eligible(in *inode) *dirLease {
	in.mu.Lock()
	l := in.wb
	in.mu.Unlock()
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
// made (empty), whose attributes a are the mount's from now on. The lease
// is complete before anyone can see it (dropLeases may end it at once).
func (f *FS) addLease(dir, sess uint64, a *metapb.Attr) *dirLease {
	l := &dirLease{dir: dir, sess: sess, ents: map[string]dirEnt{}}
	l.held.Store(true)
	l.used.Store(time.Now().UnixNano())
	f.newLocal(l, a, 0)
	f.lmu.Lock()
	f.leases[dir] = l
	f.lmu.Unlock()
	select {
	case f.leaseKick <- struct{}{}:
	default:
	}
	return l
}

// allocIno hands out an inode number reserved for this mount.
func (f *FS) allocIno(ctx context.Context) (uint64, syscall.Errno) {
	f.inoMu.Lock()
	defer f.inoMu.Unlock()
	if f.inoNext == f.inoEnd {
		const batch = 1024
		cctx, cancel := f.ctx(ctx)
		r, err := f.meta.Apply(cctx, &metapb.Command{Op: &metapb.Command_InoAlloc{InoAlloc: &metapb.InoAllocOp{Count: batch}}})
		cancel()
		if err != nil {
			return 0, f.ioErr("metadata", err)
		}
		if r.Errno != 0 {
			return 0, syscall.Errno(r.Errno)
		}
		f.inoNext, f.inoEnd = r.FirstId, r.FirstId+batch
	}
	f.inoNext++
	return f.inoNext - 1, 0
}

// maxNameLen is the longest name the namespace takes (its MaxNameLen;
// statfs reports it too). Lookup, unlink and rmdir answer ENAMETOOLONG for
// a longer one; the operations that make a name leave it to the service
// (plainName).
const maxNameLen = 255

// plainName reports a name the service surely takes (anything else goes
// to the service, which says what is wrong with it).
func plainName(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > maxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return false
		}
	}
	return true
}

// dirAttr returns the mount's view of directory dir's attributes.
func (f *FS) dirAttr(ctx context.Context, dir uint64) (*metapb.Attr, syscall.Errno) {
	in := f.inode(dir)
	in.mu.Lock()
	a := in.attr
	in.mu.Unlock()
	if a != nil {
		return a, 0
	}
	return f.GetAttr(ctx, dir)
}

// touchDir records locally that an entry of dir changed (mtime, ctime,
// nlink by dnlink), when dir's attributes are the mount's.
func (f *FS) touchDir(dir uint64, now int64, dnlink int) {
	in := f.lookupInode(dir)
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb == nil || in.attr == nil {
		return // the service's: GetAttr asks it (dirAttr needs only mode and group)
	}
	in.changeLocal(func(a *metapb.Attr) {
		a.Mtime, a.Ctime = now, now
		a.Nlink = uint32(int(a.Nlink) + dnlink)
	})
}

// changeLocal changes the mount's own attributes of an eligible inode: on a
// copy (dirAttr hands the current one out), with a new version. in.mu is
// held.
func (in *inode) changeLocal(change func(a *metapb.Attr)) {
	a := proto.Clone(in.attr).(*metapb.Attr)
	change(a)
	a.Version++
	in.attr = a
}

// newLocal records a new eligible inode under l (l.emu is held, or l is
// not published yet).
func (f *FS) newLocal(l *dirLease, a *metapb.Attr, opens int) *inode {
	in := f.inode(a.Ino)
	in.mu.Lock()
	in.attr, in.cacheVer, in.wb, in.made = a, a.Version, l, true
	in.invalidate()
	in.opens += opens
	in.noCapsAt = time.Now() // a new file has no xattrs
	in.mu.Unlock()
	l.inodes = append(l.inodes, in)
	return in
}

// newAttr is a new inode's attributes as the service will make them.
func newAttr(ino uint64, typ namespace.FileType, mode, uid, gid uint32, parent *metapb.Attr, now int64) *metapb.Attr {
	a := &metapb.Attr{Ino: ino, Type: uint32(typ), Mode: mode & namespace.PermMask, Uid: uid, Gid: gid, Nlink: 1,
		Atime: now, Mtime: now, Ctime: now, Version: 1}
	if parent.Mode&syscall.S_ISGID != 0 {
		a.Gid = parent.Gid
		if typ == namespace.TypeDir {
			a.Mode |= syscall.S_ISGID
		}
	}
	return a
}

// wbMake makes name, of type typ, in leased directory parent: it numbers
// the new inode, gives it the attributes the service will, enters it and
// journals the command that finish returns (finish completes the
// attributes and records the inode). handled is false when parent is not
// leased, the name is not plain, or it exists and !excl: the caller goes
// to the service. An existing name with excl is EEXIST.
func (f *FS) wbMake(ctx context.Context, parent uint64, name string, typ namespace.FileType, mode, uid, gid uint32, excl bool,
	finish func(l *dirLease, a *metapb.Attr) *metapb.Command) (a *metapb.Attr, handled bool, errno syscall.Errno) {
	if !plainName(name) {
		return nil, false, 0
	}
	l := f.wbLease(parent)
	if l == nil {
		return nil, false, 0
	}
	defer l.mu.RUnlock()
	pa, errno := f.dirAttr(ctx, parent)
	if errno != 0 {
		return nil, true, errno
	}
	// Numbered before the entries are locked: now and then this asks the
	// service for more numbers, and lookups in the directory need not wait
	// for that. A number not used (the name exists) is not missed.
	ino, errno := f.allocIno(ctx)
	if errno != 0 {
		return nil, true, errno
	}
	l.emu.Lock()
	defer l.emu.Unlock()
	if _, ok := l.ents[name]; ok {
		if !excl {
			return nil, false, 0
		}
		return nil, true, syscall.EEXIST
	}
	now := time.Now().UnixNano()
	a = newAttr(ino, typ, mode, uid, gid, pa, now)
	cmd := finish(l, a)
	l.ents[name] = dirEnt{ino, typ}
	dnlink := 0
	if typ == namespace.TypeDir {
		dnlink = 1
	}
	f.touchDir(parent, now, dnlink)
	if f.debugOn {
		f.log.Debug("written behind", "op", "make", "dir", parent, "name", name, "ino", ino)
	}
	f.jr.add(l.sess, cmd, ino, parent)
	return proto.Clone(a).(*metapb.Attr), true, 0
}

// wbCreateOpen creates and opens a file in a leased directory. handled is
// false when the directory is not leased or the name exists without
// O_EXCL: the caller goes to the service.
func (f *FS) wbCreateOpen(ctx context.Context, parent uint64, name string, mode, uid, gid, flags uint32) (a *metapb.Attr, h *Handle, handled bool, errno syscall.Errno) {
	a, handled, errno = f.wbMake(ctx, parent, name, namespace.TypeFile, mode, uid, gid, flags&syscall.O_EXCL != 0,
		func(l *dirLease, a *metapb.Attr) *metapb.Command {
			sess := l.sess
			h = f.newHandle(a.Ino, sess)
			h.wb = true
			f.newLocal(l, a, 1)
			return &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
				Parent: parent, Name: name, Type: uint32(namespace.TypeFile), Mode: mode, Uid: uid, Gid: gid, Excl: true,
				Session: sess, Handle: h.id, Ino: a.Ino}}}
		})
	return a, h, handled, errno
}

// wbMkdir makes a directory in a leased directory; the new one is leased
// too.
func (f *FS) wbMkdir(ctx context.Context, parent uint64, name string, mode, uid, gid uint32) (*metapb.Attr, bool, syscall.Errno) {
	return f.wbMake(ctx, parent, name, namespace.TypeDir, mode, uid, gid, true,
		func(l *dirLease, a *metapb.Attr) *metapb.Command {
			a.Nlink = 2
			// A leased directory's own attributes are the mount's while it
			// holds its lease (another mount's getattr revokes it).
			f.addLease(a.Ino, l.sess, a)
			return &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
				Parent: parent, Name: name, Mode: mode, Uid: uid, Gid: gid, Ino: a.Ino, Lease: true}}}
		})
}

// wbSymlink makes a symlink in a leased directory.
func (f *FS) wbSymlink(ctx context.Context, parent uint64, name, target string, uid, gid uint32) (*metapb.Attr, bool, syscall.Errno) {
	if target == "" || len(target) > 4095 || strings.IndexByte(target, 0) >= 0 {
		return nil, false, 0 // the service says which error
	}
	return f.wbMake(ctx, parent, name, namespace.TypeSymlink, 0o777, uid, gid, true,
		func(l *dirLease, a *metapb.Attr) *metapb.Command {
			a.Size = uint64(len(target))
			in := f.newLocal(l, a, 0)
			in.mu.Lock()
			in.target = target
			in.mu.Unlock()
			return &metapb.Command{Op: &metapb.Command_Symlink{Symlink: &metapb.SymlinkOp{
				Parent: parent, Name: name, Target: target, Uid: uid, Gid: gid, Ino: a.Ino}}}
		})
}

// wbLookup answers a lookup in a leased directory: from the entries, and
// the attributes of an eligible inode from the mount. ino is set when the
// name exists but its attributes must be asked of the service.
func (f *FS) wbLookup(parent uint64, name string) (a *metapb.Attr, ino uint64, handled bool, errno syscall.Errno) {
	l := f.wbLease(parent)
	if l == nil {
		return nil, 0, false, 0
	}
	defer l.mu.RUnlock()
	l.emu.Lock()
	e, ok := l.ents[name]
	l.emu.Unlock()
	if !ok {
		if name == "." || name == ".." {
			return nil, 0, false, 0
		}
		return nil, 0, true, syscall.ENOENT
	}
	if a := f.localAttr(e.ino); a != nil {
		return a, 0, true, 0
	}
	return nil, e.ino, true, 0
}

// localAttr returns an eligible inode's attributes (nil if it is not). It
// takes no lease lock (wbLookup calls it holding the directory's, and a
// second read lock of one RWMutex waits behind a waiting writer): a lease
// being given up has held false before the journal is sent and its inodes
// are made ordinary, so nothing here is older than the service's.
func (f *FS) localAttr(ino uint64) *metapb.Attr {
	in := f.lookupInode(ino)
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb == nil || !in.wb.held.Load() || in.attr == nil {
		return nil
	}
	return in.report()
}

// wbUnlink removes a name from a leased directory.
func (f *FS) wbUnlink(parent uint64, name string) (bool, syscall.Errno) {
	l := f.wbLease(parent)
	if l == nil {
		return false, 0
	}
	defer l.mu.RUnlock()
	l.emu.Lock()
	defer l.emu.Unlock()
	e, ok := l.ents[name]
	switch {
	case !ok:
		return true, syscall.ENOENT
	case e.typ == namespace.TypeDir:
		return true, syscall.EISDIR
	}
	delete(l.ents, name)
	now := time.Now().UnixNano()
	defer f.journalOrder(e.ino)()
	f.unlinked(e.ino, now)
	f.touchDir(parent, now, 0)
	if f.debugOn {
		f.log.Debug("written behind", "op", "unlink", "dir", parent, "name", name, "ino", e.ino)
	}
	f.jr.add(l.sess, &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: parent, Name: name}}}, e.ino, parent)
	return true, 0
}

// journalOrder takes ino's journal-order lock (inode.jmu) if the mount
// knows the inode, and returns its release: an unlink decided now is
// journaled before any change of the inode decided after it, and after any
// decided before (wbSetAttr holds it from its check to its append).
func (f *FS) journalOrder(ino uint64) (unlock func()) {
	in := f.lookupInode(ino)
	if in == nil {
		return func() {}
	}
	in.jmu.Lock()
	return in.jmu.Unlock
}

// unlinked records that ino lost a link.
func (f *FS) unlinked(ino uint64, now int64) {
	in := f.lookupInode(ino)
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb == nil || in.attr == nil {
		in.attr = nil
		return
	}
	in.changeLocal(func(a *metapb.Attr) {
		a.Nlink = max(a.Nlink, 1) - 1
		if a.Type == uint32(namespace.TypeDir) {
			a.Nlink = 0 // a removed directory has no link left, as the service has it
		}
		a.Ctime = now
	})
}

// wbRmdir removes an empty directory that is leased, from a leased
// directory. The child is found under the parent's lease; then both leases
// are locked in the order of the lock hierarchy (locking.go: ascending
// directory number, every lease's mu before any entry lock) and the entry
// is checked again.
func (f *FS) wbRmdir(parent uint64, name string) (bool, syscall.Errno) {
	l := f.wbLease(parent)
	if l == nil {
		return false, 0
	}
	l.emu.Lock()
	e, ok := l.ents[name]
	l.emu.Unlock()
	l.mu.RUnlock()
	switch {
	case !ok:
		return true, syscall.ENOENT
	case e.typ != namespace.TypeDir:
		return true, syscall.ENOTDIR
	}
	f.lmu.Lock()
	cl := f.leases[e.ino]
	f.lmu.Unlock()
	if cl == nil {
		return false, 0
	}
	var pl *dirLease
	if e.ino < parent {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if pl = f.wbLease(parent); pl == nil {
			return false, 0
		}
		defer pl.mu.RUnlock()
	} else {
		if pl = f.wbLease(parent); pl == nil {
			return false, 0
		}
		defer pl.mu.RUnlock()
		cl.mu.Lock()
		defer cl.mu.Unlock()
	}
	if !cl.held.Load() || cl.sess != pl.sess {
		return false, 0 // the service decides
	}
	first, second := pl, cl
	if e.ino < parent {
		first, second = cl, pl
	}
	first.emu.Lock()
	defer first.emu.Unlock()
	second.emu.Lock()
	defer second.emu.Unlock()
	if now, ok := pl.ents[name]; !ok || now != e {
		return false, 0 // changed meanwhile: the service decides
	}
	if len(cl.ents) > 0 {
		return true, syscall.ENOTEMPTY
	}
	cl.held.Store(false)
	f.lmu.Lock()
	if f.leases[e.ino] == cl {
		delete(f.leases, e.ino)
	}
	f.lmu.Unlock()
	delete(pl.ents, name)
	now := time.Now().UnixNano()
	defer f.journalOrder(e.ino)()
	f.unlinked(e.ino, now)
	f.touchDir(parent, now, -1)
	f.jr.add(pl.sess, &metapb.Command{Op: &metapb.Command_Rmdir{Rmdir: &metapb.RmdirOp{Parent: parent, Name: name}}}, e.ino, parent)
	return true, 0
}

// wbRename renames within or between leased directories: a file or
// symlink anywhere, a directory within its parent, never over a directory.
func (f *FS) wbRename(parent uint64, name string, newParent uint64, newName string, flags uint32) (bool, syscall.Errno) {
	if flags != 0 || !plainName(name) || !plainName(newName) {
		return false, 0
	}
	first, second := min(parent, newParent), max(parent, newParent)
	l1 := f.wbLease(first)
	if l1 == nil {
		return false, 0
	}
	defer l1.mu.RUnlock()
	l2 := l1
	if second != first {
		if l2 = f.wbLease(second); l2 == nil {
			return false, 0
		}
		defer l2.mu.RUnlock()
		if l2.sess != l1.sess {
			return false, 0
		}
	}
	// Entry locks after every lease lock, ascending (locking.go).
	l1.emu.Lock()
	defer l1.emu.Unlock()
	if l2 != l1 {
		l2.emu.Lock()
		defer l2.emu.Unlock()
	}
	from, to := l1, l2
	if parent != first {
		from, to = l2, l1
	}
	e, ok := from.ents[name]
	if !ok {
		return true, syscall.ENOENT
	}
	old, exists := to.ents[newName]
	switch {
	case e.typ == namespace.TypeDir && parent != newParent:
		return false, 0 // loops into its own subtree are the service's to check
	case exists && (old.typ == namespace.TypeDir || e.typ == namespace.TypeDir):
		return false, 0
	case exists && old.ino == e.ino:
		return true, 0 // two links of one file: rename does nothing
	}
	delete(from.ents, name)
	to.ents[newName] = e
	now := time.Now().UnixNano()
	inos := []uint64{e.ino, parent, newParent}
	if exists {
		defer f.journalOrder(old.ino)()
		f.unlinked(old.ino, now)
		inos = append(inos, old.ino)
	}
	if in := f.lookupInode(e.ino); in != nil {
		in.mu.Lock()
		if in.wb == from && from != to {
			in.wb = to // it lives under the other lease now
			to.inodes = append(to.inodes, in)
		}
		if in.wb != nil && in.attr != nil {
			in.changeLocal(func(a *metapb.Attr) { a.Ctime = now })
		}
		in.mu.Unlock()
	}
	f.touchDir(parent, now, 0)
	if newParent != parent {
		f.touchDir(newParent, now, 0)
	}
	if f.debugOn {
		f.log.Debug("written behind", "op", "rename", "dir", parent, "name", name, "to", newParent, "new", newName, "ino", e.ino)
	}
	f.jr.add(l1.sess, &metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{
		OldParent: parent, OldName: name, NewParent: newParent, NewName: newName}}}, inos...)
	return true, 0
}

// wbSetAttr changes an eligible inode's mode, owner or times (not its
// size).
func (f *FS) wbSetAttr(ino uint64, s SetAttrIn) (*metapb.Attr, bool) {
	if s.Valid&namespace.SetSize != 0 || s.Valid&namespace.SetCtime != 0 {
		return nil, false
	}
	in := f.lookupInode(ino)
	if in == nil {
		return nil, false
	}
	l := f.eligible(in)
	if l == nil {
		return nil, false
	}
	defer l.mu.RUnlock()
	in.jmu.Lock() // until the change is journaled: not after a close (Release)
	defer in.jmu.Unlock()
	in.mu.Lock()
	if in.wb != l || in.attr == nil || in.attr.Nlink == 0 && in.opens == 0 {
		// Not the mount's, or gone (unlinked, not open): the service
		// answers (ENOENT for one gone).
		in.mu.Unlock()
		return nil, false
	}
	now := time.Now().UnixNano()
	a := proto.Clone(in.attr).(*metapb.Attr)
	v := s.Valid
	if v&namespace.SetMode != 0 {
		a.Mode = s.Mode & namespace.PermMask
	}
	if v&namespace.SetUid != 0 {
		a.Uid = s.Uid
	}
	if v&namespace.SetGid != 0 {
		a.Gid = s.Gid
	}
	if v&(namespace.SetUid|namespace.SetGid) != 0 && v&namespace.SetMode == 0 && a.Type != uint32(namespace.TypeDir) {
		a.Mode &^= syscall.S_ISUID
		if a.Mode&syscall.S_IXGRP != 0 {
			a.Mode &^= syscall.S_ISGID
		}
	}
	switch {
	case v&namespace.SetAtimeNow != 0:
		a.Atime = now
	case v&namespace.SetAtime != 0:
		a.Atime = s.Atime
	}
	switch {
	case v&namespace.SetMtimeNow != 0:
		a.Mtime = now
	case v&namespace.SetMtime != 0:
		a.Mtime = s.Mtime
	}
	if v != 0 {
		a.Ctime = now
		a.Version++
	}
	in.attr = a
	out := in.report()
	in.mu.Unlock()
	if v != 0 {
		f.jr.add(l.sess, &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{
			Ino: ino, Valid: s.Valid, Mode: s.Mode, Uid: s.Uid, Gid: s.Gid, Atime: s.Atime, Mtime: s.Mtime}}}, ino)
	}
	return out, true
}

// wbOpen opens an eligible file.
func (f *FS) wbOpen(ino uint64, flags uint32) (*Handle, bool) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, false
	}
	in := f.lookupInode(ino)
	if in == nil {
		return nil, false
	}
	l := f.eligible(in)
	if l == nil {
		return nil, false
	}
	defer l.mu.RUnlock()
	in.mu.Lock()
	if in.wb != l || in.attr == nil || in.attr.Type != uint32(namespace.TypeFile) {
		in.mu.Unlock()
		return nil, false
	}
	in.opens++
	in.mu.Unlock()
	h := f.newHandle(ino, l.sess)
	h.wb = true
	in.mu.Lock()
	h.seen = in.errsSeen
	in.mu.Unlock()
	f.jr.addOpenClose(l.sess, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: l.sess, Ino: ino, Handle: h.id}}}, ino)
	return h, true
}

// wbCommit sends a data commit of an eligible file, written under session
// sess, through the journal and records its new size locally. end is the
// end of the data it commits. Data written under another session than the
// lease's is not written behind.
func (f *FS) wbCommit(in *inode, sess uint64, cmd *metapb.Command, end uint64, objects bool) bool {
	l := f.eligible(in)
	if l == nil {
		return false
	}
	defer l.mu.RUnlock()
	if l.sess != sess {
		return false
	}
	in.mu.Lock()
	if in.wb != l || in.attr == nil || (!objects && in.hasBlocks) {
		in.mu.Unlock()
		return false
	}
	now := time.Now().UnixNano()
	in.changeLocal(func(a *metapb.Attr) {
		a.Size = max(a.Size, end)
		a.Mtime, a.Ctime = now, now
	})
	in.cacheVer = in.attr.Version
	if objects {
		in.hasBlocks = true
	}
	in.mu.Unlock()
	f.jr.add(l.sess, cmd, in.ino)
	return true
}

// settle makes ino an ordinary inode again before an operation the mount
// does not write behind: the journal is applied, and its attributes are
// asked of the service from now on.
func (f *FS) settle(ino uint64) {
	in := f.lookupInode(ino)
	if in == nil {
		return
	}
	in.mu.Lock()
	wb := in.wb != nil
	in.mu.Unlock()
	if !wb {
		return
	}
	f.jr.drain()
	in.mu.Lock()
	in.wb, in.attr = nil, nil
	in.mu.Unlock()
}

// giveBack ends the lease of dir: no more writing behind in it, the journal
// is applied, the inodes made under it become ordinary, and the service
// is told.
func (f *FS) giveBack(dir uint64) {
	f.lmu.Lock()
	l := f.leases[dir]
	f.returning[dir]++ // acquire keeps off until the service is told
	f.lmu.Unlock()
	defer func() {
		f.lmu.Lock()
		if f.returning[dir]--; f.returning[dir] <= 0 {
			delete(f.returning, dir)
		}
		f.lmu.Unlock()
	}()
	sess := f.session.Load()
	if l != nil {
		// Ended while still listed: a change through the service meanwhile
		// locks it (lockService) and so waits for the changes written
		// behind under it; only then is it forgotten.
		sess = l.sess
		f.endLease(l)
		f.lmu.Lock()
		if f.leases[dir] == l {
			delete(f.leases, dir)
		}
		f.lmu.Unlock()
	}
	f.jr.drain()
	cctx, cancel := f.ctx(context.Background())
	defer cancel()
	if _, err := f.meta.Apply(cctx, &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
		Session: sess, Dir: dir, Mode: 2}}}); err != nil {
		f.log.Warn("releasing a directory lease", "dir", dir, "err", err)
	}
	if f.debugOn {
		f.log.Debug("directory lease given back", "dir", dir, "held", l != nil)
	}
}

// endLease stops writing behind under l and makes its inodes ordinary once
// the journal is applied.
func (f *FS) endLease(l *dirLease) {
	l.mu.Lock()
	l.held.Store(false)
	l.mu.Unlock()
	f.jr.drain()
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
	}
}

// dropLeases forgets every lease: the session was replaced (its leases
// ended with it), or a batch of the journal could not be applied (the
// mount's view of those directories may be wrong: they are given back, so
// that everything is asked of the service, and another mount that waits
// for one of them is not left waiting: a mount with no lease does not
// watch for revocations).
func (f *FS) dropLeases(giveBack bool) {
	f.lmu.Lock()
	ls := make([]*dirLease, 0, len(f.leases))
	for _, l := range f.leases {
		ls = append(ls, l)
	}
	f.lmu.Unlock()
	for _, l := range ls {
		if giveBack {
			f.giveBack(l.dir)
			continue
		}
		f.endLease(l)
		f.lmu.Lock()
		if f.leases[l.dir] == l {
			delete(f.leases, l.dir)
		}
		f.lmu.Unlock()
	}
}

// watchLeases gives back the leases the service revoked: another mount
// waits for them. While the mount holds leases it keeps one long poll
// (RevokesReq.wait_ms) open; it also gives back leases idle for leaseIdle.
func (f *FS) watchLeases(ctx context.Context) {
	defer close(f.watched)
	lastSweep := time.Now()
	for ctx.Err() == nil {
		f.lmu.Lock()
		n := len(f.leases)
		var idle []uint64
		if time.Since(lastSweep) > leaseIdle/10 {
			lastSweep = time.Now()
			old := time.Now().Add(-leaseIdle).UnixNano()
			for dir, l := range f.leases {
				if l.used.Load() < old {
					idle = append(idle, dir)
				}
			}
		}
		f.lmu.Unlock()
		for _, dir := range idle {
			f.giveBack(dir) // its entries and inodes need no memory any more
		}
		if n == 0 {
			select { // nothing to watch until a lease is granted
			case <-ctx.Done():
			case <-f.leaseKick:
			case <-time.After(leaseIdle / 10):
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, leaseWait+f.cfg.MetaTimeout)
		r, err := f.meta.Read(cctx, &metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{
			Session: f.session.Load(), WaitMs: uint32(leaseWait / time.Millisecond)}}})
		cancel()
		if err != nil || r.Errno != 0 {
			if ctx.Err() == nil {
				f.log.Warn("watching for revoked directory leases", "err", err, "errno", r.GetErrno())
				_ = sleepCtx(ctx, time.Second)
			}
			continue
		}
		for _, dir := range slices.Sorted(slices.Values(r.Dirs)) {
			f.giveBack(dir)
		}
	}
}

// leaseWait is how long one long poll for revocations lasts.
const leaseWait = 5 * time.Second

// leaseIdle is how long a lease is kept without being written behind in.
const leaseIdle = 5 * time.Minute

// leaseDir is the directory a query is about, for a revocation.
func leaseDir(q *metapb.ReadReq) uint64 {
	switch op := q.Op.(type) {
	case *metapb.ReadReq_Lookup:
		return op.Lookup.Parent
	case *metapb.ReadReq_Getattr:
		return op.Getattr.Ino
	case *metapb.ReadReq_Readdir:
		return op.Readdir.Ino
	case *metapb.ReadReq_Getxattr:
		return op.Getxattr.Ino
	case *metapb.ReadReq_Listxattr:
		return op.Listxattr.Ino
	}
	return 0
}

// lockService write-locks the leases this mount holds of dirs (ascending,
// as locking.go orders them) for a change made through the service in
// them, and returns what unlocks them. From before the change is applied
// until its note has recorded it in the mount's view (noteEnt, noteGone,
// noteRename), nothing is written behind in those directories: a change
// written behind is never based on a view that lacks one the service has
// already applied.
func (f *FS) lockService(dirs ...uint64) (unlock func()) {
	f.svcMu.RLock()
	dirs = slices.Compact(slices.Sorted(slices.Values(dirs)))
	var ls []*dirLease
	for _, d := range dirs {
		f.lmu.Lock()
		l := f.leases[d]
		f.lmu.Unlock()
		if l != nil {
			l.mu.Lock()
			ls = append(ls, l)
		}
	}
	return func() {
		for i := len(ls) - 1; i >= 0; i-- {
			ls[i].mu.Unlock()
		}
		f.svcMu.RUnlock()
	}
}

// victimDir returns the directory at name in parent if the mount leases it
// (0 otherwise): a change through the service may remove it (rmdir, a
// rename over it), so its lease is locked with the others (lockService)
// and forgotten once the change is applied (dropRemoved): the service
// dropped it, and nothing may be written behind in a removed directory.
func (f *FS) victimDir(ctx context.Context, parent uint64, name string) uint64 {
	f.lmu.Lock()
	n := len(f.leases)
	f.lmu.Unlock()
	if n == 0 {
		return 0
	}
	a, errno := f.Lookup(ctx, parent, name)
	if errno != 0 || a.Type != uint32(namespace.TypeDir) {
		return 0
	}
	f.lmu.Lock()
	_, ok := f.leases[a.Ino]
	f.lmu.Unlock()
	if !ok {
		return 0
	}
	return a.Ino
}

// dropRemoved forgets the lease of dir (0: none), which a change through
// the service removed; the caller holds its mu (lockService) and ends it
// (endLease) once it has let go.
func (f *FS) dropRemoved(dir uint64) *dirLease {
	if dir == 0 {
		return nil
	}
	f.lmu.Lock()
	l := f.leases[dir]
	delete(f.leases, dir)
	f.lmu.Unlock()
	if l != nil {
		l.held.Store(false)
	}
	return l
}

// noteEnt records in dir's lease an entry made through the service (mknod,
// link, ...), and the change in dir's attributes when they are the mount's.
// An entry the lease already has was seen by loading it (acquire): so were
// dir's attributes.
func (f *FS) noteEnt(dir uint64, name string, ino uint64, typ namespace.FileType) {
	f.lmu.Lock()
	l := f.leases[dir]
	f.lmu.Unlock()
	if l == nil {
		return
	}
	l.emu.Lock()
	seen := false
	if l.ents != nil {
		seen = l.ents[name] == dirEnt{ino, typ}
		l.ents[name] = dirEnt{ino, typ}
	}
	l.emu.Unlock()
	if !seen {
		f.touchDir(dir, time.Now().UnixNano(), dirLinks(typ))
	}
}

// dirLinks is what an entry of type typ adds to its directory's nlink.
func dirLinks(typ namespace.FileType) int {
	if typ == namespace.TypeDir {
		return 1
	}
	return 0
}

// noteGone records in dir's lease an entry removed through the service,
// and the change in the attributes the mount keeps of dir and of the
// inode.
func (f *FS) noteGone(dir uint64, name string) {
	f.lmu.Lock()
	l := f.leases[dir]
	f.lmu.Unlock()
	if l == nil {
		return
	}
	l.emu.Lock()
	e, ok := l.ents[name]
	delete(l.ents, name)
	l.emu.Unlock()
	if ok {
		now := time.Now().UnixNano()
		f.unlinked(e.ino, now)
		f.touchDir(dir, now, -dirLinks(e.typ))
	}
}

// noteRename records a rename made through the service in the leases of
// the directories, and the change in the attributes the mount keeps of
// them (a directory moved to another parent moves a link) and of the
// inodes.
func (f *FS) noteRename(parent uint64, name string, newParent uint64, newName string, flags uint32) {
	f.lmu.Lock()
	l1, l2 := f.leases[parent], f.leases[newParent]
	f.lmu.Unlock()
	// What the names lead to now, asked of the service (this mount holds
	// the leases, so it may ask).
	ent := func(dir uint64, name string) (dirEnt, bool) {
		r, errno := f.read(context.Background(), &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: dir, Name: name}}})
		if errno != 0 {
			return dirEnt{}, false
		}
		return dirEnt{r.Attr.Ino, namespace.FileType(r.Attr.Type)}, true
	}
	// set records what name leads to now and returns what it led to.
	set := func(l *dirLease, e dirEnt, ok bool, name string) (dirEnt, bool) {
		l.emu.Lock()
		defer l.emu.Unlock()
		old, had := l.ents[name]
		if l.ents != nil {
			if ok {
				l.ents[name] = e
			} else {
				delete(l.ents, name)
			}
		}
		return old, had
	}
	// moved is what was at name, other what was at newName (it is at name
	// now after an exchange, else gone): from the leases before, or from the
	// service after.
	var moved, other, back dirEnt
	var okMoved, okOther, okBack bool
	if l1 != nil {
		back, okBack = ent(parent, name)
		moved, okMoved = set(l1, back, okBack, name)
	}
	if l2 != nil {
		now, ok := ent(newParent, newName)
		other, okOther = set(l2, now, ok, newName)
		moved, okMoved = now, ok
	}
	exchange := flags&namespace.RenameExchange != 0
	if exchange && l1 != nil {
		other, okOther = back, okBack
	}
	links := func(e dirEnt, ok bool) int {
		if !ok {
			return 0
		}
		return dirLinks(e.typ)
	}
	dm, do := links(moved, okMoved), links(other, okOther)
	now := time.Now().UnixNano()
	if exchange {
		f.touchDir(parent, now, do-dm)
		f.touchDir(newParent, now, dm-do)
	} else {
		f.touchDir(parent, now, -dm)
		f.touchDir(newParent, now, dm-do)
		if okOther && other.ino != moved.ino {
			f.unlinked(other.ino, now) // replaced
		}
	}
	for _, e := range []dirEnt{moved, other} {
		if e.ino == 0 || (e == other && !exchange) {
			continue
		}
		if in := f.lookupInode(e.ino); in != nil { // renamed: its ctime
			in.mu.Lock()
			if in.wb != nil && in.attr != nil {
				in.changeLocal(func(a *metapb.Attr) { a.Ctime = now })
			}
			in.mu.Unlock()
		}
	}
}

// madeHere reports an eligible inode this mount made (it has no xattrs:
// setting one settles it).
func (f *FS) madeHere(ino uint64) bool {
	in := f.lookupInode(ino)
	if in == nil {
		return false
	}
	l := f.eligible(in)
	if l == nil {
		return false
	}
	defer l.mu.RUnlock()
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.wb == l && in.made
}

// Leasing directories the mount did not make: after leaseAfter changes
// through the service in one directory, the mount tries to lease it (if
// no other mount holds it) and loads its entries; up to leaseMaxEntries.
const (
	leaseAfter      = 8
	leaseMaxEntries = 100000
)

// noteChange counts a change made through the service in dir and starts
// leasing it when it has seen enough.
func (f *FS) noteChange(dir uint64) {
	if f.noLeases {
		return
	}
	f.hitsMu.Lock()
	if f.hits == nil || len(f.hits) > 4096 {
		f.hits = map[uint64]int{}
	}
	f.hits[dir]++
	n := f.hits[dir]
	if n >= leaseAfter {
		delete(f.hits, dir)
	}
	f.hitsMu.Unlock()
	if n >= leaseAfter && f.acquiring.CompareAndSwap(false, true) {
		go func() {
			defer f.acquiring.Store(false)
			f.acquire(dir)
		}()
	}
}

// acquire leases dir and loads its entries. Operations in dir wait
// meanwhile; changes this mount made through the service while it loads
// are recorded after it (noteEnt and noteGone wait for it too).
func (f *FS) acquire(dir uint64) {
	// No change through the service is in flight meanwhile: one applied
	// after the entries are read but noted before the lease is visible
	// would be missing from the mount's view.
	f.svcMu.Lock()
	defer f.svcMu.Unlock()
	f.lmu.Lock()
	if f.leases[dir] != nil || f.returning[dir] > 0 {
		// Held, or being given back: leasing it again now could be undone
		// by the release on its way.
		f.lmu.Unlock()
		return
	}
	l := &dirLease{dir: dir, sess: f.session.Load(), ents: map[string]dirEnt{}}
	l.mu.Lock()
	l.emu.Lock()
	f.leases[dir] = l
	f.lmu.Unlock()
	ok := f.loadLease(l)
	if f.debugOn {
		f.log.Debug("directory leased", "dir", dir, "ok", ok, "entries", len(l.ents))
	}
	l.held.Store(ok)
	l.used.Store(time.Now().UnixNano())
	l.emu.Unlock()
	l.mu.Unlock()
	if !ok {
		f.lmu.Lock()
		if f.leases[dir] == l {
			delete(f.leases, dir)
		}
		f.lmu.Unlock()
		return
	}
	select {
	case f.leaseKick <- struct{}{}:
	default:
	}
}

func (f *FS) loadLease(l *dirLease) bool {
	ctx, cancel := f.ctx(context.Background())
	defer cancel()
	sess := l.sess
	r, err := f.meta.Apply(ctx, &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
		Session: sess, Dir: l.dir, Mode: 4}}})
	if err != nil || r.Errno != 0 {
		return false // another mount holds it, or the service is away: go on without
	}
	release := func() {
		_, _ = f.meta.Apply(ctx, &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
			Session: sess, Dir: l.dir, Mode: 2}}})
	}
	a, errno := f.GetAttr(ctx, l.dir)
	if errno != 0 {
		release()
		return false
	}
	for cookie := uint64(0); ; {
		q, errno := f.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: l.dir, Cookie: cookie, Max: 4096}}})
		if errno != 0 || len(l.ents)+len(q.Entries) > leaseMaxEntries {
			release()
			return false
		}
		for _, e := range q.Entries {
			if e.Name != "." && e.Name != ".." {
				l.ents[e.Name] = dirEnt{e.Ino, namespace.FileType(e.Type)}
			}
			cookie = e.Cookie
		}
		if len(q.Entries) == 0 {
			break
		}
	}
	// The directory's own attributes are the mount's while it holds the
	// lease (the kernel asks for them after every change).
	in := f.inode(l.dir)
	in.mu.Lock()
	in.attr, in.cacheVer, in.wb = a, a.Version, l
	in.mu.Unlock()
	l.inodes = append(l.inodes, in)
	return true
}
