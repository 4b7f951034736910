package fuse

import (
	"context"
	"sort"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/fs"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	parent := n.ino()
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	return &dirHandle{core: n.core, ino: n.ino(), parent: parent, seen: n.core.ErrSeq(n.ino())}, 0, 0
}

// dirHandle lists a directory: "." and "..", then the service's entries in
// pages, by its cookies (which stay valid while the directory changes).
// The offset the kernel sees is 1 for ".", 2 for "..", and cookie+2 for an
// entry.
//
// A directory the mount write-leases is listed whole from the lease when
// the listing starts (fs.FS.ReadDir): then the handle keeps that listing
// (whole), numbered by its own cookies, and pages and seeks in it; a
// rewind (seek to the start) lists again.
type dirHandle struct {
	core   *fs.FS
	ino    uint64
	parent uint64
	dots   int    // how many of "." and ".." were returned
	cookie uint64 // the cookie of the last entry returned
	buf    []*metapb.DirEntry
	eof    bool
	whole  []*metapb.DirEntry // the whole listing from the lease, or nil
	seen   uint64             // failures of the directory's changes this descriptor was told of (errseq)
}

const (
	dirPage    = 512
	dotEntries = 2
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	ctx = context.WithoutCancel(ctx) // see uninterruptible
	if d.dots < dotEntries {
		d.dots++
		if d.dots == 1 {
			return &fuse.DirEntry{Name: ".", Ino: d.ino, Mode: syscall.S_IFDIR, Off: 1}, 0
		}
		return &fuse.DirEntry{Name: "..", Ino: d.parent, Mode: syscall.S_IFDIR, Off: 2}, 0
	}
	if len(d.buf) == 0 && !d.eof {
		es, whole, errno := d.core.ReadDir(ctx, d.ino, d.cookie, dirPage)
		if errno != 0 {
			return nil, errno
		}
		if whole {
			d.whole = es
		}
		d.buf = es
		d.eof = whole || len(es) < dirPage
	}
	if len(d.buf) == 0 {
		return nil, 0
	}
	e := d.buf[0]
	d.buf = d.buf[1:]
	d.cookie = e.Cookie
	return &fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: namespace.FileType(e.Type).IFMT(), Off: e.Cookie + dotEntries}, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off < dotEntries {
		d.dots, d.cookie = int(off), 0
		d.buf, d.eof, d.whole = nil, false, nil
		return 0
	}
	d.dots, d.cookie = dotEntries, off-dotEntries
	if d.whole != nil {
		// Within the listing kept (an offset past its end lands at its
		// end).
		i := sort.Search(len(d.whole), func(i int) bool { return d.whole[i].Cookie > d.cookie })
		d.buf, d.eof = d.whole[i:], true
		return 0
	}
	d.buf, d.eof = nil, false
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {}

// Fsyncdir returns once the changes this mount wrote behind are applied
// (the directory's entries among them).
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.core.SyncDir(context.WithoutCancel(ctx), d.ino, &d.seen)
}
