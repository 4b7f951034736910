package fs

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Changes of names written behind in leased directories (see leases.go).

// allocIno hands out an inode number reserved for this mount.
func (v *view) allocIno(ctx context.Context) (uint64, syscall.Errno) {
	v.inoMu.Lock()
	defer v.inoMu.Unlock()
	if v.inoNext == v.inoEnd {
		const batch = 1024
		cctx, cancel := v.ctx(ctx)
		r, err := v.pipe.meta.Apply(cctx, &metapb.Command{Op: &metapb.Command_InoAlloc{InoAlloc: &metapb.InoAllocOp{Count: batch}}})
		cancel()
		if err != nil {
			return 0, v.ioErr("metadata", err)
		}
		if r.Errno != 0 {
			return 0, syscall.Errno(r.Errno)
		}
		v.inoNext, v.inoEnd = r.FirstId, r.FirstId+batch
	}
	v.inoNext++
	return v.inoNext - 1, 0
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
func (v *view) make(ctx context.Context, parent uint64, name string, typ namespace.FileType, mode, uid, gid uint32, excl bool,
	finish func(l *dirLease, a *metapb.Attr) *metapb.Command) (a *metapb.Attr, handled bool, errno syscall.Errno) {
	if !plainName(name) {
		return nil, false, 0
	}
	l := v.leases.held(parent)
	if l == nil {
		return nil, false, 0
	}
	defer l.mu.RUnlock()
	pa, errno := v.dirAttr(ctx, parent)
	if errno != 0 {
		return nil, true, errno
	}
	// Numbered before the entries are locked: now and then this asks the
	// service for more numbers, and lookups in the directory need not wait
	// for that. A number not used (the name exists) is not missed.
	ino, errno := v.allocIno(ctx)
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
	v.touchDir(parent, now, dnlink)
	if v.debugOn {
		v.log.Debug("written behind", "op", "make", "dir", parent, "name", name, "ino", ino)
	}
	v.pipe.behind(l.sess, cmd, ino, parent)
	return cloneAttr(a), true, 0
}

// wbCreateOpen creates and opens a file in a leased directory. handled is
// false when the directory is not leased or the name exists without
// O_EXCL: the caller goes to the service.
func (v *view) createOpen(ctx context.Context, parent uint64, name string, mode, uid, gid, flags uint32) (a *metapb.Attr, h *Handle, handled bool, errno syscall.Errno) {
	a, handled, errno = v.make(ctx, parent, name, namespace.TypeFile, mode, uid, gid, flags&syscall.O_EXCL != 0,
		func(l *dirLease, a *metapb.Attr) *metapb.Command {
			sess := l.sess
			h = v.handles.newHandle(a.Ino, sess)
			h.wb = true
			v.leases.newLocal(l, a, 1)
			return &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
				Parent: parent, Name: name, Type: uint32(namespace.TypeFile), Mode: mode, Uid: uid, Gid: gid, Excl: true,
				Session: sess, Handle: h.id, Ino: a.Ino}}}
		})
	return a, h, handled, errno
}

// wbMkdir makes a directory in a leased directory; the new one is leased
// too.
func (v *view) mkdir(ctx context.Context, parent uint64, name string, mode, uid, gid uint32) (*metapb.Attr, bool, syscall.Errno) {
	return v.make(ctx, parent, name, namespace.TypeDir, mode, uid, gid, true,
		func(l *dirLease, a *metapb.Attr) *metapb.Command {
			a.Nlink = 2
			// A leased directory's own attributes are the mount's while it
			// holds its lease (another mount's getattr revokes it).
			v.leases.add(a.Ino, parent, l.sess, a)
			return &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
				Parent: parent, Name: name, Mode: mode, Uid: uid, Gid: gid, Ino: a.Ino, Lease: true}}}
		})
}

// wbSymlink makes a symlink in a leased directory.
func (v *view) symlink(ctx context.Context, parent uint64, name, target string, uid, gid uint32) (*metapb.Attr, bool, syscall.Errno) {
	if target == "" || len(target) > 4095 || strings.IndexByte(target, 0) >= 0 {
		return nil, false, 0 // the service says which error
	}
	return v.make(ctx, parent, name, namespace.TypeSymlink, 0o777, uid, gid, true,
		func(l *dirLease, a *metapb.Attr) *metapb.Command {
			a.Size = uint64(len(target))
			in := v.leases.newLocal(l, a, 0)
			in.mu.Lock()
			in.target = target
			in.mu.Unlock()
			return &metapb.Command{Op: &metapb.Command_Symlink{Symlink: &metapb.SymlinkOp{
				Parent: parent, Name: name, Target: target, Uid: uid, Gid: gid, Ino: a.Ino}}}
		})
}

// wbUnlink removes a name from a leased directory.
func (v *view) unlink(parent uint64, name string) (bool, syscall.Errno) {
	l := v.leases.held(parent)
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
	defer v.journalOrder(e.ino)()
	v.registerOpensOf(e.ino) // before the record that may free it
	v.unlinked(e.ino, now)
	v.touchDir(parent, now, 0)
	if v.debugOn {
		v.log.Debug("written behind", "op", "unlink", "dir", parent, "name", name, "ino", e.ino)
	}
	v.pipe.behind(l.sess, &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: parent, Name: name}}}, e.ino, parent)
	return true, 0
}

// wbRmdir removes an empty directory that is leased, from a leased
// directory. The child is found under the parent's lease; then both leases
// are locked in the order of the lock hierarchy (locking.go: ascending
// directory number, every lease's mu before any entry lock) and the entry
// is checked again.
func (v *view) rmdir(parent uint64, name string) (bool, syscall.Errno) {
	l := v.leases.held(parent)
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
	cl := v.leases.get(e.ino)
	if cl == nil {
		return false, 0
	}
	var pl *dirLease
	if e.ino < parent {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if pl = v.leases.held(parent); pl == nil {
			return false, 0
		}
		defer pl.mu.RUnlock()
	} else {
		if pl = v.leases.held(parent); pl == nil {
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
	delete(pl.ents, name)
	now := time.Now().UnixNano()
	defer v.journalOrder(e.ino)()
	v.unlinked(e.ino, now)
	v.touchDir(parent, now, -1)
	if v.debugOn {
		v.log.Debug("written behind", "op", "rmdir", "dir", parent, "name", name, "ino", e.ino)
	}
	v.pipe.behind(pl.sess, &metapb.Command{Op: &metapb.Command_Rmdir{Rmdir: &metapb.RmdirOp{Parent: parent, Name: name}}}, e.ino, parent)
	// Forgotten only once the rmdir is queued: a change through the
	// service in the directory until now finds its lease, waits for its
	// mu, and so is queued after the rmdir (and refused), never before it.
	v.leases.forget(e.ino, cl)
	return true, 0
}

// wbRename renames within or between leased directories: a file or
// symlink anywhere, a directory within its parent, never over a directory.
func (v *view) rename(parent uint64, name string, newParent uint64, newName string, flags uint32) (bool, syscall.Errno) {
	if flags != 0 || !plainName(name) || !plainName(newName) {
		return false, 0
	}
	first, second := min(parent, newParent), max(parent, newParent)
	l1 := v.leases.held(first)
	if l1 == nil {
		return false, 0
	}
	defer l1.mu.RUnlock()
	l2 := l1
	if second != first {
		if l2 = v.leases.held(second); l2 == nil {
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
		defer v.journalOrder(old.ino)()
		v.registerOpensOf(old.ino)
		v.unlinked(old.ino, now)
		inos = append(inos, old.ino)
	}
	if in := v.inodes.lookup(e.ino); in != nil {
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
	v.touchDir(parent, now, 0)
	if newParent != parent {
		v.touchDir(newParent, now, 0)
	}
	if v.debugOn {
		v.log.Debug("written behind", "op", "rename", "dir", parent, "name", name, "to", newParent, "new", newName, "ino", e.ino)
	}
	v.pipe.behind(l1.sess, &metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{
		OldParent: parent, OldName: name, NewParent: newParent, NewName: newName}}}, inos...)
	return true, 0
}
