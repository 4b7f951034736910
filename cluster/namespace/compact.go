package namespace

import (
	"slices"
	"syscall"
)

// SliceCount is the number of slices of block block of file ino (0 if
// none, or not a regular file).
func (n *Namespace) SliceCount(ino Ino, block uint64) int {
	i := n.inodes[ino]
	if i == nil || i.typ != TypeFile {
		return 0
	}
	if f := i.file(); f != nil {
		return len(f.blocks[block])
	}
	return 0
}

// EachFragmented calls fn for every block of every file with at least min
// slices.
func (n *Namespace) EachFragmented(min int, fn func(ino Ino, block uint64)) {
	for ino, i := range n.inodes {
		if i.typ != TypeFile {
			continue
		}
		f := i.file()
		if f == nil {
			continue
		}
		for b, ss := range f.blocks {
			if len(ss) >= min {
				fn(ino, b)
			}
		}
	}
}

// Compactable returns the slices of block block of file ino and the byte
// range [lo, hi) of the block they cover within the file's size, if the
// block may be compacted now: the file is not open anywhere (a mount with
// it open may hold its slices) and the block does not share block 0 with
// inline data.
func (n *Namespace) Compactable(ino Ino, block uint64) (ss []Slice, lo, hi uint32, ok bool) {
	i := n.inodes[ino]
	if i == nil || i.typ != TypeFile || n.opens[ino] > 0 {
		return nil, 0, 0, false
	}
	f := i.file()
	if f == nil || len(f.blocks[block]) == 0 || (block == 0 && len(f.inline) > 0) {
		return nil, 0, 0, false
	}
	bs := uint64(n.lim.BlockSize)
	end := bs
	if i.size < (block+1)*bs {
		end = i.size - block*bs // truncate keeps no slice past the size
	}
	lo, hi = ^uint32(0), 0
	for _, s := range f.blocks[block] {
		lo, hi = min(lo, s.Off), max(hi, s.Off+s.Len)
	}
	hi = uint32(min(uint64(hi), end))
	if hi <= lo {
		return nil, 0, 0, false
	}
	return slices.Clone(f.blocks[block]), lo, hi, true
}

// CompactBlock replaces the slices of block block of file ino by one slice
// of object obj, whose bytes [0, hi-lo) are the block's bytes [lo, hi) as
// the old slices made them (zeros in holes), if the block's slices are
// still expect. The content does not change, so neither do mtime and
// ctime; the version is bumped so caches of the slices are dropped. It
// returns the objects no file references any more (sorted). ESTALE if
// the slices changed since; ENOENT, EISDIR, EINVAL.
func (n *Namespace) CompactBlock(ino Ino, block uint64, expect []Slice, lo, hi uint32, obj uint64) ([]uint64, syscall.Errno) {
	i, e := n.regular(ino)
	if e != 0 {
		return nil, e
	}
	f := i.file()
	if f == nil || !slices.Equal(f.blocks[block], expect) || len(expect) == 0 {
		return nil, syscall.ESTALE
	}
	if hi <= lo || uint64(hi) > uint64(n.lim.BlockSize) || (block == 0 && len(f.inline) > 0) {
		return nil, syscall.EINVAL
	}
	// The new slice must cover every byte the old ones did.
	for _, s := range expect {
		if s.Off < lo || (s.Off+s.Len > hi && block*uint64(n.lim.BlockSize)+uint64(hi) < i.size) {
			return nil, syscall.EINVAL
		}
	}
	f.blocks[block] = []Slice{{Off: lo, Len: hi - lo, Object: obj}}
	n.addRef(f, obj)
	freed := n.unref(f, expect, nil)
	slices.Sort(freed)
	i.version++
	return freed, 0
}
