package fuse

import "github.com/hanwen/go-fuse/v2/fuse"

// invalidator drops what the kernel caches, for the core (fs.Invalidator):
// the kernel's node ids are the inode numbers (Options.ExternalNodeID).
// What the kernel does not know (ENOENT) it does not cache.
type invalidator struct{ srv *fuse.Server }

// InvalEntry makes the kernel forget name in parent.
func (k invalidator) InvalEntry(parent uint64, name string) { k.srv.EntryNotify(parent, name) }

// InvalAttr makes the kernel ask for ino's attributes again (its cached
// pages stay: opens decide about them).
func (k invalidator) InvalAttr(ino uint64) { k.srv.InodeNotify(ino, -1, 0) }
