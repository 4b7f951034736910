package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ecfs/ecfs/codec"
)

// ObjectID names an immutable object. The metadata service allocates them;
// on the wire and on disk it is 16 lower-case hex digits.
type ObjectID uint64

func (id ObjectID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// ParseObjectID parses exactly 16 lower-case hex digits.
func ParseObjectID(s string) (ObjectID, error) {
	if len(s) != 16 || strings.ToLower(s) != s {
		return 0, fmt.Errorf("%w: object id %q is not 16 lower-case hex digits", ErrInvalidArgument, s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: object id %q is not 16 lower-case hex digits", ErrInvalidArgument, s)
	}
	return ObjectID(v), nil
}

// ShardKey names one shard: an object and the shard's index in it.
type ShardKey struct {
	Object ObjectID
	Index  int
}

// String is the shard's file name and its name in listings: "<id>-<index>"
// with the index as 3 decimal digits.
func (k ShardKey) String() string { return fmt.Sprintf("%s-%03d", k.Object, k.Index) }

// ParseShardKey parses what ShardKey.String writes.
func ParseShardKey(s string) (ShardKey, error) {
	id, idx, ok := strings.Cut(s, "-")
	if !ok || len(idx) != 3 {
		return ShardKey{}, fmt.Errorf("%w: shard key %q", ErrInvalidArgument, s)
	}
	k, err := parseKey(id, idx)
	return k, err
}

func parseKey(id, idx string) (ShardKey, error) {
	oid, err := ParseObjectID(id)
	if err != nil {
		return ShardKey{}, err
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n < 0 || n >= codec.MaxShards || strings.TrimLeft(idx, "0123456789") != "" {
		return ShardKey{}, fmt.Errorf("%w: shard index %q is not in 0..%d", ErrInvalidArgument, idx, codec.MaxShards-1)
	}
	return ShardKey{Object: oid, Index: n}, nil
}

// RelPath is where the shard's file lives under a disk directory:
// "shards/ab/cd/<key>".
func (k ShardKey) RelPath() string { return shardsDir + "/" + k.fanout() + "/" + k.String() }

// fanout is the two-level directory of a shard: "ab/cd" from a hash of the
// object id, so sequential ids spread evenly.
func (k ShardKey) fanout() string {
	h := uint64(k.Object) * 0x9E3779B97F4A7C15
	return fmt.Sprintf("%02x/%02x", byte(h>>56), byte(h>>48))
}

// Shard file format, version 1. All integers little-endian.
//
//	0  magic "ECFSSHRD"
//	8  u16 format version (1)     10 u16 flags (0)
//	12 u16 k   14 u16 m   16 u16 shard index   18 u16 reserved (0)
//	20 u32 block size
//	24 u64 object id   32 u64 object length   40 u64 shard length
//	48 u32 number of chunks n   52 u32 crc32c of bytes 0..52 and the checksums
//	56 n × u32 crc32c of each 64 KiB chunk of the shard data
//	padding to a multiple of 4 KiB, then the shard data.
const (
	shardMagic     = "ECFSSHRD"
	formatVersion  = 1
	fixedHeaderLen = 56
	headerAlign    = 4096
)

// ShardHeader describes a shard file: enough to understand a disk without
// the metadata service.
type ShardHeader struct {
	Key       ShardKey
	Scheme    codec.Scheme
	ObjectLen int64
	ShardLen  int64
	Sums      []uint32
}

// Validate checks that the header is self-consistent.
func (h *ShardHeader) Validate(maxShard int64) error {
	if err := h.Scheme.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	switch {
	case h.Key.Index < 0 || h.Key.Index >= h.Scheme.Shards():
		return fmt.Errorf("%w: shard index %d outside scheme %s", ErrInvalidArgument, h.Key.Index, h.Scheme)
	case h.ObjectLen < 0 || h.ObjectLen > int64(h.Scheme.BlockSize):
		return fmt.Errorf("%w: object length %d outside 0..%d", ErrInvalidArgument, h.ObjectLen, h.Scheme.BlockSize)
	case h.ShardLen != h.Scheme.ShardSize(h.ObjectLen):
		return fmt.Errorf("%w: shard length %d, scheme %s with object length %d needs %d", ErrInvalidArgument, h.ShardLen, h.Scheme, h.ObjectLen, h.Scheme.ShardSize(h.ObjectLen))
	case h.ShardLen > maxShard:
		return fmt.Errorf("%w: shard of %d bytes, the limit is %d", ErrInvalidArgument, h.ShardLen, maxShard)
	case len(h.Sums) != codec.Chunks(h.ShardLen):
		return fmt.Errorf("%w: %d checksums for %d bytes, need %d", ErrInvalidArgument, len(h.Sums), h.ShardLen, codec.Chunks(h.ShardLen))
	}
	return nil
}

// DataOffset is where the shard data starts in the file.
func (h *ShardHeader) DataOffset() int64 {
	n := int64(fixedHeaderLen + 4*len(h.Sums))
	return (n + headerAlign - 1) / headerAlign * headerAlign
}

// Marshal encodes the header with its padding.
func (h *ShardHeader) Marshal() []byte {
	b := make([]byte, h.DataOffset())
	copy(b, shardMagic)
	le := binary.LittleEndian
	le.PutUint16(b[8:], formatVersion)
	le.PutUint16(b[12:], uint16(h.Scheme.K))
	le.PutUint16(b[14:], uint16(h.Scheme.M))
	le.PutUint16(b[16:], uint16(h.Key.Index))
	le.PutUint32(b[20:], uint32(h.Scheme.BlockSize))
	le.PutUint64(b[24:], uint64(h.Key.Object))
	le.PutUint64(b[32:], uint64(h.ObjectLen))
	le.PutUint64(b[40:], uint64(h.ShardLen))
	le.PutUint32(b[48:], uint32(len(h.Sums)))
	for i, s := range h.Sums {
		le.PutUint32(b[fixedHeaderLen+4*i:], s)
	}
	end := fixedHeaderLen + 4*len(h.Sums)
	le.PutUint32(b[52:], headerCRC(b[:end]))
	return b
}

func headerCRC(b []byte) uint32 {
	c := codec.Checksum(b[:52])
	return codec.Checksum(append(leU32(c), b[fixedHeaderLen:]...))
}

func leU32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// errCorruptHeader marks a shard file whose header cannot be trusted.
var errCorruptHeader = errors.New("corrupt shard header")

// ReadShardHeader reads and checks the header at the start of r. A header that
// is damaged wraps ErrDataLoss.
func ReadShardHeader(r io.ReaderAt, maxShard int64) (*ShardHeader, error) {
	fixed := make([]byte, fixedHeaderLen)
	if _, err := r.ReadAt(fixed, 0); err != nil {
		return nil, fmt.Errorf("%w: %w: %v", ErrDataLoss, errCorruptHeader, err)
	}
	le := binary.LittleEndian
	if string(fixed[:8]) != shardMagic {
		return nil, fmt.Errorf("%w: %w: bad magic", ErrDataLoss, errCorruptHeader)
	}
	if v := le.Uint16(fixed[8:]); v != formatVersion {
		return nil, fmt.Errorf("%w: %w: format version %d", ErrDataLoss, errCorruptHeader, v)
	}
	n := le.Uint32(fixed[48:])
	if int64(n) > int64(codec.Chunks(maxShard)) {
		return nil, fmt.Errorf("%w: %w: %d chunks", ErrDataLoss, errCorruptHeader, n)
	}
	b := make([]byte, fixedHeaderLen+4*int(n))
	copy(b, fixed)
	if _, err := r.ReadAt(b[fixedHeaderLen:], fixedHeaderLen); err != nil {
		return nil, fmt.Errorf("%w: %w: %v", ErrDataLoss, errCorruptHeader, err)
	}
	if headerCRC(b) != le.Uint32(b[52:]) {
		return nil, fmt.Errorf("%w: %w: header checksum mismatch", ErrDataLoss, errCorruptHeader)
	}
	h := &ShardHeader{
		Key:       ShardKey{Object: ObjectID(le.Uint64(b[24:])), Index: int(le.Uint16(b[16:]))},
		Scheme:    codec.Scheme{K: int(le.Uint16(b[12:])), M: int(le.Uint16(b[14:])), BlockSize: int(le.Uint32(b[20:]))},
		ObjectLen: int64(le.Uint64(b[32:])),
		ShardLen:  int64(le.Uint64(b[40:])),
		Sums:      make([]uint32, n),
	}
	for i := range h.Sums {
		h.Sums[i] = le.Uint32(b[fixedHeaderLen+4*i:])
	}
	if err := h.Validate(maxShard); err != nil {
		return nil, fmt.Errorf("%w: %w: %v", ErrDataLoss, errCorruptHeader, err)
	}
	return h, nil
}
