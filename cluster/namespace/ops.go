package namespace

import (
	"math"
	"strings"
	"syscall"
)

// Lookup returns the attributes of the inode name refers to in directory
// parent. "." is parent itself and ".." its parent (the root's is the
// root). ENOENT, ENOTDIR (parent is not a directory), EINVAL (empty name, or
// one containing '/' or NUL), ENAMETOOLONG.
func (n *Namespace) Lookup(parent Ino, name string) (Attr, syscall.Errno) {
	p, d, e := n.dirInode(parent)
	if e != 0 {
		return Attr{}, e
	}
	switch name {
	case ".":
		return p.attr(parent), 0
	case "..":
		if d.parent == 0 { // removed directory
			return Attr{}, syscall.ENOENT
		}
		return n.inodes[d.parent].attr(d.parent), 0
	}
	if e := n.checkName(name); e != 0 {
		return Attr{}, e
	}
	ino := d.lookup(name)
	if ino == 0 {
		return Attr{}, syscall.ENOENT
	}
	return n.inodes[ino].attr(ino), 0
}

// newEntryParent checks that name can be created in directory parent, apart
// from whether it exists: ENOENT, ENOTDIR, EEXIST for "." and "..", EINVAL,
// ENAMETOOLONG, and ENOENT if parent has been removed.
func (n *Namespace) newEntryParent(parent Ino, name string) (*inode, *dirData, syscall.Errno) {
	p, d, e := n.dirInode(parent)
	if e != 0 {
		return nil, nil, e
	}
	if isDots(name) {
		return nil, nil, syscall.EEXIST
	}
	if e := n.checkName(name); e != 0 {
		return nil, nil, e
	}
	if p.nlink == 0 {
		return nil, nil, syscall.ENOENT
	}
	return p, d, 0
}

// insert adds the new inode i as ino under name in directory p.
func (n *Namespace) insert(p *inode, d *dirData, name string, ino Ino, i *inode, now int64) {
	if p.mode&syscall.S_ISGID != 0 {
		i.gid = p.gid
		if i.typ == TypeDir {
			i.mode |= syscall.S_ISGID
		}
	}
	n.inodes[ino] = i
	d.add(name, ino)
	p.modified(now)
}

// Create makes a regular file, fifo, socket or device node (mknod) named
// name in parent, as inode newIno. If the name exists: with excl, or unless
// both it and typ are regular files, EEXIST; otherwise (O_CREAT without
// O_EXCL on a regular file) the existing file's attributes are returned with
// 0 and newIno is not used, which the caller sees by comparing Attr.Ino.
// In a setgid directory the file gets the directory's group. Errors:
// ENOENT, ENOTDIR, EEXIST, EINVAL (typ is a directory, a symlink or invalid,
// or newIno is 0 or in use), ENAMETOOLONG.
func (n *Namespace) Create(parent Ino, name string, typ FileType, mode, uid, gid, rdev uint32, newIno Ino, now int64, excl bool) (Attr, syscall.Errno) {
	if !typ.Valid() || typ == TypeDir || typ == TypeSymlink {
		return Attr{}, syscall.EINVAL
	}
	p, d, e := n.newEntryParent(parent, name)
	if e != 0 {
		return Attr{}, e
	}
	if ino := d.lookup(name); ino != 0 {
		i := n.inodes[ino]
		if !excl && typ == TypeFile && i.typ == TypeFile {
			return i.attr(ino), 0
		}
		return Attr{}, syscall.EEXIST
	}
	if e := n.checkNewIno(newIno); e != 0 {
		return Attr{}, e
	}
	i := newInode(typ, mode, uid, gid, now)
	if rdev != 0 && (typ == TypeChar || typ == TypeBlock) {
		i.getExt().rdev = rdev
	}
	n.insert(p, d, name, newIno, i, now)
	return i.attr(newIno), 0
}

// Mkdir makes directory name in parent as inode newIno (nlink 2; the
// parent's nlink grows by one). In a setgid directory the new directory
// gets the parent's group and the setgid bit. ENOENT, ENOTDIR, EEXIST,
// EINVAL, ENAMETOOLONG, EMLINK.
func (n *Namespace) Mkdir(parent Ino, name string, mode, uid, gid uint32, newIno Ino, now int64) (Attr, syscall.Errno) {
	p, d, e := n.newEntryParent(parent, name)
	if e != 0 {
		return Attr{}, e
	}
	if d.lookup(name) != 0 {
		return Attr{}, syscall.EEXIST
	}
	if e := n.checkNewIno(newIno); e != 0 {
		return Attr{}, e
	}
	if p.nlink == math.MaxUint32 {
		return Attr{}, syscall.EMLINK
	}
	i := newInode(TypeDir, mode, uid, gid, now)
	i.nlink = 2
	i.getExt().dir = &dirData{parent: parent, next: FirstCookie}
	n.insert(p, d, name, newIno, i, now)
	p.nlink++
	n.dirs++
	return i.attr(newIno), 0
}

// Symlink makes symbolic link name in parent, pointing to target, as inode
// newIno (mode 0777, size len(target)). ENOENT (also for an empty target),
// ENAMETOOLONG (also for a target longer than MaxSymlink), EINVAL (target
// containing NUL), and as Create.
func (n *Namespace) Symlink(parent Ino, name, target string, uid, gid uint32, newIno Ino, now int64) (Attr, syscall.Errno) {
	switch {
	case target == "":
		return Attr{}, syscall.ENOENT
	case len(target) > n.lim.MaxSymlink:
		return Attr{}, syscall.ENAMETOOLONG
	case strings.IndexByte(target, 0) >= 0:
		return Attr{}, syscall.EINVAL
	}
	p, d, e := n.newEntryParent(parent, name)
	if e != 0 {
		return Attr{}, e
	}
	if d.lookup(name) != 0 {
		return Attr{}, syscall.EEXIST
	}
	if e := n.checkNewIno(newIno); e != 0 {
		return Attr{}, e
	}
	i := newInode(TypeSymlink, 0o777, uid, gid, now)
	i.getExt().target = strings.Clone(target)
	i.size = uint64(len(target))
	n.insert(p, d, name, newIno, i, now)
	return i.attr(newIno), 0
}

// Readlink returns the target of symlink ino. ENOENT, EINVAL if ino is not a
// symlink.
func (n *Namespace) Readlink(ino Ino) (string, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return "", syscall.ENOENT
	}
	if i.typ != TypeSymlink {
		return "", syscall.EINVAL
	}
	return i.ext.target, 0
}

// Link adds the hard link newName in newParent to ino. ENOENT (ino does not
// exist or has no link left, newParent missing or removed), ENOTDIR,
// EEXIST, EINVAL, ENAMETOOLONG, EPERM (ino is a directory), EMLINK.
func (n *Namespace) Link(ino Ino, newParent Ino, newName string, now int64) (Attr, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return Attr{}, syscall.ENOENT
	}
	p, d, e := n.newEntryParent(newParent, newName)
	if e != 0 {
		return Attr{}, e
	}
	switch {
	case d.lookup(newName) != 0:
		return Attr{}, syscall.EEXIST
	case i.typ == TypeDir:
		return Attr{}, syscall.EPERM
	case i.nlink == 0:
		return Attr{}, syscall.ENOENT
	case i.nlink == math.MaxUint32:
		return Attr{}, syscall.EMLINK
	}
	d.add(newName, ino)
	p.modified(now)
	i.nlink++
	i.changed(now)
	return i.attr(ino), 0
}

// Unlink removes the name of a non-directory. When the inode's last link
// goes and no handle has it open, it is freed and the objects it referenced
// that no other file references are returned; if it is open it stays, as an
// orphan, until the last Close.
// ENOENT, ENOTDIR, EISDIR (a directory, "." or ".."), EINVAL, ENAMETOOLONG.
func (n *Namespace) Unlink(parent Ino, name string, now int64) (UnlinkResult, syscall.Errno) {
	p, d, e := n.dirInode(parent)
	if e != 0 {
		return UnlinkResult{}, e
	}
	if isDots(name) {
		return UnlinkResult{}, syscall.EISDIR
	}
	if e := n.checkName(name); e != 0 {
		return UnlinkResult{}, e
	}
	ino := d.lookup(name)
	if ino == 0 {
		return UnlinkResult{}, syscall.ENOENT
	}
	i := n.inodes[ino]
	if i.typ == TypeDir {
		return UnlinkResult{}, syscall.EISDIR
	}
	d.remove(name)
	p.modified(now)
	i.nlink--
	i.changed(now)
	freed, objs := n.maybeFree(ino, i)
	return UnlinkResult{Ino: ino, Freed: freed, Objects: objs}, 0
}

// Rmdir removes the empty directory name from parent. ENOENT, ENOTDIR (also
// if name is not a directory), EINVAL ("."), ENOTEMPTY (".." or a non-empty
// directory), ENAMETOOLONG. A removed directory that is still open stays,
// empty and with nlink 0, until its last Close.
func (n *Namespace) Rmdir(parent Ino, name string, now int64) syscall.Errno {
	p, d, e := n.dirInode(parent)
	if e != 0 {
		return e
	}
	switch name {
	case ".":
		return syscall.EINVAL
	case "..":
		return syscall.ENOTEMPTY
	}
	if e := n.checkName(name); e != 0 {
		return e
	}
	ino := d.lookup(name)
	if ino == 0 {
		return syscall.ENOENT
	}
	c := n.inodes[ino]
	switch {
	case c.typ != TypeDir:
		return syscall.ENOTDIR
	case ino == RootIno:
		return syscall.EBUSY
	case c.ext.dir.live() > 0:
		return syscall.ENOTEMPTY
	}
	d.remove(name)
	p.nlink--
	p.modified(now)
	n.unlinkDir(ino, c, now)
	return 0
}

// unlinkDir marks the empty directory c, whose entry is gone, as removed and
// frees it unless it is open.
func (n *Namespace) unlinkDir(ino Ino, c *inode, now int64) {
	c.nlink = 0
	c.ext.dir.parent = 0
	c.changed(now)
	n.maybeFree(ino, c)
}
