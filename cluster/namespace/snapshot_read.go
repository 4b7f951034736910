package namespace

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrCorrupt is returned (wrapped) by Read for a snapshot that is truncated,
// malformed, or describes an inconsistent namespace.
var ErrCorrupt = errors.New("namespace: corrupt snapshot")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

type decoder struct {
	r   *bufio.Reader
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		d.err = err
	}
}

func (d *decoder) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.r)
	if err != nil {
		d.fail(err)
	}
	return v
}

// nonZero reads an unsigned varint that must not be 0.
func (d *decoder) nonZero(what string) uint64 {
	v := d.u()
	if v == 0 {
		d.fail(corrupt("%s is 0", what))
	}
	return v
}

// bounded reads an unsigned varint that must not exceed max.
func (d *decoder) bounded(max uint64, what string) uint64 {
	v := d.u()
	if v > max {
		d.fail(corrupt("%s %d > %d", what, v, max))
		return 0
	}
	return v
}

func (d *decoder) s() int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(d.r)
	if err != nil {
		d.fail(err)
	}
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	b, err := d.r.ReadByte()
	if err != nil {
		d.fail(err)
	}
	return b
}

// bytes reads a length-prefixed byte string of at most max bytes.
func (d *decoder) bytes(limit int, what string) []byte {
	n := d.bounded(uint64(limit), what+" length")
	if d.err != nil {
		return nil
	}
	// Grow the buffer as data arrives, so that a corrupt length cannot make
	// Read allocate much more than the input holds.
	b := make([]byte, 0, min(n, 64<<10))
	for uint64(len(b)) < n && d.err == nil {
		k := len(b)
		b = append(b, make([]byte, min(n-uint64(k), uint64(max(k, 64<<10))))...)
		if _, err := io.ReadFull(d.r, b[k:]); err != nil {
			d.fail(err)
		}
	}
	return b
}

func (d *decoder) expect(want []byte, what string) {
	if d.err != nil {
		return
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(d.r, got); err != nil {
		d.fail(err)
	} else if !bytes.Equal(got, want) {
		d.fail(corrupt("bad %s", what))
	}
}

// Read restores a namespace written by WriteTo. It reads r to its end and
// fails, wrapping ErrCorrupt, on anything but exactly one valid snapshot,
// including one whose structure is inconsistent (dangling entries, wrong
// link counts, cycles...). It never panics.
func Read(r io.Reader) (*Namespace, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 64<<10)}
	d.expect(snapMagic, "magic")
	var l Limits
	for _, p := range []*int{&l.MaxNameLen, &l.MaxSymlink, &l.MaxXattrName, &l.MaxXattrValue, &l.MaxXattrTotal, &l.InlineMax} {
		*p = int(d.bounded(maxLimit, "limit"))
	}
	l.BlockSize = uint32(d.bounded(1<<31, "block size"))
	if d.err != nil {
		return nil, d.err
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	n := empty(l)
	count := d.u()
	var ino Ino
	for k := uint64(0); k < count && d.err == nil; k++ {
		delta := d.u()
		if delta == 0 || ino+delta < ino {
			d.fail(corrupt("inode numbers not ascending"))
			break
		}
		ino += delta
		i := n.decodeInode(d)
		n.inodes[ino] = i
		if i != nil && i.typ == TypeDir {
			n.dirs++
		}
	}
	count = d.u()
	var h uint64
	for k := uint64(0); k < count && d.err == nil; k++ {
		delta := d.u()
		if delta == 0 || h+delta < h {
			d.fail(corrupt("handles not ascending"))
			break
		}
		h += delta
		ino, session := d.u(), d.u()
		if d.err == nil && n.inodes[ino] == nil {
			d.fail(corrupt("handle %d of missing inode %d", h, ino))
		}
		n.addHandle(h, ino, session)
	}
	d.expect(snapTrailer, "trailer")
	if d.err != nil {
		return nil, d.err
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		if err == nil {
			return nil, corrupt("data after the trailer")
		}
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := n.check(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Namespace) decodeInode(d *decoder) *inode {
	l := n.lim
	typ := FileType(d.byte())
	flags := d.byte()
	if d.err != nil {
		return nil
	}
	if !typ.Valid() || flags&^flagAll != 0 {
		d.fail(corrupt("bad type %d or flags %#x", typ, flags))
		return nil
	}
	i := &inode{typ: typ}
	i.mode = uint16(d.bounded(PermMask, "mode"))
	i.uid = uint32(d.bounded(math.MaxUint32, "uid"))
	i.gid = uint32(d.bounded(math.MaxUint32, "gid"))
	i.nlink = uint32(d.bounded(math.MaxUint32, "nlink"))
	i.size = d.bounded(maxFileSize, "size")
	i.atime, i.mtime, i.ctime = d.s(), d.s(), d.s()
	i.version = d.u()
	switch typ {
	case TypeSymlink:
		i.getExt().target = string(d.bytes(l.MaxSymlink, "symlink target"))
	case TypeDir:
		dd := &dirData{parent: d.u(), next: d.u()}
		i.getExt().dir = dd
		count := d.u()
		var cookie uint64
		for k := uint64(0); k < count && d.err == nil; k++ {
			name := string(d.bytes(l.MaxNameLen, "name"))
			ino := d.u()
			delta := d.u()
			if d.err == nil && (delta == 0 || cookie+delta < cookie) {
				d.fail(corrupt("cookies not ascending"))
			}
			cookie += delta
			dd.ents = append(dd.ents, dentry{name: name, ino: ino, cookie: cookie})
		}
		if len(dd.ents) > smallDir {
			dd.reindex()
		}
	}
	if flags&flagRdev != 0 {
		rdev := d.nonZero("rdev")
		if rdev > math.MaxUint32 {
			d.fail(corrupt("rdev %d", rdev))
		}
		i.getExt().rdev = uint32(rdev)
	}
	if flags&flagXattrs != 0 {
		count := d.nonZero("xattr count")
		e := i.getExt()
		for k := uint64(0); k < count && d.err == nil; k++ {
			name := string(d.bytes(l.MaxXattrName, "xattr name"))
			value := d.bytes(l.MaxXattrValue, "xattr value")
			e.xattrs = append(e.xattrs, xattr{name: name, value: value})
			e.xsize += len(name) + len(value)
			if e.xsize > l.MaxXattrTotal {
				d.fail(corrupt("xattrs too large"))
			}
		}
	}
	if flags&flagInline != 0 {
		i.getFile().inline = d.bytes(l.InlineMax, "inline data")
		if d.err == nil && len(i.ext.file.inline) == 0 {
			d.fail(corrupt("empty inline data"))
		}
	}
	if flags&flagBlocks != 0 {
		f := i.getFile()
		f.blocks = make(map[uint64][]Slice)
		f.refs = make(map[uint64]uint32)
		count := d.nonZero("block count")
		var b uint64
		for k := uint64(0); k < count && d.err == nil; k++ {
			delta := d.u()
			if k > 0 && delta == 0 || b+delta < b {
				d.fail(corrupt("blocks not ascending"))
			}
			b += delta
			ns := d.u()
			var ss []Slice
			for j := uint64(0); j < ns && d.err == nil; j++ {
				s := Slice{
					Off:    uint32(d.bounded(math.MaxUint32, "slice offset")),
					Len:    uint32(d.bounded(math.MaxUint32, "slice length")),
					Object: d.u(),
					ObjOff: uint32(d.bounded(math.MaxUint32, "object offset")),
				}
				ss = append(ss, s)
				n.addRef(f, s.Object)
			}
			f.blocks[b] = ss
		}
	}
	return i
}
