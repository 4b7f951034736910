package namespace

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"slices"
)

// Snapshot encoding (all integers are varints; "u" unsigned, "s" signed):
//
//	magic "ecfsns\x00\x01"
//	limits: u MaxNameLen MaxSymlink MaxXattrName MaxXattrValue MaxXattrTotal InlineMax BlockSize
//	u inode count, then per inode in ascending order:
//	  u ino delta (from the previous ino, the first from 0), byte type, byte flags,
//	  u mode uid gid nlink size, s atime mtime ctime, u version,
//	  symlink: bytes target; dir: u parent, u next cookie, u entry count,
//	    per entry in cookie order: bytes name, u ino, u cookie delta,
//	  flagRdev: u rdev; flagXattrs: u count, per xattr by name: bytes name, bytes value;
//	  flagInline: bytes data; flagBlocks: u block count, per block ascending:
//	    u block delta, u slice count, per slice oldest first: u off len object objoff
//	u handle count, per handle ascending: u handle delta, u ino, u session
//	trailer "end\x00"
//
// where bytes is a u length and the bytes. Every map is written in sorted
// order, tombstones are not written, so equal namespaces encode to equal
// bytes and Digest can compare replicas.
var (
	snapMagic   = []byte("ecfsns\x00\x01")
	snapTrailer = []byte("end\x00")
)

const (
	flagRdev = 1 << iota
	flagXattrs
	flagInline
	flagBlocks
	flagAll = flagRdev | flagXattrs | flagInline | flagBlocks
)

type encoder struct {
	w   io.Writer
	buf []byte
	n   int64
	err error
}

func (e *encoder) u(v uint64)     { e.buf = binary.AppendUvarint(e.buf, v); e.maybeFlush() }
func (e *encoder) s(v int64)      { e.buf = binary.AppendVarint(e.buf, v); e.maybeFlush() }
func (e *encoder) byte(b byte)    { e.buf = append(e.buf, b); e.maybeFlush() }
func (e *encoder) raw(b []byte)   { e.buf = append(e.buf, b...); e.maybeFlush() }
func (e *encoder) bytes(b []byte) { e.u(uint64(len(b))); e.raw(b) }
func (e *encoder) str(s string)   { e.u(uint64(len(s))); e.buf = append(e.buf, s...); e.maybeFlush() }

func (e *encoder) maybeFlush() {
	if len(e.buf) >= 64<<10 {
		e.flush()
	}
}

func (e *encoder) flush() {
	if e.err == nil && len(e.buf) > 0 {
		var k int
		k, e.err = e.w.Write(e.buf)
		e.n += int64(k)
	}
	e.buf = e.buf[:0]
}

// WriteTo writes the whole namespace (limits, inodes, directories with
// their cookie counters, orphans and open handles) to w in a compact,
// deterministic encoding that Read restores exactly.
func (n *Namespace) WriteTo(w io.Writer) (int64, error) {
	e := &encoder{w: w, buf: make([]byte, 0, 64<<10+512)}
	e.raw(snapMagic)
	l := n.lim
	for _, v := range []int{l.MaxNameLen, l.MaxSymlink, l.MaxXattrName, l.MaxXattrValue, l.MaxXattrTotal, l.InlineMax, int(l.BlockSize)} {
		e.u(uint64(v))
	}
	inos := make([]Ino, 0, len(n.inodes))
	for ino := range n.inodes {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	e.u(uint64(len(inos)))
	var prev Ino
	for _, ino := range inos {
		e.u(ino - prev)
		prev = ino
		n.inodes[ino].encode(e)
		if e.err != nil {
			return e.n, e.err
		}
	}
	hs := make([]uint64, 0, len(n.handles))
	for h := range n.handles {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	e.u(uint64(len(hs)))
	var prevH uint64
	for _, h := range hs {
		e.u(h - prevH)
		prevH = h
		e.u(n.handles[h].ino)
		e.u(n.handles[h].session)
	}
	e.raw(snapTrailer)
	e.flush()
	return e.n, e.err
}

func (i *inode) encode(e *encoder) {
	var flags byte
	f := i.file()
	if i.rdev() != 0 {
		flags |= flagRdev
	}
	if len(i.xattrs()) > 0 {
		flags |= flagXattrs
	}
	if f != nil && len(f.inline) > 0 {
		flags |= flagInline
	}
	if f != nil && len(f.blocks) > 0 {
		flags |= flagBlocks
	}
	e.byte(byte(i.typ))
	e.byte(flags)
	e.u(uint64(i.mode))
	e.u(uint64(i.uid))
	e.u(uint64(i.gid))
	e.u(uint64(i.nlink))
	e.u(i.size)
	e.s(i.atime)
	e.s(i.mtime)
	e.s(i.ctime)
	e.u(i.version)
	switch i.typ {
	case TypeSymlink:
		e.str(i.ext.target)
	case TypeDir:
		d := i.ext.dir
		e.u(d.parent)
		e.u(d.next)
		e.u(uint64(d.live()))
		var prev uint64
		for _, de := range d.ents {
			if de.ino == 0 {
				continue
			}
			e.str(de.name)
			e.u(de.ino)
			e.u(de.cookie - prev)
			prev = de.cookie
		}
	}
	if flags&flagRdev != 0 {
		e.u(uint64(i.ext.rdev))
	}
	if flags&flagXattrs != 0 {
		e.u(uint64(len(i.ext.xattrs)))
		for _, x := range i.ext.xattrs {
			e.str(x.name)
			e.bytes(x.value)
		}
	}
	if flags&flagInline != 0 {
		e.bytes(f.inline)
	}
	if flags&flagBlocks != 0 {
		bs := make([]uint64, 0, len(f.blocks))
		for b := range f.blocks {
			bs = append(bs, b)
		}
		slices.Sort(bs)
		e.u(uint64(len(bs)))
		var prev uint64
		for _, b := range bs {
			e.u(b - prev)
			prev = b
			ss := f.blocks[b]
			e.u(uint64(len(ss)))
			for _, s := range ss {
				e.u(uint64(s.Off))
				e.u(uint64(s.Len))
				e.u(s.Object)
				e.u(uint64(s.ObjOff))
			}
		}
	}
}

// Digest is the SHA-256 of the snapshot encoding: replicas that applied the
// same operations have equal digests.
func (n *Namespace) Digest() [32]byte {
	h := sha256.New()
	n.WriteTo(h) // a hash never fails to write
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Equal reports whether n and o hold the same state (same Digest).
func (n *Namespace) Equal(o *Namespace) bool { return n.Digest() == o.Digest() }
