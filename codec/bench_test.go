package codec

import (
	"math/rand/v2"
	"testing"

	"github.com/klauspost/reedsolomon"
)

// Benchmarks compare the codec with bare reedsolomon doing the same work on
// a full 4 MiB block. Sub-benchmarks come in pairs, ecfs-K+M then bare-K+M.

const benchBlockSize = 4 << 20

var benchSchemes = []string{"4+2", "8+3"}

// benchBlock returns a full block of random bytes whose capacity is its
// length, as a block read from a client would be, so that bare Split has to
// allocate the parity shards just as Encode does.
func benchBlock() []byte {
	b := randBytes(rand.New(rand.NewPCG(14, 15)), benchBlockSize)
	return b[:len(b):len(b)]
}

func bareEncoder(b *testing.B, s Scheme) reedsolomon.Encoder {
	enc, err := reedsolomon.New(s.K, s.M, reedsolomon.WithAutoGoroutines(benchBlockSize/s.K))
	if err != nil {
		b.Fatal(err)
	}
	return enc
}

func BenchmarkEncode(b *testing.B) {
	data := benchBlock()
	for _, spec := range benchSchemes {
		c := mustCodec(b, spec)
		b.Run("ecfs-"+spec, func(b *testing.B) {
			b.SetBytes(benchBlockSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Encode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("bare-"+spec, func(b *testing.B) {
			enc := bareEncoder(b, c.Scheme())
			b.SetBytes(benchBlockSize)
			b.ReportAllocs()
			for b.Loop() {
				shards, err := enc.Split(data)
				if err != nil {
					b.Fatal(err)
				}
				if err := enc.Encode(shards); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReconstruct rebuilds the first two data shards. ecfs does what a
// read does: verify the checksums of the shards it has, then reconstruct the
// data shards; bare only reconstructs.
func BenchmarkReconstruct(b *testing.B) {
	data := benchBlock()
	for _, spec := range benchSchemes {
		c := mustCodec(b, spec)
		e, err := c.Encode(data)
		if err != nil {
			b.Fatal(err)
		}
		shards := make([][]byte, len(e.Shards))
		b.Run("ecfs-"+spec, func(b *testing.B) {
			b.SetBytes(benchBlockSize)
			b.ReportAllocs()
			for b.Loop() {
				copy(shards, e.Shards)
				shards[0], shards[1] = nil, nil
				for i, sh := range shards {
					if sh == nil {
						continue
					}
					if err := VerifyRange(sh, 0, e.Sums[i]); err != nil {
						b.Fatal(err)
					}
				}
				if err := c.Reconstruct(shards, true); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("bare-"+spec, func(b *testing.B) {
			enc := bareEncoder(b, c.Scheme())
			b.SetBytes(benchBlockSize)
			b.ReportAllocs()
			for b.Loop() {
				copy(shards, e.Shards)
				shards[0], shards[1] = nil, nil
				if err := enc.ReconstructData(shards); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode is a whole degraded read: verify, reconstruct two data
// shards, and join them into a new block.
func BenchmarkDecode(b *testing.B) {
	data := benchBlock()
	for _, spec := range benchSchemes {
		c := mustCodec(b, spec)
		e, err := c.Encode(data)
		if err != nil {
			b.Fatal(err)
		}
		shards := make([][]byte, len(e.Shards))
		b.Run("ecfs-"+spec, func(b *testing.B) {
			b.SetBytes(benchBlockSize)
			b.ReportAllocs()
			for b.Loop() {
				copy(shards, e.Shards)
				shards[0], shards[1] = nil, nil
				if _, err := c.Decode(shards, e.Sums, e.Length); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChecksums measures crc32c alone over one block's worth of bytes,
// to compare with the checksum share of Encode (which sums (k+m)/k times
// the block).
func BenchmarkChecksums(b *testing.B) {
	data := benchBlock()
	sums := make([]uint32, 0, Chunks(benchBlockSize))
	b.SetBytes(benchBlockSize)
	b.ReportAllocs()
	for b.Loop() {
		sums = AppendChecksums(sums[:0], data)
	}
}
