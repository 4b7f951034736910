// Package codec splits a block of bytes into k data + m parity shards with
// Reed-Solomon coding, rebuilds it from any k of them, and checksums every
// 64 KiB of each shard with crc32c so that a ranged read verifies only what
// it reads. It does no I/O.
package codec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ChunkSize is the unit of checksumming: every ChunkSize bytes of a shard
// carry one crc32c. Block sizes are multiples of it.
const ChunkSize = 64 << 10

// DefaultBlockSize is the block size used when a scheme does not name one.
const DefaultBlockSize = 4 << 20

// MaxShards is the largest k+m the Reed-Solomon code supports.
const MaxShards = 256

// Errors returned by this package. They are sentinels: test with errors.Is.
var (
	ErrInvalidScheme = errors.New("codec: invalid scheme")
	ErrTooLarge      = errors.New("codec: block larger than the block size")
	ErrTooFewShards  = errors.New("codec: too few good shards to reconstruct")
	ErrShardSize     = errors.New("codec: shard has the wrong size")
	ErrChecksum      = errors.New("codec: checksum mismatch")
)

// Scheme is an erasure-coding layout: K data shards, M parity shards, and the
// largest block (object) that is coded as one unit.
type Scheme struct {
	K         int
	M         int
	BlockSize int
}

// ParseScheme parses "K+M" (block size DefaultBlockSize) or "K+M/SIZE" where
// SIZE is a byte count with an optional K or M suffix (binary units), e.g.
// "4+2", "8+3/1M".
func ParseScheme(s string) (Scheme, error) {
	spec, size, hasSize := strings.Cut(strings.TrimSpace(s), "/")
	ks, ms, ok := strings.Cut(spec, "+")
	if !ok {
		return Scheme{}, fmt.Errorf("%w: %q is not of the form K+M", ErrInvalidScheme, s)
	}
	k, err1 := strconv.Atoi(ks)
	m, err2 := strconv.Atoi(ms)
	if err1 != nil || err2 != nil || !digits(ks) || !digits(ms) {
		return Scheme{}, fmt.Errorf("%w: %q: K and M must be integers", ErrInvalidScheme, s)
	}
	sc := Scheme{K: k, M: m, BlockSize: DefaultBlockSize}
	if hasSize {
		n, err := parseSize(size)
		if err != nil {
			return Scheme{}, fmt.Errorf("%w: %q: %v", ErrInvalidScheme, s, err)
		}
		sc.BlockSize = n
	}
	return sc, sc.Validate()
}

func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	}
	n, err := strconv.Atoi(s)
	if err != nil || !digits(s) || n <= 0 || n > (1<<30)/mult {
		return 0, fmt.Errorf("bad block size %q", s)
	}
	return n * mult, nil
}

// Validate reports whether the scheme can be used.
func (s Scheme) Validate() error {
	switch {
	case s.K < 1:
		return fmt.Errorf("%w: k=%d, need k >= 1", ErrInvalidScheme, s.K)
	case s.M < 1:
		return fmt.Errorf("%w: m=%d, need m >= 1", ErrInvalidScheme, s.M)
	case s.K > MaxShards-s.M: // k+m > MaxShards, without overflowing k+m
		return fmt.Errorf("%w: k+m=%d+%d, at most %d", ErrInvalidScheme, s.K, s.M, MaxShards)
	case s.BlockSize <= 0 || s.BlockSize%ChunkSize != 0:
		return fmt.Errorf("%w: block size %d is not a positive multiple of %d", ErrInvalidScheme, s.BlockSize, ChunkSize)
	case s.BlockSize > 1<<30:
		return fmt.Errorf("%w: block size %d is over 1 GiB", ErrInvalidScheme, s.BlockSize)
	}
	return nil
}

// String formats the scheme so that ParseScheme reads it back.
func (s Scheme) String() string {
	if s.BlockSize == DefaultBlockSize {
		return fmt.Sprintf("%d+%d", s.K, s.M)
	}
	if s.BlockSize%(1<<20) == 0 {
		return fmt.Sprintf("%d+%d/%dM", s.K, s.M, s.BlockSize>>20)
	}
	return fmt.Sprintf("%d+%d/%dK", s.K, s.M, s.BlockSize>>10)
}

// Shards is k+m.
func (s Scheme) Shards() int { return s.K + s.M }

// ShardSize is the length of every shard of an object of length n: the data
// is cut into k equal parts, the last zero-padded.
func (s Scheme) ShardSize(n int64) int64 {
	return (n + int64(s.K) - 1) / int64(s.K)
}

// Chunks is the number of checksummed chunks in a shard of length n.
func Chunks(n int64) int {
	return int((n + ChunkSize - 1) / ChunkSize)
}

// digits reports whether s is a non-empty run of ASCII digits (Atoi also
// takes a sign).
func digits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
