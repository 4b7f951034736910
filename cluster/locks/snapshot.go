package locks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Snapshot format, version 1:
//
//	magic    "ecfslk" 0x00 0x01   8 bytes, the last one the version
//	length   uint64 big endian    length of body
//	body
//	sum      SHA-256 of body      32 bytes, which is also Digest()
//
// body, every integer an unsigned varint in its shortest form:
//
//	token, inode count, then per inode in ascending order:
//	  ino
//	  POSIX count, per lock (by owner, then start): session, id, start, end, type, token
//	  flock count, per lock (by owner):              session, id, type, token
//	  waiter count, per waiter (oldest first):       req id, kind, session, id, start, end, type
//	then, only if one of them is not 0, the pids: per inode in ascending order,
//	  per POSIX lock, then per waiter, in the order above: pid
//
// (Snapshots written before locks recorded pids have no pids: they decode
// with every pid 0.)
// The encoding of a state is unique, and the decoder accepts nothing else:
// a body that is not the encoding of a reachable-looking state (sorted,
// merged, without conflicts, without a grantable waiter) is ErrCorrupt.
const magic = "ecfslk\x00\x01"

// maxBody bounds the length field, so that a corrupt one fails early; the
// body itself is read as it arrives, never allocated from the length alone.
const maxBody = 1 << 40

// WriteTo writes a snapshot of the table to w. The same state always
// gives the same bytes.
func (t *Table) WriteTo(w io.Writer) (int64, error) {
	body := t.encode()
	sum := sha256.Sum256(body)
	buf := make([]byte, 0, len(magic)+8+len(body)+len(sum))
	buf = append(buf, magic...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(body)))
	buf = append(buf, body...)
	buf = append(buf, sum[:]...)
	n, err := w.Write(buf)
	if err != nil {
		return int64(n), fmt.Errorf("locks: write snapshot: %w", err)
	}
	return int64(n), nil
}

// Digest returns the SHA-256 of the table's canonical encoding: replicas in
// the same state have the same digest.
func (t *Table) Digest() [32]byte { return sha256.Sum256(t.encode()) }

// ReadTable reads a snapshot written by WriteTo, consuming exactly its bytes
// from r. A truncated, altered or inconsistent snapshot is an error wrapping
// ErrCorrupt; an error of r is returned wrapped.
func ReadTable(r io.Reader) (*Table, error) {
	var hdr [len(magic) + 8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, readErr("header", err)
	}
	if string(hdr[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic or version %q", ErrCorrupt, hdr[:len(magic)])
	}
	n := binary.BigEndian.Uint64(hdr[len(magic):])
	if n > maxBody {
		return nil, fmt.Errorf("%w: body length %d", ErrCorrupt, n)
	}
	var body bytes.Buffer
	if _, err := io.CopyN(&body, r, int64(n)); err != nil {
		return nil, readErr("body", err)
	}
	var sum [sha256.Size]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return nil, readErr("checksum", err)
	}
	if sha256.Sum256(body.Bytes()) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	return decode(body.Bytes())
}

func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	return fmt.Errorf("locks: read snapshot %s: %w", what, err)
}

// encode returns the canonical body.
func (t *Table) encode() []byte {
	var b []byte
	u := func(v uint64) { b = binary.AppendUvarint(b, v) }
	u(t.token)
	u(uint64(len(t.inodes)))
	for _, ino := range t.sortedInos() {
		in := t.inodes[ino]
		u(ino)
		u(uint64(len(in.posix)))
		for _, s := range in.posix {
			u(s.owner.Session)
			u(s.owner.ID)
			u(s.r.Start)
			u(s.r.End)
			u(uint64(s.typ))
			u(s.token)
		}
		u(uint64(len(in.flocks)))
		for _, s := range in.flocks {
			u(s.owner.Session)
			u(s.owner.ID)
			u(uint64(s.typ))
			u(s.token)
		}
		u(uint64(len(in.queue)))
		for _, w := range in.queue {
			u(w.reqID)
			u(uint64(w.kind))
			u(w.owner.Session)
			u(w.owner.ID)
			u(w.r.Start)
			u(w.r.End)
			u(uint64(w.typ))
		}
	}
	if t.hasPids() {
		for _, ino := range t.sortedInos() {
			in := t.inodes[ino]
			for _, s := range in.posix {
				u(uint64(s.pid))
			}
			for _, w := range in.queue {
				u(uint64(w.pid))
			}
		}
	}
	return b
}

// hasPids reports whether a lock or a waiter has a pid.
func (t *Table) hasPids() bool {
	for _, in := range t.inodes {
		for _, s := range in.posix {
			if s.pid != 0 {
				return true
			}
		}
		for _, w := range in.queue {
			if w.pid != 0 {
				return true
			}
		}
	}
	return false
}

// pids reads the pid list that follows the inodes.
func (d *decoder) pids(t *Table) {
	if d.err != nil || len(d.b) == 0 {
		return
	}
	var any bool
	pid := func() uint32 {
		v := d.uvarint()
		if v > math.MaxUint32 {
			d.fail("pid %d out of range", v)
		}
		any = any || v != 0
		return uint32(v)
	}
	for _, ino := range t.sortedInos() {
		in := t.inodes[ino]
		for i := range in.posix {
			in.posix[i].pid = pid()
		}
		for _, w := range in.queue {
			w.pid = pid()
		}
	}
	if !any {
		d.fail("a pid list of zeros")
	}
}

// decoder reads varints from a body; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail("truncated body")
		return 0
	case n < 0:
		d.fail("varint overflow")
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail("varint not in shortest form")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of items, each of which takes at least one byte.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("count %d exceeds the body", n)
		return 0
	}
	return int(n)
}

// small reads a type or a kind.
func (d *decoder) small() uint8 {
	v := d.uvarint()
	if v > 0xff {
		d.fail("type %d out of range", v)
		return 0
	}
	return uint8(v)
}

func (d *decoder) owner() Owner { return Owner{Session: d.uvarint(), ID: d.uvarint()} }

// decode parses and checks a body.
func decode(b []byte) (*Table, error) {
	d := &decoder{b: b}
	t := New()
	t.token = d.uvarint()
	n := d.count()
	var prev uint64
	for i := 0; i < n && d.err == nil; i++ {
		ino := d.uvarint()
		if i > 0 && ino <= prev {
			d.fail("inode %d after %d", ino, prev)
		}
		prev = ino
		in := &inode{ino: ino}
		t.inodes[ino] = in
		np := d.count()
		for j := 0; j < np && d.err == nil; j++ {
			o := d.owner()
			r := Range{Start: d.uvarint(), End: d.uvarint()}
			in.posix = append(in.posix, seg{owner: o, r: r, typ: LockType(d.small()), token: d.uvarint()})
			if t.posixInos[o] == nil {
				t.posixInos[o] = make(map[uint64]bool)
			}
			t.posixInos[o][ino] = true
		}
		nf := d.count()
		for j := 0; j < nf && d.err == nil; j++ {
			o := d.owner()
			in.flocks = append(in.flocks, seg{owner: o, r: wholeFile, typ: LockType(d.small()), token: d.uvarint()})
		}
		nw := d.count()
		for j := 0; j < nw && d.err == nil; j++ {
			w := &waiter{reqID: d.uvarint(), ino: ino, kind: Kind(d.small())}
			w.owner = d.owner()
			w.r = Range{Start: d.uvarint(), End: d.uvarint()}
			w.typ = LockType(d.small())
			if _, dup := t.waiters[w.reqID]; dup {
				d.fail("request id %d queued twice", w.reqID)
			}
			t.enqueue(in, w)
		}
	}
	d.pids(t)
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the body", ErrCorrupt, len(d.b))
	}
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return t, nil
}
