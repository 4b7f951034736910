package namespace

import "slices"

// inode is the in-memory inode. It is kept small (64 bytes) because the
// namespace holds tens of millions of them: the inode number is the map key,
// and everything an empty regular file does not need lives behind ext.
type inode struct {
	size    uint64
	atime   int64
	mtime   int64
	ctime   int64
	version uint64
	uid     uint32
	gid     uint32
	nlink   uint32
	mode    uint16 // PermMask bits
	typ     FileType
	_       uint8
	ext     *inodeExt
}

// inodeExt holds the rarely used parts of an inode.
type inodeExt struct {
	rdev   uint32
	target string    // symlink target
	dir    *dirData  // directories
	file   *fileData // regular files with inline data or slices
	xattrs []xattr   // sorted by name
	xsize  int       // sum of len(name)+len(value) of xattrs
}

func (i *inode) getExt() *inodeExt {
	if i.ext == nil {
		i.ext = &inodeExt{}
	}
	return i.ext
}

// shrinkExt drops ext when nothing is left in it.
func (i *inode) shrinkExt() {
	e := i.ext
	if e == nil {
		return
	}
	if e.file != nil && e.file.empty() {
		e.file = nil
	}
	if e.rdev == 0 && e.target == "" && e.dir == nil && e.file == nil && len(e.xattrs) == 0 {
		i.ext = nil
	}
}

func (i *inode) dir() *dirData {
	if i.ext == nil {
		return nil
	}
	return i.ext.dir
}

func (i *inode) file() *fileData {
	if i.ext == nil {
		return nil
	}
	return i.ext.file
}

func (i *inode) rdev() uint32 {
	if i.ext == nil {
		return 0
	}
	return i.ext.rdev
}

func (i *inode) attr(ino Ino) Attr {
	return Attr{
		Ino:     ino,
		Type:    i.typ,
		Mode:    uint32(i.mode),
		Uid:     i.uid,
		Gid:     i.gid,
		Nlink:   i.nlink,
		Size:    i.size,
		Atime:   i.atime,
		Mtime:   i.mtime,
		Ctime:   i.ctime,
		Rdev:    i.rdev(),
		Version: i.version,
	}
}

// changed records a change of the inode's metadata: ctime and version.
func (i *inode) changed(now int64) {
	i.ctime = now
	i.version++
}

// modified records a change of the inode's content (for a directory: its
// entries): mtime, ctime and version.
func (i *inode) modified(now int64) {
	i.mtime = now
	i.changed(now)
}

// objects returns the objects the inode references, sorted.
func (i *inode) objects() []uint64 {
	f := i.file()
	if f == nil || len(f.refs) == 0 {
		return nil
	}
	out := make([]uint64, 0, len(f.refs))
	for o := range f.refs {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

// newInode returns a fresh inode of type typ with version 1.
func newInode(typ FileType, mode, uid, gid uint32, now int64) *inode {
	return &inode{
		typ:     typ,
		mode:    uint16(mode & PermMask),
		uid:     uid,
		gid:     gid,
		nlink:   1,
		atime:   now,
		mtime:   now,
		ctime:   now,
		version: 1,
	}
}
