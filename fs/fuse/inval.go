package fuse

import (
	"sync"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// tree finds the go-fuse inode of an inode number, for the core's
// invalidations of what the kernel caches (fs.Invalidator).
type tree struct {
	nodes sync.Map // inode number -> *fusefs.Inode the kernel knows
}

// InvalEntry makes the kernel forget name in parent (if it knows parent).
func (t *tree) InvalEntry(parent uint64, name string) {
	if v, ok := t.nodes.Load(parent); ok {
		_ = v.(*fusefs.Inode).NotifyEntry(name)
	}
}

// InvalAttr makes the kernel ask for ino's attributes again (its cached
// pages stay: opens decide about them).
func (t *tree) InvalAttr(ino uint64) {
	if v, ok := t.nodes.Load(ino); ok {
		_ = v.(*fusefs.Inode).NotifyContent(-1, 0)
	}
}
