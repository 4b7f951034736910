package fs

import "slices"

// A file's written data waiting to be uploaded, per block.

// span is a byte range [lo, hi) within a block.
type span struct{ lo, hi int }

// addSpan inserts [lo, hi) into the sorted, disjoint spans ss, merging
// what touches it.
func addSpan(ss []span, lo, hi int) []span {
	out := ss[:0:0]
	for _, s := range ss {
		switch {
		case s.hi < lo || s.lo > hi:
			out = append(out, s)
		default:
			lo, hi = min(lo, s.lo), max(hi, s.hi)
		}
	}
	out = append(out, span{lo, hi})
	slices.SortFunc(out, func(a, b span) int { return a.lo - b.lo })
	return out
}

// maxSpans bounds the separate dirty ranges of one buffer; past it the
// buffer is uploaded (each range becomes one slice).
const maxSpans = 64

// buf is the written, not yet uploaded data of one block of a file:
// data[i] is the byte at block offset base+i, valid where ext says.
type buf struct {
	block uint64
	sess  uint64 // the session it was written under: committed under it or not at all
	base  int
	data  []byte
	ext   []span // block offsets, sorted and disjoint
	acct  int64  // bytes of the budget it holds
}

func (b *buf) end() int { return b.base + len(b.data) }

// overlay copies the valid bytes of b that fall in [off, off+len(p)) of
// the file into p.
func (b *buf) overlay(p []byte, off int64) {
	bstart := int64(b.block) * BlockSize
	for _, e := range b.ext {
		lo, hi := max(bstart+int64(e.lo), off), min(bstart+int64(e.hi), off+int64(len(p)))
		if lo < hi {
			copy(p[lo-off:hi-off], b.data[lo-bstart-int64(b.base):hi-bstart-int64(b.base)])
		}
	}
}

// growSize is the capacity of a buffer spanning block offsets [lo, hi):
// the next power of two of the span, at least 8 KiB, at most to the end of
// the block, so that appends copy O(log n) times.
func growSize(lo, hi int) int {
	if lo == 0 && hi >= 128<<10 {
		// A large write at the start of a block: a sequential writer.
		// Take the whole block now rather than grow it by copies.
		return BlockSize
	}
	size := 8 << 10
	for size < hi-lo {
		size *= 2
	}
	return min(size, BlockSize-lo)
}

func covers(ss []span, lo, hi int) bool {
	for _, s := range ss {
		if s.lo <= lo && hi <= s.hi {
			return true
		}
	}
	return false
}
