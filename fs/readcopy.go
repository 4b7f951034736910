package fs

import (
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// The copy of a read-leased directory (readlease.go).

// readDir is a directory the mount holds a read lease of, and its copy:
// immutable once published, but for used and the served marks (under
// readLeases.mu). The entries are kept flat: as protobuf messages, a
// million of them took three times the memory.
type readDir struct {
	dir    uint64
	sess   uint64
	self   flatAttr
	ents   []readEnt        // as the service lists them, by cookie
	byName map[string]int32 // index in ents
	byIno  map[uint64]int32 // a child's index in ents
	used   atomic.Int64     // when it last answered (unix ns)
	taken  time.Time        // when it was published
}

// readEnt is an entry of a copy.
type readEnt struct {
	name   string
	cookie uint64
	a      flatAttr
	served bool // the name was given to the kernel
}

// flatAttr is metapb.Attr without a message's overhead.
type flatAttr struct {
	ino, size, version  uint64
	atime, mtime, ctime int64
	mode, uid, gid      uint32
	nlink, rdev         uint32
	typ                 uint8
	served              bool // given to the kernel
}

func flatten(a *metapb.Attr) flatAttr {
	return flatAttr{ino: a.Ino, size: a.Size, version: a.Version, atime: a.Atime, mtime: a.Mtime, ctime: a.Ctime,
		mode: a.Mode, uid: a.Uid, gid: a.Gid, nlink: a.Nlink, rdev: a.Rdev, typ: uint8(a.Type)}
}

func (f *flatAttr) pb() *metapb.Attr {
	return &metapb.Attr{Ino: f.ino, Type: uint32(f.typ), Mode: f.mode, Uid: f.uid, Gid: f.gid, Nlink: f.nlink,
		Size: f.size, Atime: f.atime, Mtime: f.mtime, Ctime: f.ctime, Rdev: f.rdev, Version: f.version}
}

// takeServed returns what the kernel was given from d and clears the
// marks. readLeases.mu is held.
func (d *readDir) takeServed() (names []string, inos []uint64) {
	if d.self.served {
		inos = append(inos, d.dir)
		d.self.served = false
	}
	for i := range d.ents {
		e := &d.ents[i]
		if e.served {
			names = append(names, e.name)
			e.served = false
		}
		if e.a.served {
			inos = append(inos, e.a.ino)
			e.a.served = false
		}
	}
	return names, inos
}

// nextFiles lists up to n regular files that follow ino in the copy that
// holds it (in its listing's order), with content in block 0 only: what a
// reader going through the directory reads next (dataPlane.prefetch).
func (r *readLeases) nextFiles(ino uint64, n int, maxSize uint64) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.byIno[ino]
	if d == nil || d.dir == ino {
		return nil
	}
	var out []uint64
	for j := int(d.byIno[ino]) + 1; j < len(d.ents) && len(out) < n; j++ {
		a := &d.ents[j].a
		if namespace.FileType(a.typ) == namespace.TypeFile && a.size > 0 && a.size <= maxSize {
			out = append(out, a.ino)
		}
	}
	return out
}
