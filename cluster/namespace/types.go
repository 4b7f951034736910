// Package namespace is the namespace half of the ecfs Raft state machine:
// inodes, directory entries, symlinks, extended attributes, the slices that
// make up file content, inline data of small files, and open-file tracking.
//
// Everything here is pure and deterministic: no I/O, no clock, no randomness
// and no goroutines. The caller (the FSM adapter that decodes Raft log
// entries) passes times in nanoseconds and newly allocated inode numbers, so
// that every replica applying the same sequence of calls reaches the same
// state, byte for byte (see Digest).
//
// Methods return syscall.Errno values (0 is success) chosen to match what
// Linux (ext4) returns for the same operation. Permission checks are not done
// here: the kernel does them (default_permissions).
//
// A Namespace is not safe for concurrent use; the FSM serialises calls.
package namespace

import (
	"errors"
	"fmt"
	"syscall"
)

// Ino is an inode number. 0 is never a valid inode.
type Ino = uint64

// RootIno is the inode number of the root directory.
const RootIno Ino = 1

// FileType is the type of an inode. The zero value is invalid.
type FileType uint8

// File types. The numbers are part of the snapshot encoding: never reuse them.
const (
	TypeFile FileType = iota + 1
	TypeDir
	TypeSymlink
	TypeFifo
	TypeSocket
	TypeChar
	TypeBlock
)

// IFMT returns the S_IFMT bits of t (S_IFREG, S_IFDIR, ...), 0 if t is invalid.
func (t FileType) IFMT() uint32 {
	switch t {
	case TypeFile:
		return syscall.S_IFREG
	case TypeDir:
		return syscall.S_IFDIR
	case TypeSymlink:
		return syscall.S_IFLNK
	case TypeFifo:
		return syscall.S_IFIFO
	case TypeSocket:
		return syscall.S_IFSOCK
	case TypeChar:
		return syscall.S_IFCHR
	case TypeBlock:
		return syscall.S_IFBLK
	}
	return 0
}

// Valid reports whether t is one of the defined types.
func (t FileType) Valid() bool { return t >= TypeFile && t <= TypeBlock }

func (t FileType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeFifo:
		return "fifo"
	case TypeSocket:
		return "socket"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	}
	return fmt.Sprintf("FileType(%d)", uint8(t))
}

// PermMask is the part of a mode this package stores: permission bits plus
// setuid, setgid and sticky.
const PermMask = 0o7777

// Attr is a copy of an inode's attributes.
type Attr struct {
	Ino   Ino
	Type  FileType
	Mode  uint32 // permission bits incl. setuid/setgid/sticky (PermMask)
	Uid   uint32
	Gid   uint32
	Nlink uint32
	Size  uint64
	Atime int64 // ns
	Mtime int64 // ns
	Ctime int64 // ns
	Rdev  uint32
	// Version is bumped on every change to the inode (cache validation).
	Version uint64
}

// FullMode returns the mode with its S_IFMT type bits, as stat(2) reports it.
func (a Attr) FullMode() uint32 { return a.Type.IFMT() | a.Mode }

// Slice is a piece of a block's content: Len bytes at offset Off within the
// block are bytes ObjOff.. of object Object. In a block's list, newer slices
// (later in the list) shadow older ones.
type Slice struct {
	Off    uint32
	Len    uint32
	Object uint64
	ObjOff uint32
}

// BlockWrite is one slice committed to block Block of a file.
type BlockWrite struct {
	Block uint64
	Slice Slice
}

// DirEntry is one entry returned by ReadDir.
type DirEntry struct {
	Name   string
	Ino    Ino
	Type   FileType
	Cookie uint64 // pass it back to ReadDir to continue after this entry
}

// FirstCookie is the smallest cookie a directory entry gets. Cookies 1 and 2
// are left to the caller for "." and "..", and 0 means "from the start".
const FirstCookie = 3

// SetAttr Valid bits.
const (
	SetMode uint32 = 1 << iota
	SetUid
	SetGid
	SetSize
	SetAtime    // Atime from SetAttrIn.Atime
	SetMtime    // Mtime from SetAttrIn.Mtime
	SetAtimeNow // Atime = now
	SetMtimeNow // Mtime = now
	SetCtime    // Ctime from SetAttrIn.Ctime instead of now
)

const setAttrAll = SetMode | SetUid | SetGid | SetSize | SetAtime | SetMtime |
	SetAtimeNow | SetMtimeNow | SetCtime

// SetAttrIn says which attributes SetAttr changes (Valid) and to what.
type SetAttrIn struct {
	Valid uint32
	Mode  uint32
	Uid   uint32
	Gid   uint32
	Size  uint64
	Atime int64
	Mtime int64
	Ctime int64
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace uint32 = 1
	RenameExchange  uint32 = 2
)

// SetXattr flags, as setxattr(2).
const (
	XattrCreate  uint32 = 1
	XattrReplace uint32 = 2
)

// UnlinkResult says what Unlink did to the inode the name referred to.
type UnlinkResult struct {
	Ino   Ino  // the inode whose link was removed
	Freed bool // it had no link and no open handle left and is gone
	// Objects are the objects the freed inode referenced that no other file
	// references (sorted), for the GC queue.
	Objects []uint64
}

// RenameResult says what Rename did to an inode it replaced.
type RenameResult struct {
	Replaced Ino      // the inode the target name referred to before, 0 if none
	Freed    bool     // the replaced inode had no link and no open handle left
	Objects  []uint64 // as UnlinkResult.Objects, of the replaced inode
}

// CloseResult says which orphans a Close or CloseSession freed.
type CloseResult struct {
	Freed bool  // at least one inode was freed
	Inos  []Ino // the freed inodes, ascending
	// Objects are the objects the freed inodes referenced that no file
	// references any more (sorted).
	Objects []uint64
}

// Limits bound names, symlinks, xattrs and inline data, and fix the block
// size. Every replica must use the same Limits; they are part of snapshots.
type Limits struct {
	MaxNameLen    int    // bytes in a name; default 255
	MaxSymlink    int    // bytes in a symlink target; default 4095
	MaxXattrName  int    // bytes in an xattr name; default 255
	MaxXattrValue int    // bytes in one xattr value; default 65536
	MaxXattrTotal int    // names plus values of one inode; default 1 MiB
	InlineMax     int    // bytes of inline data per file; default 16 KiB, 0 disables
	BlockSize     uint32 // file content block size; default 4 MiB
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxNameLen:    255,
		MaxSymlink:    4095,
		MaxXattrName:  255,
		MaxXattrValue: 65536,
		MaxXattrTotal: 1 << 20,
		InlineMax:     16 << 10,
		BlockSize:     4 << 20,
	}
}

// maxLimit bounds every Limits field so that snapshots can be decoded safely.
const maxLimit = 1 << 30

// ErrLimits is returned for invalid Limits.
var ErrLimits = errors.New("namespace: invalid limits")

// Validate checks that every limit is in range.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name      string
		v, lo, hi int
	}{
		{"MaxNameLen", l.MaxNameLen, 1, 4096},
		{"MaxSymlink", l.MaxSymlink, 1, maxLimit},
		{"MaxXattrName", l.MaxXattrName, 1, 4096},
		{"MaxXattrValue", l.MaxXattrValue, 0, maxLimit},
		{"MaxXattrTotal", l.MaxXattrTotal, 0, maxLimit},
		{"InlineMax", l.InlineMax, 0, maxLimit},
		{"BlockSize", int(l.BlockSize), 1, 1 << 31},
	} {
		if f.v < f.lo || f.v > f.hi {
			return fmt.Errorf("%w: %s=%d not in [%d, %d]", ErrLimits, f.name, f.v, f.lo, f.hi)
		}
	}
	return nil
}
