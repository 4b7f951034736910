package fs

import (
	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Reading a directory's files one after another (diff -r, tar, cp -r of a
// tree another mount wrote) asked the service for each file's slices. The
// first read of a file in a read-leased directory asks as well for the
// block 0 of the next files of the directory's copy (SlicesReq.prefetch),
// with the records of their objects; their reads then ask nothing.
//
// A prefetched block 0 is used only for a file whose attributes the mount
// takes from the service (not its own: their versions do not compare), at
// the attribute version it was prefetched at: a change of the file since
// (by another mount: its open then brought the new version; by this
// mount: its commit did) makes it stale, and it is asked again.

// prefetchFiles is how many files one slices query prefetches.
const prefetchFiles = 32

// prefetched holds prefetched block 0s until their file is read, at most
// maxPrefetched (the oldest go first). Its lock is a leaf.
type prefetched struct {
	mu    lockorder.Mutex
	m     map[uint64]*metapb.FileSlices
	order []uint64
}

const maxPrefetched = 1024

func (p *prefetched) init() {
	p.m = map[uint64]*metapb.FileSlices{}
	p.mu.Init(levelPrefetch, "prefetched.mu")
}

// put keeps fs.
func (p *prefetched) put(fs []*metapb.FileSlices) {
	if len(fs) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range fs {
		if _, ok := p.m[f.Ino]; !ok {
			p.order = append(p.order, f.Ino)
		}
		p.m[f.Ino] = f
	}
	for len(p.m) > maxPrefetched {
		delete(p.m, p.order[0])
		p.order = p.order[1:]
	}
	if len(p.order) > 2*maxPrefetched { // taken ones leave holes
		p.order = append([]uint64(nil), p.order[len(p.order)-maxPrefetched:]...)
	}
}

// take removes and returns ino's prefetched block 0, if any.
func (p *prefetched) take(ino uint64) *metapb.FileSlices {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.m[ino]
	delete(p.m, ino)
	return f
}

// absent lists those of inos not held.
func (p *prefetched) absent(inos []uint64) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := inos[:0]
	for _, ino := range inos {
		if _, ok := p.m[ino]; !ok {
			out = append(out, ino)
		}
	}
	return out
}

// fromAhead answers in's block 0 from a prefetch, if one is current (see
// above), and caches it on the inode as a query's answer would be. ver is
// in.cacheVer when the caller found the caches empty.
func (d *dataPlane) fromAhead(in *inode, ver uint64) ([]*metapb.BlockWrite, []byte, bool) {
	f := d.ahead.take(in.ino)
	if f == nil {
		return nil, nil, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb != nil || in.attr == nil || in.attr.Version != f.Version || in.cacheVer != ver || ver != f.Version ||
		len(in.dirty) > 0 || len(in.pending) > 0 {
		return nil, nil, false
	}
	if in.slices == nil {
		in.slices = map[uint64][]*metapb.BlockWrite{}
	}
	in.slices[0] = f.Slices
	in.inline, in.haveInline = f.Inline, true
	return f.Slices, f.Inline, true
}
