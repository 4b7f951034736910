package namespace

import (
	"slices"
	"sort"
	"syscall"
)

// fileData is the content of a regular file: inline bytes (the first
// len(inline) bytes of the file, below every slice) and, per block, slices
// from oldest to newest. refs counts the file's slices referencing each
// object; an object entering or leaving refs counts in the namespace's
// objRefs, so that an object no file references any more can be handed to
// GC.
type fileData struct {
	inline []byte
	blocks map[uint64][]Slice
	refs   map[uint64]uint32
}

func (f *fileData) empty() bool { return len(f.inline) == 0 && len(f.blocks) == 0 }

func (i *inode) getFile() *fileData {
	e := i.getExt()
	if e.file == nil {
		e.file = &fileData{}
	}
	return e.file
}

// addRef counts one more slice of f referencing object obj (f.refs exists).
func (n *Namespace) addRef(f *fileData, obj uint64) {
	if f.refs[obj]++; f.refs[obj] == 1 {
		n.ref(obj)
	}
}

// unref drops one reference of f to each slice's object and appends to
// freed the objects no file references any more.
func (n *Namespace) unref(f *fileData, ss []Slice, freed []uint64) []uint64 {
	for _, s := range ss {
		if f.refs[s.Object]--; f.refs[s.Object] == 0 {
			delete(f.refs, s.Object)
			if n.deref(s.Object) {
				freed = append(freed, s.Object)
			}
		}
	}
	return freed
}

// CommitSlices appends the slices of writes to their blocks, atomically with
// the new size, max(size, newSize, end of every write), and mtime/ctime =
// now. Slices that newer ones now shadow entirely are dropped, as is inline
// data the new slices cover; the objects no file references any more are
// returned (sorted). ENOENT, EISDIR, EINVAL (not a regular
// file, an empty slice, or one past the block), EFBIG.
func (n *Namespace) CommitSlices(ino Ino, writes []BlockWrite, newSize uint64, now int64) (Attr, []uint64, syscall.Errno) {
	i, e := n.regular(ino)
	if e != 0 {
		return Attr{}, nil, e
	}
	bs := uint64(n.lim.BlockSize)
	size := max(i.size, newSize)
	if newSize > maxFileSize {
		return Attr{}, nil, syscall.EFBIG
	}
	for _, w := range writes {
		s := w.Slice
		if s.Len == 0 || uint64(s.Off)+uint64(s.Len) > bs {
			return Attr{}, nil, syscall.EINVAL
		}
		if w.Block > (maxFileSize-uint64(s.Off)-uint64(s.Len))/bs {
			return Attr{}, nil, syscall.EFBIG
		}
		size = max(size, w.Block*bs+uint64(s.Off)+uint64(s.Len))
	}
	var freed []uint64
	if len(writes) > 0 {
		f := i.getFile()
		if f.blocks == nil {
			f.blocks = make(map[uint64][]Slice)
			f.refs = make(map[uint64]uint32)
		}
		var touched []uint64
		for _, w := range writes {
			if !slices.Contains(touched, w.Block) {
				touched = append(touched, w.Block)
			}
			f.blocks[w.Block] = append(f.blocks[w.Block], w.Slice)
			n.addRef(f, w.Slice.Object)
		}
		for _, b := range touched {
			kept, dropped, cov := prune(f.blocks[b])
			f.blocks[b] = kept
			freed = n.unref(f, dropped, freed)
			if b == 0 && len(f.inline) > 0 && covered(cov, 0, uint64(len(f.inline))) {
				f.inline = nil
			}
		}
		slices.Sort(freed)
	}
	i.size = size
	i.modified(now)
	return i.attr(ino), freed, 0
}

// Slices returns a copy of the slices of block block of file ino, oldest
// first (nil if none). ENOENT, EISDIR, EINVAL (not a regular file).
func (n *Namespace) Slices(ino Ino, block uint64) ([]Slice, syscall.Errno) {
	i, e := n.regular(ino)
	if e != 0 {
		return nil, e
	}
	f := i.file()
	if f == nil {
		return nil, 0
	}
	return slices.Clone(f.blocks[block]), 0
}

// WriteInline writes data at off into the inline data of file ino, growing
// the size to off+len(data) if that is more, and sets mtime/ctime. Bytes
// between the old end of the inline data and off read as zeros. It converts
// nothing: EFBIG if off+len(data) > InlineMax, and EINVAL if the file
// already has slices (its content lives in objects; the caller writes
// there). ENOENT, EISDIR, EINVAL (not a regular file).
func (n *Namespace) WriteInline(ino Ino, off uint64, data []byte, now int64) (Attr, syscall.Errno) {
	i, e := n.regular(ino)
	if e != 0 {
		return Attr{}, e
	}
	end := off + uint64(len(data))
	if end < off || end > uint64(n.lim.InlineMax) {
		return Attr{}, syscall.EFBIG
	}
	if f := i.file(); f != nil && len(f.blocks) > 0 {
		return Attr{}, syscall.EINVAL
	}
	if len(data) == 0 {
		return i.attr(ino), 0
	}
	f := i.getFile()
	if end > uint64(len(f.inline)) {
		f.inline = slices.Grow(f.inline, int(end)-len(f.inline))[:end]
	}
	copy(f.inline[off:], data)
	i.size = max(i.size, end)
	i.modified(now)
	return i.attr(ino), 0
}

// ReadInline returns a copy of the inline data of file ino: the first bytes
// of the file (bytes past it up to the size are zeros or come from slices).
// ENOENT, EISDIR, EINVAL (not a regular file).
func (n *Namespace) ReadInline(ino Ino) ([]byte, syscall.Errno) {
	i, e := n.regular(ino)
	if e != 0 {
		return nil, e
	}
	f := i.file()
	if f == nil {
		return nil, 0
	}
	return slices.Clone(f.inline), 0
}

// truncate drops the content of regular file i past size and returns the
// objects no file references any more (sorted).
func (n *Namespace) truncate(i *inode, size uint64) []uint64 {
	f := i.file()
	if f == nil || size >= i.size {
		return nil
	}
	if uint64(len(f.inline)) > size {
		f.inline = slices.Clone(f.inline[:size])
	}
	bs := uint64(n.lim.BlockSize)
	var freed []uint64
	for b, ss := range f.blocks {
		start := b * bs
		switch {
		case start >= size:
			freed = n.unref(f, ss, freed)
			delete(f.blocks, b)
		case size-start < bs:
			cut := uint32(size - start)
			kept := ss[:0:0]
			var dropped []Slice
			for _, s := range ss {
				switch {
				case s.Off >= cut:
					dropped = append(dropped, s)
				case s.Off+s.Len > cut:
					s.Len = cut - s.Off
					kept = append(kept, s)
				default:
					kept = append(kept, s)
				}
			}
			// Trimmed slices may now be shadowed by trimmed newer ones.
			kept, shadowed, _ := prune(kept)
			freed = n.unref(f, append(dropped, shadowed...), freed)
			if len(kept) == 0 {
				delete(f.blocks, b)
			} else {
				f.blocks[b] = kept
			}
		}
	}
	if len(f.blocks) == 0 {
		f.blocks, f.refs = nil, nil
	}
	i.shrinkExt()
	slices.Sort(freed)
	return freed
}

// span is a half-open byte range [lo, hi) within a block.
type span struct{ lo, hi uint64 }

// prune drops the slices of ss (oldest first) that newer slices shadow
// entirely. It returns the slices kept, in order, those dropped, and the
// union of all of them as sorted disjoint spans.
func prune(ss []Slice) (kept, dropped []Slice, cov []span) {
	keep := make([]bool, len(ss))
	n := 0
	for k := len(ss) - 1; k >= 0; k-- {
		lo, hi := uint64(ss[k].Off), uint64(ss[k].Off)+uint64(ss[k].Len)
		if covered(cov, lo, hi) {
			continue
		}
		keep[k] = true
		n++
		cov = addSpan(cov, lo, hi)
	}
	if n == len(ss) {
		return ss, nil, cov
	}
	kept = make([]Slice, 0, n)
	for k, s := range ss {
		if keep[k] {
			kept = append(kept, s)
		} else {
			dropped = append(dropped, s)
		}
	}
	return kept, dropped, cov
}

// covered reports whether [lo, hi) lies within one span of cov.
func covered(cov []span, lo, hi uint64) bool {
	k := sort.Search(len(cov), func(k int) bool { return cov[k].hi > lo })
	return k < len(cov) && cov[k].lo <= lo && cov[k].hi >= hi
}

// addSpan adds [lo, hi) to cov, merging the spans it overlaps or touches.
func addSpan(cov []span, lo, hi uint64) []span {
	a := sort.Search(len(cov), func(k int) bool { return cov[k].hi >= lo })
	b := a
	for b < len(cov) && cov[b].lo <= hi {
		lo, hi = min(lo, cov[b].lo), max(hi, cov[b].hi)
		b++
	}
	return slices.Replace(cov, a, b, span{lo, hi})
}
