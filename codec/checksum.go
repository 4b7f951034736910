package codec

import (
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the crc32c of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Checksums returns the crc32c of every ChunkSize bytes of shard (the last
// chunk may be short).
func Checksums(shard []byte) []uint32 {
	return AppendChecksums(make([]uint32, 0, Chunks(int64(len(shard)))), shard)
}

// AppendChecksums appends the chunk checksums of shard to dst.
func AppendChecksums(dst []uint32, shard []byte) []uint32 {
	for off := 0; off < len(shard); off += ChunkSize {
		end := min(off+ChunkSize, len(shard))
		dst = append(dst, Checksum(shard[off:end]))
	}
	return dst
}

// ChunkError names the first chunk of a range whose checksum does not match.
type ChunkError struct {
	Chunk int // index of the chunk within the shard
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("codec: checksum mismatch in chunk %d", e.Chunk)
}

func (e *ChunkError) Unwrap() error { return ErrChecksum }

// VerifyRange checks data, which holds the shard bytes starting at chunk
// firstChunk, against sums (the checksums of the chunks data covers, in
// order). data must start on a chunk boundary; only its last chunk may be
// short, and it must end where the shard ends, as sums[last] covers it.
func VerifyRange(data []byte, firstChunk int, sums []uint32) error {
	if want := Chunks(int64(len(data))); want != len(sums) {
		return fmt.Errorf("%w: %d bytes need %d checksums, have %d", ErrChecksum, len(data), want, len(sums))
	}
	for i, off := 0, 0; off < len(data); i, off = i+1, off+ChunkSize {
		end := min(off+ChunkSize, len(data))
		if Checksum(data[off:end]) != sums[i] {
			return &ChunkError{Chunk: firstChunk + i}
		}
	}
	return nil
}
