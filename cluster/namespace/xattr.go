package namespace

import (
	"slices"
	"strings"
	"syscall"
)

// xattr is one extended attribute; an inode keeps them sorted by name.
type xattr struct {
	name  string
	value []byte
}

func (i *inode) xattrs() []xattr {
	if i.ext == nil {
		return nil
	}
	return i.ext.xattrs
}

func findXattr(xs []xattr, name string) (int, bool) {
	return slices.BinarySearchFunc(xs, name, func(x xattr, name string) int {
		return strings.Compare(x.name, name)
	})
}

// SetXattr sets extended attribute name of ino to value and sets ctime.
// flags: XattrCreate fails with EEXIST if it exists, XattrReplace with
// ENODATA if it does not. ENOENT, EINVAL (unknown flag), ERANGE (empty name
// or longer than MaxXattrName), E2BIG (value longer than MaxXattrValue),
// ENOSPC (names and values of the inode would pass MaxXattrTotal).
func (n *Namespace) SetXattr(ino Ino, name string, value []byte, flags uint32, now int64) syscall.Errno {
	i := n.inodes[ino]
	if i == nil {
		return syscall.ENOENT
	}
	if flags&^(XattrCreate|XattrReplace) != 0 {
		return syscall.EINVAL
	}
	if name == "" || len(name) > n.lim.MaxXattrName {
		return syscall.ERANGE
	}
	if len(value) > n.lim.MaxXattrValue {
		return syscall.E2BIG
	}
	xs := i.xattrs()
	k, ok := findXattr(xs, name)
	switch {
	case ok && flags&XattrCreate != 0:
		return syscall.EEXIST
	case !ok && flags&XattrReplace != 0:
		return syscall.ENODATA
	}
	size := len(name) + len(value)
	if ok {
		size -= len(xs[k].name) + len(xs[k].value)
	}
	e := i.getExt()
	if e.xsize+size > n.lim.MaxXattrTotal {
		i.shrinkExt()
		return syscall.ENOSPC
	}
	e.xsize += size
	v := append([]byte{}, value...)
	if ok {
		xs[k].value = v
	} else {
		e.xattrs = slices.Insert(xs, k, xattr{name: strings.Clone(name), value: v})
	}
	i.changed(now)
	return 0
}

// GetXattr returns a copy of the value of extended attribute name of ino.
// ENOENT, ENODATA.
func (n *Namespace) GetXattr(ino Ino, name string) ([]byte, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return nil, syscall.ENOENT
	}
	xs := i.xattrs()
	k, ok := findXattr(xs, name)
	if !ok {
		return nil, syscall.ENODATA
	}
	return append([]byte{}, xs[k].value...), 0
}

// ListXattr returns the names of the extended attributes of ino, sorted.
// ENOENT.
func (n *Namespace) ListXattr(ino Ino) ([]string, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return nil, syscall.ENOENT
	}
	xs := i.xattrs()
	names := make([]string, len(xs))
	for k, x := range xs {
		names[k] = x.name
	}
	return names, 0
}

// RemoveXattr removes extended attribute name of ino and sets ctime.
// ENOENT, ENODATA.
func (n *Namespace) RemoveXattr(ino Ino, name string, now int64) syscall.Errno {
	i := n.inodes[ino]
	if i == nil {
		return syscall.ENOENT
	}
	xs := i.xattrs()
	k, ok := findXattr(xs, name)
	if !ok {
		return syscall.ENODATA
	}
	i.ext.xsize -= len(xs[k].name) + len(xs[k].value)
	i.ext.xattrs = slices.Delete(xs, k, k+1)
	if len(i.ext.xattrs) == 0 {
		i.ext.xattrs = nil
	}
	i.shrinkExt()
	i.changed(now)
	return 0
}
