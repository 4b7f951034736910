package fs

import (
	"context"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// RootIno is the root directory's inode number.
const RootIno = 1

// LookupKept is Lookup, and also says how long the kernel may keep the
// answer (Kept): a "no such name" in a directory this mount write-leases
// as long as a name (the FUSE adapter's negative entries; elsewhere a
// missing name is asked again at every lookup), and an answer from a read
// lease's copy as long as the copy could answer it.
func (f *FS) LookupKept(ctx context.Context, parent uint64, name string) (*metapb.Attr, Kept, syscall.Errno) {
	return f.view.lookup(ctx, parent, name)
}

// GetAttrKept returns the attributes of ino (the mount's own in a
// directory it leases, a read lease's copy's, or the service's), and
// until when the kernel may keep them (zero: its attribute timeout).
func (f *FS) GetAttrKept(ctx context.Context, ino uint64) (*metapb.Attr, time.Time, syscall.Errno) {
	return f.view.getAttrKept(ctx, ino)
}

// SetInvalidator gives the core the kernel's cache invalidations, which
// drop what another mount changes in a directory this one read-leases
// before the change is applied (readlease.go). Without one (tests without
// FUSE) nothing the kernel caches needs dropping.
func (f *FS) SetInvalidator(i Invalidator) { f.reads.kernel.set(i) }

// GetAttr returns the attributes of ino: the mount's own in a directory it
// leases, a read lease's copy's, or the service's.
func (f *FS) GetAttr(ctx context.Context, ino uint64) (*metapb.Attr, syscall.Errno) {
	return f.view.getAttr(ctx, ino)
}

// SetAttrIn says what SetAttr changes: Valid holds namespace.SetAttr* bits.
type SetAttrIn = namespace.SetAttrIn

// SetAttr changes attributes. Data written before is committed first, so
// that an explicit mtime (cp -p, rsync -t) is not overwritten by a later
// commit; a size change drops the read caches.
func (f *FS) SetAttr(ctx context.Context, ino uint64, in SetAttrIn) (*metapb.Attr, syscall.Errno) {
	if errno := f.data.flush(ctx, ino, nil); errno != 0 {
		return nil, errno
	}
	if a, ok := f.view.setAttr(ino, in); ok {
		return a, 0
	}
	f.view.settle(ino)
	r, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{
		Ino: ino, Valid: in.Valid, Mode: in.Mode, Uid: in.Uid, Gid: in.Gid, Size: in.Size, Atime: in.Atime, Mtime: in.Mtime}}})
	if errno != 0 {
		return nil, errno
	}
	n := f.inodes.get(ino)
	n.mu.Lock()
	defer n.mu.Unlock()
	if in.Valid&namespace.SetSize != 0 {
		n.localSize = 0
		n.invalidate()
	}
	n.setAttr(r.Attr)
	return n.report(), 0
}

// Create makes a regular file or a special file (mknod) in parent. Without
// excl an existing regular file is returned instead (its Ino differs from
// a new one's: the caller cannot tell, nor needs to).
func (f *FS) Create(ctx context.Context, parent uint64, name string, typ namespace.FileType, mode, rdev, uid, gid uint32, excl bool) (*metapb.Attr, syscall.Errno) {
	unlock := f.leases.lockService(parent)
	a, errno := f.view.applyAttr(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: parent, Name: name, Type: uint32(typ), Mode: mode, Uid: uid, Gid: gid, Rdev: rdev, Excl: excl}}})
	if errno == 0 {
		f.view.noteEnt(parent, name, a.Ino, namespace.FileType(a.Type))
	}
	unlock()
	if errno == 0 {
		f.leases.noteChange(parent)
	}
	return a, errno
}

// Mkdir makes a directory. The mount leases it: until another mount looks
// into it, what is made inside is written behind (lease.go).
func (f *FS) Mkdir(ctx context.Context, parent uint64, name string, mode, uid, gid uint32) (*metapb.Attr, syscall.Errno) {
	if f.leases.off {
		return f.view.applyAttr(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
			Parent: parent, Name: name, Mode: mode, Uid: uid, Gid: gid}}})
	}
	f.leases.leaseNow(parent)
	if a, ok, errno := f.view.mkdir(ctx, parent, name, mode, uid, gid); ok {
		return a, errno
	}
	cmd := &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
		Parent: parent, Name: name, Mode: mode, Uid: uid, Gid: gid, Lease: true}}}
	unlock := f.leases.lockService(parent)
	a, errno := f.view.applyAttr(ctx, cmd)
	if errno == 0 {
		f.leases.add(a.Ino, parent, cmd.LeaseSession, cloneAttr(a)) // granted to the session it was made under
		f.view.noteEnt(parent, name, a.Ino, namespace.TypeDir)
	}
	unlock()
	if errno == 0 {
		f.leases.noteChange(parent)
	}
	return a, errno
}

// Symlink makes a symbolic link.
func (f *FS) Symlink(ctx context.Context, parent uint64, name, target string, uid, gid uint32) (*metapb.Attr, syscall.Errno) {
	f.leases.leaseNow(parent)
	if a, ok, errno := f.view.symlink(ctx, parent, name, target, uid, gid); ok {
		return a, errno
	}
	unlock := f.leases.lockService(parent)
	a, errno := f.view.applyAttr(ctx, &metapb.Command{Op: &metapb.Command_Symlink{Symlink: &metapb.SymlinkOp{
		Parent: parent, Name: name, Target: target, Uid: uid, Gid: gid}}})
	if errno == 0 {
		f.view.noteEnt(parent, name, a.Ino, namespace.TypeSymlink)
	}
	unlock()
	if errno == 0 {
		f.leases.noteChange(parent)
	}
	return a, errno
}

// Link adds a hard link to ino.
func (f *FS) Link(ctx context.Context, ino, newParent uint64, newName string) (*metapb.Attr, syscall.Errno) {
	f.view.settle(ino)
	unlock := f.leases.lockService(newParent)
	a, errno := f.view.applyAttr(ctx, &metapb.Command{Op: &metapb.Command_Link{Link: &metapb.LinkOp{
		Ino: ino, NewParent: newParent, NewName: newName}}})
	if errno == 0 {
		f.view.noteEnt(newParent, newName, a.Ino, namespace.FileType(a.Type))
	}
	unlock()
	return a, errno
}

// Unlink removes a name (not a directory).
func (f *FS) Unlink(ctx context.Context, parent uint64, name string) syscall.Errno {
	if len(name) > maxNameLen {
		return syscall.ENAMETOOLONG
	}
	f.leases.leaseNow(parent)
	f.leases.ahead(parent)
	if ok, errno := f.view.unlink(parent, name); ok {
		return errno
	}
	unlock := f.leases.lockService(parent)
	f.view.registerVictim(parent, name)
	_, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: parent, Name: name}}})
	if errno == 0 {
		f.view.noteGone(parent, name)
	}
	unlock()
	if errno == 0 {
		f.leases.noteChange(parent)
	}
	return errno
}

// Rmdir removes an empty directory.
func (f *FS) Rmdir(ctx context.Context, parent uint64, name string) syscall.Errno {
	if len(name) > maxNameLen {
		return syscall.ENAMETOOLONG
	}
	f.leases.leaseNow(parent)
	f.leases.ahead(parent)
	if ok, errno := f.view.rmdir(parent, name); ok {
		return errno
	}
	unlock, child := f.view.lockRemoval(ctx, parent, name, 0, parent)
	_, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Rmdir{Rmdir: &metapb.RmdirOp{Parent: parent, Name: name}}})
	var gone *dirLease
	if errno == 0 {
		f.view.noteGone(parent, name)
		gone = f.leases.dropRemoved(child)
	}
	unlock()
	if gone != nil {
		f.leases.endLease(gone, true)
	}
	if errno == 0 {
		f.leases.noteChange(parent)
	}
	return errno
}

// Rename moves a name, with renameat2 flags (RENAME_NOREPLACE,
// RENAME_EXCHANGE).
func (f *FS) Rename(ctx context.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) syscall.Errno {
	f.leases.leaseNow(parent)
	f.leases.leaseNow(newParent)
	if ok, errno := f.view.rename(parent, name, newParent, newName, flags); ok {
		return errno
	}
	var unlock func()
	var victim uint64 // a directory the rename may replace
	if flags&namespace.RenameExchange == 0 {
		var keep uint64 // renamed onto itself: nothing is replaced
		if a, _, errno := f.view.lookup(ctx, parent, name); errno == 0 {
			keep = a.Ino
		}
		unlock, victim = f.view.lockRemoval(ctx, newParent, newName, keep, parent, newParent)
		f.view.registerVictim(newParent, newName)
	} else {
		unlock = f.leases.lockService(parent, newParent)
	}
	_, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{
		OldParent: parent, OldName: name, NewParent: newParent, NewName: newName, Flags: flags}}})
	var gone *dirLease
	if errno == 0 {
		f.view.noteRename(parent, name, newParent, newName, flags)
		gone = f.leases.dropRemoved(victim)
	}
	unlock()
	if gone != nil {
		f.leases.endLease(gone, true)
	}
	if errno == 0 {
		f.leases.noteChange(newParent)
	}
	return errno
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(ctx context.Context, ino uint64) (string, syscall.Errno) {
	if in := f.inodes.lookup(ino); in != nil {
		if l := f.leases.eligible(in); l != nil {
			in.mu.Lock()
			t := in.target
			own := in.wb == l
			in.mu.Unlock()
			l.mu.RUnlock()
			if own && t != "" {
				return t, 0
			}
		}
	}
	r, errno := f.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readlink{Readlink: &metapb.ReadlinkReq{Ino: ino}}})
	if errno != 0 {
		return "", errno
	}
	return r.Target, 0
}

// ReadDir returns up to max entries of directory ino after cookie (0: from
// the start); each entry's cookie continues after it.
//
// Except that a listing from the start (cookie 0) of a directory the mount
// write-leases is answered whole from the lease (whole): all its entries,
// however many, whose cookies number this listing alone. The caller keeps
// them to page and seek in, and must not pass those cookies back: they
// mean nothing to the service.
func (f *FS) ReadDir(ctx context.Context, ino, cookie uint64, max int) (ents []*metapb.DirEntry, whole bool, errno syscall.Errno) {
	if cookie == 0 {
		if ents, ok := f.view.listLeased(ino); ok {
			return ents, true, 0
		}
	}
	leased := false
	if cookie == 0 && f.leases.get(ino) == nil {
		_, leased = f.reads.take(ino) // a listing from the start: the names will be looked up next
	}
	if ents, ok := f.reads.readDir(ino, cookie, max); ok {
		return ents, false, 0
	}
	r, errno := f.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: ino, Cookie: cookie, Max: uint32(max)}}})
	if errno != 0 {
		return nil, false, errno
	}
	if leased {
		// Refused for another mount's write lease, which this listing
		// revoked and waited for: take the read lease now, before the
		// lookups and opens that follow a listing.
		// (Refused again for a child directory's write lease, which the
		// request asked back: the next listing takes it.)
		if held, _ := f.reads.take(ino); held {
			if ents, ok := f.reads.readDir(ino, cookie, max); ok {
				return ents, false, 0
			}
		}
	}
	return r.Entries, false, 0
}

// capsName is the xattr the kernel asks for before every write (to drop
// file capabilities); its absence is remembered for a while.
const capsName = "security.capability"

// capsTTL is how long the absence of security.capability is trusted.
const capsTTL = time.Second

// isACL reports POSIX ACL xattrs. ecfs does not implement ACLs: they are
// refused (EOPNOTSUPP) as on a filesystem mounted with noacl, so that cp -a
// and rsync -A fall back to the mode bits instead of storing an ACL that
// nothing enforces and that would leave the mode unset.
func isACL(name string) bool {
	return name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

// GetXattr returns the value of xattr name of ino; ecfs.health is
// computed (health.go).
func (f *FS) GetXattr(ctx context.Context, ino uint64, name string) ([]byte, syscall.Errno) {
	if name == healthName {
		return f.data.health(ctx, ino)
	}
	if isACL(name) {
		return nil, syscall.EOPNOTSUPP
	}
	if f.view.madeHere(ino) {
		return nil, syscall.ENODATA // made here, and no xattr set since (that settles it)
	}
	if name == capsName {
		in := f.inodes.get(ino)
		in.mu.Lock()
		fresh := time.Since(in.noCapsAt) < capsTTL
		in.mu.Unlock()
		if fresh {
			return nil, syscall.ENODATA
		}
	}
	r, errno := f.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Getxattr{Getxattr: &metapb.GetXattrReq{Ino: ino, Name: name}}})
	if errno == syscall.ENODATA && name == capsName {
		in := f.inodes.get(ino)
		in.mu.Lock()
		in.noCapsAt = time.Now()
		in.mu.Unlock()
	}
	if errno != 0 {
		return nil, errno
	}
	return r.Value, 0
}

// ListXattr returns the xattr names of ino; virtual ones (ecfs.health)
// are not listed.
func (f *FS) ListXattr(ctx context.Context, ino uint64) ([]string, syscall.Errno) {
	if f.view.madeHere(ino) {
		return nil, 0
	}
	r, errno := f.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Listxattr{Listxattr: &metapb.ListXattrReq{Ino: ino}}})
	if errno != 0 {
		return nil, errno
	}
	names := r.Names[:0]
	for _, n := range r.Names {
		if n != healthName {
			names = append(names, n)
		}
	}
	return names, 0
}

// SetXattr sets xattr name of ino (flags XATTR_CREATE, XATTR_REPLACE).
func (f *FS) SetXattr(ctx context.Context, ino uint64, name string, value []byte, flags uint32) syscall.Errno {
	if name == healthName {
		return syscall.EPERM // read-only
	}
	if isACL(name) {
		return syscall.EOPNOTSUPP
	}
	f.inodes.forgetCaps(ino, name)
	f.view.settle(ino)
	_, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Setxattr{Setxattr: &metapb.SetXattrOp{Ino: ino, Name: name, Value: value, Flags: flags}}})
	return errno
}

// RemoveXattr removes xattr name of ino.
func (f *FS) RemoveXattr(ctx context.Context, ino uint64, name string) syscall.Errno {
	if name == healthName {
		return syscall.EPERM // read-only
	}
	if isACL(name) {
		return syscall.EOPNOTSUPP
	}
	f.inodes.forgetCaps(ino, name)
	f.view.settle(ino)
	_, errno := f.view.change(ctx, &metapb.Command{Op: &metapb.Command_Removexattr{Removexattr: &metapb.RemoveXattrOp{Ino: ino, Name: name}}})
	return errno
}

// Statfs is the usable capacity (store capacity × k/(k+m)) and the inode
// count.
type Statfs struct {
	Total, Free, Inodes uint64
}

// Statfs asks the service for the capacity.
func (f *FS) Statfs(ctx context.Context) (Statfs, syscall.Errno) {
	r, errno := f.pipe.read(ctx, &metapb.ReadReq{Stale: true, Op: &metapb.ReadReq_Statfs{Statfs: &metapb.StatfsReq{}}})
	if errno != 0 {
		return Statfs{}, errno
	}
	return Statfs{Total: r.TotalBytes, Free: r.FreeBytes, Inodes: r.Inodes}, 0
}
