package fuse

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// invalidator drops what the kernel caches, for the core (fs.Invalidator):
// the kernel's node ids are the inode numbers (Options.ExternalNodeID).
// What the kernel does not know (ENOENT) it does not cache.
type invalidator struct {
	srv  *fuse.Server
	busy *busyDirs
}

// InvalEntries makes the kernel forget names in parent, each once no
// request in parent is in progress (busyDirs), waiting until by at most.
func (k invalidator) InvalEntries(parent uint64, names []string, by time.Time) int {
	for i, name := range names {
		if !k.busy.waitIdle(parent, by) {
			return i
		}
		k.srv.EntryNotify(parent, name)
	}
	return len(names)
}

// InvalAttr makes the kernel ask for ino's attributes again (its cached
// pages stay: opens decide about them). The kernel takes no lock of a
// request's for it.
func (k invalidator) InvalAttr(ino uint64) { k.srv.InodeNotify(ino, -1, 0) }
