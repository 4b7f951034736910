package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
)

func mustCodec(t testing.TB, spec string) *Codec {
	t.Helper()
	s, err := ParseScheme(spec)
	if err != nil {
		t.Fatalf("ParseScheme(%q): %v", spec, err)
	}
	c, err := New(s)
	if err != nil {
		t.Fatalf("New(%v): %v", s, err)
	}
	return c
}

func randBytes(rng *rand.Rand, n int) []byte {
	var seed [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(seed[8*i:], rng.Uint64())
	}
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// without returns a copy of the shard list (sharing shard memory) with the
// shards whose bit is set in lost set to nil.
func without(shards [][]byte, lost uint) [][]byte {
	out := make([][]byte, len(shards))
	for i, sh := range shards {
		if lost&(1<<i) == 0 {
			out[i] = sh
		}
	}
	return out
}

// lossMasks returns the masks over n shards with exactly j bits set.
func lossMasks(n, j int) []uint {
	var out []uint
	for mask := uint(0); mask < 1<<n; mask++ {
		if bits.OnesCount(mask) == j {
			out = append(out, mask)
		}
	}
	return out
}

// sample returns at most max elements of ms, chosen at random.
func sample(rng *rand.Rand, ms []uint, max int) []uint {
	if len(ms) <= max {
		return ms
	}
	ms = append([]uint(nil), ms...)
	rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	return ms[:max]
}

var roundTripLengths = []int{0, 1, 4095, 65535, 65536, 65537, 1 << 20, 4<<20 - 1, 4 << 20}

func TestRoundTrip(t *testing.T) {
	for _, spec := range []string{"4+2", "8+3"} {
		c := mustCodec(t, spec)
		s := c.Scheme()
		for _, n := range roundTripLengths {
			t.Run(fmt.Sprintf("%s/len=%d", spec, n), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(n), uint64(s.K)))
				block := randBytes(rng, n)
				orig := bytes.Clone(block)
				enc, err := c.Encode(block)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				if !bytes.Equal(block, orig) {
					t.Fatal("Encode modified its input")
				}
				checkEncoded(t, c, enc, orig)

				// Every subset of up to m lost shards for 4+2; a sample
				// (all for small blocks) for 8+3.
				limit := 1 << 30
				if s.Shards() > 6 && n > 65537 {
					limit = 6
				}
				for j := 0; j <= s.M; j++ {
					for _, lost := range sample(rng, lossMasks(s.Shards(), j), limit) {
						got, err := c.Decode(without(enc.Shards, lost), enc.Sums, enc.Length)
						if err != nil {
							t.Fatalf("Decode lost=%0*b: %v", s.Shards(), lost, err)
						}
						if !bytes.Equal(got, orig) {
							t.Fatalf("Decode lost=%0*b: wrong bytes", s.Shards(), lost)
						}
					}
				}
				// m+1 lost: never enough.
				if s.Shards() > 6 {
					limit = 4
				}
				for _, lost := range sample(rng, lossMasks(s.Shards(), s.M+1), limit) {
					got, err := c.Decode(without(enc.Shards, lost), enc.Sums, enc.Length)
					if !errors.Is(err, ErrTooFewShards) {
						t.Fatalf("Decode lost=%0*b = %d bytes, %v; want ErrTooFewShards", s.Shards(), lost, len(got), err)
					}
				}
				// Decoding must not have touched the block either.
				if !bytes.Equal(block, orig) {
					t.Fatal("Decode modified the data shards")
				}
			})
		}
	}
}

// checkEncoded checks the shape and checksums of enc, and that its data
// shards hold block zero-padded.
func checkEncoded(t *testing.T, c *Codec, enc *Encoded, block []byte) {
	t.Helper()
	s := c.Scheme()
	size := s.ShardSize(int64(len(block)))
	if enc.Length != int64(len(block)) {
		t.Fatalf("Length = %d, want %d", enc.Length, len(block))
	}
	if len(enc.Shards) != s.Shards() || len(enc.Sums) != s.Shards() {
		t.Fatalf("%d shards and %d sums, want %d", len(enc.Shards), len(enc.Sums), s.Shards())
	}
	var joined []byte
	for i, sh := range enc.Shards {
		if sh == nil || int64(len(sh)) != size {
			t.Fatalf("shard %d: %d bytes (nil=%v), want %d", i, len(sh), sh == nil, size)
		}
		if i < s.K {
			joined = append(joined, sh...)
		}
		if len(enc.Sums[i]) != Chunks(size) {
			t.Fatalf("shard %d: %d checksums, want Chunks(%d)=%d", i, len(enc.Sums[i]), size, Chunks(size))
		}
		for ci, sum := range enc.Sums[i] {
			chunk := sh[ci*ChunkSize : min((ci+1)*ChunkSize, len(sh))]
			if want := Checksum(chunk); sum != want {
				t.Fatalf("shard %d chunk %d: sum %08x, want %08x", i, ci, sum, want)
			}
		}
		if err := VerifyRange(sh, 0, enc.Sums[i]); err != nil {
			t.Fatalf("VerifyRange(shard %d): %v", i, err)
		}
	}
	if !bytes.Equal(joined[:len(block)], block) {
		t.Fatal("data shards do not hold the block")
	}
	if bytes.ContainsFunc(joined[len(block):], func(r rune) bool { return r != 0 }) {
		t.Fatal("padding is not zero")
	}
	// Parity must be what a full reconstruction computes.
	if size > 0 {
		shards := make([][]byte, s.Shards())
		copy(shards, enc.Shards[:s.K])
		if err := c.Reconstruct(shards, false); err != nil {
			t.Fatalf("Reconstruct parity: %v", err)
		}
		for i := s.K; i < s.Shards(); i++ {
			if !bytes.Equal(shards[i], enc.Shards[i]) {
				t.Fatalf("parity shard %d differs from its reconstruction", i)
			}
		}
	}
}

// TestEncodeBlockCapacity checks that Encode neither reads nor writes past
// len(block), whatever the capacity behind it.
func TestEncodeBlockCapacity(t *testing.T) {
	c := mustCodec(t, "4+2/1M")
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 5, 4095, 65537, 1 << 20} {
		backing := randBytes(rng, (1<<20)*2)
		orig := bytes.Clone(backing)
		block := backing[:n]
		enc, err := c.Encode(block)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(backing, orig) {
			t.Fatalf("len=%d: Encode wrote to the block or past it", n)
		}
		checkEncoded(t, c, enc, orig[:n])
		got, err := c.Decode(without(enc.Shards, 0b11), enc.Sums, enc.Length)
		if err != nil || !bytes.Equal(got, orig[:n]) {
			t.Fatalf("len=%d: Decode: %v", n, err)
		}
	}
}

func TestEncodeTooLarge(t *testing.T) {
	for _, spec := range []string{"4+2/64K", "8+3", "1+1/128K"} {
		t.Run(spec, func(t *testing.T) {
			c := mustCodec(t, spec)
			bs := c.Scheme().BlockSize
			if _, err := c.Encode(make([]byte, bs)); err != nil {
				t.Fatalf("Encode(BlockSize): %v", err)
			}
			enc, err := c.Encode(make([]byte, bs+1))
			if !errors.Is(err, ErrTooLarge) || enc != nil {
				t.Fatalf("Encode(BlockSize+1) = %v, %v; want ErrTooLarge", enc, err)
			}
		})
	}
}

func TestVerifyRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, shardLen := range []int{1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 5*ChunkSize + 123, 16 * ChunkSize} {
		t.Run(fmt.Sprint(shardLen), func(t *testing.T) {
			shard := randBytes(rng, shardLen)
			sums := Checksums(shard)
			if len(sums) != Chunks(int64(shardLen)) {
				t.Fatalf("Checksums gave %d sums, want %d", len(sums), Chunks(int64(shardLen)))
			}
			if err := VerifyRange(shard, 0, sums); err != nil {
				t.Fatalf("VerifyRange(intact): %v", err)
			}
			n := len(sums)
			for _, pos := range []int{0, shardLen / 2, shardLen - 1, rng.IntN(shardLen)} {
				chunk := pos / ChunkSize
				for _, x := range []byte{0x01, 0x80, 0xff} {
					shard[pos] ^= x
					// The whole shard, and every range that starts on a
					// chunk boundary at or before the bad chunk and runs
					// to the end of the shard.
					for first := 0; first <= chunk; first++ {
						err := VerifyRange(shard[first*ChunkSize:], first, sums[first:])
						var ce *ChunkError
						if !errors.As(err, &ce) {
							t.Fatalf("pos %d xor %#x first %d: err = %v, want *ChunkError", pos, x, first, err)
						}
						if ce.Chunk != chunk {
							t.Fatalf("pos %d xor %#x first %d: Chunk = %d, want %d", pos, x, first, ce.Chunk, chunk)
						}
						if !errors.Is(err, ErrChecksum) {
							t.Fatalf("ChunkError %v does not satisfy errors.Is(ErrChecksum)", err)
						}
					}
					// Ranges that end before the bad chunk are fine.
					for first := 0; first < chunk; first++ {
						if err := VerifyRange(shard[first*ChunkSize:chunk*ChunkSize], first, sums[first:chunk]); err != nil {
							t.Fatalf("range [%d,%d) before bad chunk %d: %v", first, chunk, chunk, err)
						}
					}
					shard[pos] ^= x
				}
			}
			if err := VerifyRange(shard, 0, sums); err != nil {
				t.Fatalf("VerifyRange(restored): %v", err)
			}
			// Wrong number of checksums.
			for _, bad := range [][]uint32{nil, sums[:n-1], append(append([]uint32(nil), sums...), 0)} {
				err := VerifyRange(shard, 0, bad)
				var ce *ChunkError
				if !errors.Is(err, ErrChecksum) || errors.As(err, &ce) {
					t.Fatalf("VerifyRange with %d sums for %d: %v, want plain ErrChecksum", len(bad), n, err)
				}
			}
		})
	}
	if err := VerifyRange(nil, 0, nil); err != nil {
		t.Fatalf("VerifyRange(empty): %v", err)
	}
}

func TestChecksums(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	shard := randBytes(rng, 3*ChunkSize+7)
	sums := Checksums(shard)
	want := []uint32{
		Checksum(shard[:ChunkSize]),
		Checksum(shard[ChunkSize : 2*ChunkSize]),
		Checksum(shard[2*ChunkSize : 3*ChunkSize]),
		Checksum(shard[3*ChunkSize:]),
	}
	if fmt.Sprint(sums) != fmt.Sprint(want) {
		t.Fatalf("Checksums = %08x, want %08x", sums, want)
	}
	dst := AppendChecksums([]uint32{42}, shard)
	if dst[0] != 42 || fmt.Sprint(dst[1:]) != fmt.Sprint(want) {
		t.Fatalf("AppendChecksums = %08x", dst)
	}
	if len(Checksums(nil)) != 0 {
		t.Fatal("Checksums(nil) not empty")
	}
	// crc32c check value.
	if got := Checksum([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("Checksum(123456789) = %08x, want e3069283 (crc32c)", got)
	}
}

// TestDecodeCorrupt checks that corrupted shards are dropped like lost ones:
// up to m bad-or-lost shards decode, more fail with ErrTooFewShards.
func TestDecodeCorrupt(t *testing.T) {
	c := mustCodec(t, "4+2")
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 65537, 1<<20 + 3} {
		block := randBytes(rng, n)
		orig := bytes.Clone(block)
		enc, err := c.Encode(block)
		if err != nil {
			t.Fatal(err)
		}
		size := int(c.Scheme().ShardSize(int64(n)))
		for bad := uint(0); bad < 1<<6; bad++ {
			// Every shard whose bit is set in bad is spoiled: the 1st,
			// 3rd, ... of them get a corrupted byte, the 2nd, 4th, ...
			// are dropped, so both kinds mix.
			shards := make([][]byte, 6)
			k := 0
			for i := range shards {
				shards[i] = enc.Shards[i]
				if bad&(1<<i) == 0 {
					continue
				}
				if k%2 == 0 {
					sh := bytes.Clone(enc.Shards[i])
					sh[rng.IntN(size)] ^= byte(1 + rng.IntN(255))
					shards[i] = sh
				} else {
					shards[i] = nil
				}
				k++
			}
			got, err := c.Decode(shards, enc.Sums, enc.Length)
			if bits.OnesCount(bad) <= 2 {
				if err != nil || !bytes.Equal(got, orig) {
					t.Fatalf("len %d bad=%06b: %v", n, bad, err)
				}
			} else if !errors.Is(err, ErrTooFewShards) {
				t.Fatalf("len %d bad=%06b: got %d bytes, %v; want ErrTooFewShards", n, bad, len(got), err)
			}
		}
		// A shard of the wrong length counts as bad too.
		shards := without(enc.Shards, 0)
		shards[0] = enc.Shards[0][:size-1]
		shards[5] = append(bytes.Clone(enc.Shards[5]), 0)
		if got, err := c.Decode(shards, enc.Sums, enc.Length); err != nil || !bytes.Equal(got, orig) {
			t.Fatalf("len %d wrong-length shards: %v", n, err)
		}
		// Wrong checksums for a shard count as bad too.
		sums := append([][]uint32(nil), enc.Sums...)
		sums[1] = append([]uint32(nil), sums[1]...)
		sums[1][0] ^= 1
		sums[2] = nil
		if got, err := c.Decode(enc.Shards, sums, enc.Length); err != nil || !bytes.Equal(got, orig) {
			t.Fatalf("len %d bad sums: %v", n, err)
		}
		sums[3] = sums[3][:0]
		if _, err := c.Decode(enc.Shards, sums, enc.Length); !errors.Is(err, ErrTooFewShards) {
			t.Fatalf("len %d three bad sums: %v, want ErrTooFewShards", n, err)
		}
		if !bytes.Equal(block, orig) {
			t.Fatal("block modified")
		}
	}
}

func TestDecodeBadArgs(t *testing.T) {
	c := mustCodec(t, "4+2/64K")
	enc, err := c.Encode([]byte("hello, world"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		shards [][]byte
		sums   [][]uint32
		length int64
		want   error
	}{
		{"too few shard entries", enc.Shards[:5], enc.Sums, enc.Length, ErrShardSize},
		{"too many shard entries", append(without(enc.Shards, 0), nil), enc.Sums, enc.Length, ErrShardSize},
		{"too few sum entries", enc.Shards, enc.Sums[:5], enc.Length, ErrShardSize},
		{"negative length", enc.Shards, enc.Sums, -1, ErrTooLarge},
		{"length over block size", enc.Shards, enc.Sums, 64<<10 + 1, ErrTooLarge},
		{"length does not match shards", enc.Shards, enc.Sums, 100, ErrTooFewShards},
		{"all nil", make([][]byte, 6), enc.Sums, enc.Length, ErrTooFewShards},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Decode(tt.shards, tt.sums, tt.length)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %q, %v; want %v", got, err, tt.want)
			}
		})
	}
	// A shorter length whose shard size is the same reads a prefix.
	if got, err := c.Decode(enc.Shards, enc.Sums, 9); err != nil || string(got) != "hello, wo" {
		t.Fatalf("Decode(length 9) = %q, %v", got, err)
	}
}

func TestReconstruct(t *testing.T) {
	c := mustCodec(t, "4+2")
	rng := rand.New(rand.NewPCG(9, 10))
	block := randBytes(rng, 1<<20+17)
	enc, err := c.Encode(block)
	if err != nil {
		t.Fatal(err)
	}
	for _, dataOnly := range []bool{false, true} {
		for j := 0; j <= 2; j++ {
			for _, lost := range lossMasks(6, j) {
				shards := without(enc.Shards, lost)
				if err := c.Reconstruct(shards, dataOnly); err != nil {
					t.Fatalf("Reconstruct(lost=%06b, dataOnly=%v): %v", lost, dataOnly, err)
				}
				for i := range shards {
					if dataOnly && i >= 4 && lost&(1<<i) != 0 {
						if shards[i] != nil {
							t.Fatalf("dataOnly rebuilt parity shard %d", i)
						}
						continue
					}
					if !bytes.Equal(shards[i], enc.Shards[i]) {
						t.Fatalf("Reconstruct(lost=%06b, dataOnly=%v): shard %d differs", lost, dataOnly, i)
					}
				}
				dst := make([]byte, len(block)+10)
				got, err := c.Join(dst, shards, enc.Length)
				if err != nil || !bytes.Equal(got, block) {
					t.Fatalf("Join: %v", err)
				}
			}
		}
	}
	if err := c.Reconstruct(without(enc.Shards, 0b111), true); !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("3 lost: %v", err)
	}
	if err := c.Reconstruct(enc.Shards[:5], true); !errors.Is(err, ErrShardSize) {
		t.Fatalf("5 entries: %v", err)
	}
	uneven := without(enc.Shards, 1)
	uneven[2] = uneven[2][:10]
	if err := c.Reconstruct(uneven, true); !errors.Is(err, ErrShardSize) {
		t.Fatalf("uneven shards: %v", err)
	}
	// Empty shards.
	empty := [][]byte{{}, nil, {}, {}, nil, {}}
	if err := c.Reconstruct(empty, false); err != nil {
		t.Fatalf("empty shards: %v", err)
	}
	for i, sh := range empty {
		if sh == nil || len(sh) != 0 {
			t.Fatalf("empty shard %d = %v", i, sh)
		}
	}
}

func TestJoin(t *testing.T) {
	c := mustCodec(t, "4+2")
	enc, err := c.Encode([]byte("abcdefghij")) // shard size 3
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Join(make([]byte, 10), enc.Shards, 10)
	if err != nil || string(got) != "abcdefghij" {
		t.Fatalf("Join = %q, %v", got, err)
	}
	if _, err := c.Join(make([]byte, 9), enc.Shards, 10); !errors.Is(err, ErrShardSize) {
		t.Fatalf("short dst: %v", err)
	}
	if _, err := c.Join(make([]byte, 10), without(enc.Shards, 0b1000), 10); !errors.Is(err, ErrShardSize) {
		t.Fatalf("missing data shard: %v", err)
	}
	got, err = c.Join(nil, nil, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("Join(0) = %q, %v", got, err)
	}
}

func TestEncodeEmpty(t *testing.T) {
	c := mustCodec(t, "8+3")
	for _, block := range [][]byte{nil, {}} {
		enc, err := c.Encode(block)
		if err != nil {
			t.Fatal(err)
		}
		for i := range enc.Shards {
			if enc.Shards[i] == nil || len(enc.Shards[i]) != 0 || enc.Sums[i] == nil || len(enc.Sums[i]) != 0 {
				t.Fatalf("shard %d: %v %v", i, enc.Shards[i], enc.Sums[i])
			}
		}
		got, err := c.Decode(without(enc.Shards, 0b111), enc.Sums, 0)
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Decode(empty) = %v, %v", got, err)
		}
	}
}

// TestConcurrent uses one Codec from several goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	c := mustCodec(t, "4+2/256K")
	done := make(chan error)
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(g), 11))
			for range 20 {
				block := randBytes(rng, rng.IntN(256<<10+1))
				enc, err := c.Encode(block)
				if err != nil {
					done <- err
					return
				}
				a, b := rng.IntN(6), rng.IntN(6)
				got, err := c.Decode(without(enc.Shards, 1<<a|1<<b), enc.Sums, enc.Length)
				if err != nil {
					done <- err
					return
				}
				if !bytes.Equal(got, block) {
					done <- errors.New("wrong bytes")
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
