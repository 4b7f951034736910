package namespace

import (
	"math"
	"slices"
	"syscall"
)

// maxFileSize is the largest file size (and content end) accepted.
const maxFileSize = math.MaxInt64

// Namespace is the file system namespace: inodes, directories, content
// slices and open handles. Create one with New or NewWithLimits, or restore
// one with Read.
type Namespace struct {
	lim    Limits
	inodes map[Ino]*inode
	dirs   uint64 // directory inodes in inodes

	// Open tracking. opens counts the handles of each open inode; an inode
	// with nlink 0 stays (as an orphan) while it has any.
	handles  map[uint64]handle
	sessions map[uint64]map[uint64]struct{} // session -> its handles
	opens    map[Ino]uint32

	// objRefs counts, for every object, the files whose slices reference
	// it (entries at 0 are removed). Several files may share an object (a
	// mount packs small files into one), so an object goes to GC only when
	// its count falls to 0. Derived from the files' refs: not in snapshots.
	objRefs map[uint64]uint32
}

type handle struct {
	ino     Ino
	session uint64
}

// New returns a namespace with DefaultLimits holding only the root
// directory (inode 1, nlink 2), owned by uid:gid with permissions rootMode.
func New(rootMode, uid, gid uint32, now int64) *Namespace {
	n, err := NewWithLimits(DefaultLimits(), rootMode, uid, gid, now)
	if err != nil {
		panic(err) // DefaultLimits are valid
	}
	return n
}

// NewWithLimits is New with explicit limits; it fails if lim is invalid.
func NewWithLimits(lim Limits, rootMode, uid, gid uint32, now int64) (*Namespace, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	n := empty(lim)
	root := newInode(TypeDir, rootMode, uid, gid, now)
	root.nlink = 2
	root.getExt().dir = &dirData{parent: RootIno, next: FirstCookie}
	n.inodes[RootIno] = root
	n.dirs = 1
	return n, nil
}

func empty(lim Limits) *Namespace {
	return &Namespace{
		lim:      lim,
		inodes:   make(map[Ino]*inode),
		handles:  make(map[uint64]handle),
		sessions: make(map[uint64]map[uint64]struct{}),
		opens:    make(map[Ino]uint32),
		objRefs:  make(map[uint64]uint32),
	}
}

// Limits returns the limits the namespace enforces.
func (n *Namespace) Limits() Limits { return n.lim }

// Counts returns the number of inodes (including open orphans) and how many
// of them are directories.
func (n *Namespace) Counts() (inodes uint64, dirs uint64) {
	return uint64(len(n.inodes)), n.dirs
}

// GetAttr returns the attributes of ino; ENOENT if it does not exist (or was
// freed). An unlinked file that is still open has nlink 0.
func (n *Namespace) GetAttr(ino Ino) (Attr, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return Attr{}, syscall.ENOENT
	}
	return i.attr(ino), 0
}

// dirInode returns the directory ino: ENOENT if it does not exist, ENOTDIR
// if it is not a directory.
func (n *Namespace) dirInode(ino Ino) (*inode, *dirData, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return nil, nil, syscall.ENOENT
	}
	if i.typ != TypeDir {
		return nil, nil, syscall.ENOTDIR
	}
	return i, i.ext.dir, 0
}

// regular returns the regular file ino: ENOENT, EISDIR for a directory,
// EINVAL for other types.
func (n *Namespace) regular(ino Ino) (*inode, syscall.Errno) {
	i := n.inodes[ino]
	switch {
	case i == nil:
		return nil, syscall.ENOENT
	case i.typ == TypeDir:
		return nil, syscall.EISDIR
	case i.typ != TypeFile:
		return nil, syscall.EINVAL
	}
	return i, 0
}

// checkNewIno rejects an inode number the caller should not have allocated.
func (n *Namespace) checkNewIno(ino Ino) syscall.Errno {
	if ino == 0 || n.inodes[ino] != nil {
		return syscall.EINVAL
	}
	return 0
}

// maybeFree frees ino if it has neither a link nor an open handle, and
// returns whether it did and the objects it referenced that no file
// references any more (sorted).
func (n *Namespace) maybeFree(ino Ino, i *inode) (bool, []uint64) {
	if i.nlink > 0 || n.opens[ino] > 0 {
		return false, nil
	}
	objs := i.objects()
	objs = slices.DeleteFunc(objs, func(o uint64) bool { return !n.deref(o) })
	if len(objs) == 0 {
		objs = nil
	}
	delete(n.inodes, ino)
	if i.typ == TypeDir {
		n.dirs--
	}
	return true, objs
}

// SetInlineMax changes the inline data threshold (0 disables inline data
// for new writes; files that have some keep it). It fails if v is out of
// range (see Limits.Validate).
func (n *Namespace) SetInlineMax(v int) error {
	l := n.lim
	l.InlineMax = v
	if err := l.Validate(); err != nil {
		return err
	}
	n.lim = l
	return nil
}

// StampRoot gives the root directory's times that are still 0 (a new
// namespace is made before anyone read a clock) the bootstrap time now, and
// reports whether it changed any. The FSM calls it with the leader's time
// of the command that initialises the filesystem.
func (n *Namespace) StampRoot(now int64) bool {
	r := n.inodes[RootIno]
	if r == nil || now == 0 || (r.atime != 0 && r.mtime != 0 && r.ctime != 0) {
		return false
	}
	for _, t := range []*int64{&r.atime, &r.mtime, &r.ctime} {
		if *t == 0 {
			*t = now
		}
	}
	r.version++
	return true
}
