package fs

import (
	"github.com/ecfs/ecfs/store"
)

// dataPlane is the files' contents: per-file block buffers under one memory
// budget, their uploads as erasure-coded objects (or inline data) and
// commits, reads with read-ahead and the caches of slices and object
// records, and the reports of bad shards that reads find. It sits above the
// view (a commit of a file made under a lease is written behind) and holds
// no lock of its own but the budget's and the caches' (leaves); it takes
// inodes' mu.
type dataPlane struct {
	*base
	objs     Objects
	pipe     *pipeline
	inodes   *inodeTable
	view     *view
	mem      *budget
	uploads  chan struct{} // slots of objects being stored at once
	pack     *packer       // small buffers written behind, gathered into shared objects (pack.go)
	places   placer
	objCache objectCache
	ahead    prefetched    // block 0 of files read next (prefetch.go)
	asking   chan struct{} // a prefetch running ahead of a walk (prefetchAfter)
	data     fetchedBlocks // whole blocks read, mount-wide (read.go)
	reports  reporter      // bad shards reads found, sent to the healer (report.go)
}

func newDataPlane(b *base, meta Meta, objs Objects, pipe *pipeline, inodes *inodeTable, v *view) *dataPlane {
	d := &dataPlane{base: b, objs: objs, pipe: pipe, inodes: inodes, view: v,
		mem: newBudget(b.cfg.BufferSize),
		// Encoding and shard transfers of a few blocks at once keep the
		// stores busy; more only adds parity buffers and memory.
		uploads: make(chan struct{}, 8),
	}
	d.pack = newPacker(b.scheme.BlockSize)
	d.places.packs.Store(b.packs) // until the next placements say

	d.places.meta = meta
	d.objCache = objectCache{pipe: pipe, scheme: b.scheme, m: map[uint64]*store.Object{}}
	d.objCache.mu.Init(levelObjects, "objectCache.mu")
	d.ahead.init()
	d.asking = make(chan struct{}, 1)
	d.data.init()
	d.places.mu.Init(levelPlacer, "placer.mu")
	d.reports.init(b, meta)
	return d
}
