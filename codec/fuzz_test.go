package codec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// fuzzScheme keeps blocks small so that fuzzing is fast. Its shards are at
// most 32 KiB, i.e. one checksum chunk; multi-chunk shards are covered by
// the unit tests.
const fuzzScheme = "4+2/128K"

// Fuzz inputs are cut to these lengths: the fuzzer minimizes every new
// input in time about quadratic in its length, times the cost of a run,
// which grows with the block; bytes the target ignores are cut cheaply.
const (
	fuzzMaxData  = 256
	fuzzMaxFlips = 32 * 4
)

// FuzzDecode encodes data, then loses the shards named by the low bits of
// lossMask and corrupts shards as flips says: every 4 bytes of flips are
// (shard, position high byte, position low byte, xor). The high byte of
// lossMask, if not zero, stretches data by repetition to 512 times its value
// plus its own length (up to the block size), so that small inputs make
// blocks of any size.
//
// Decode must return exactly the data or an error; with at most m shards
// lost or actually altered it must succeed, with more it must fail with
// ErrTooFewShards.
func FuzzDecode(f *testing.F) {
	c := mustCodec(f, fuzzScheme)
	s := c.Scheme()

	// Seeds stay small (the fuzzer minimizes new inputs in time about
	// quadratic in their length); the high byte of lossMask makes large
	// blocks out of them.
	rng := rand.New(rand.NewPCG(12, 13))
	random := randBytes(rng, 64)
	f.Add([]byte(nil), uint16(0), []byte(nil))
	f.Add([]byte(nil), uint16(0b111), []byte(nil))
	f.Add([]byte("a"), uint16(0), []byte(nil))
	f.Add([]byte("hello, world"), uint16(0b000011), []byte(nil))
	f.Add([]byte("hello, world"), uint16(0b110000), []byte(nil))
	f.Add([]byte("hello, world"), uint16(0b000111), []byte(nil))
	f.Add(random, uint16(0b000001), []byte{2, 0, 7, 0x01})
	f.Add(random, uint16(0x0a00), []byte{0, 1, 0, 0x80, 5, 0, 0, 0xff})
	f.Add(random, uint16(0x0a00), []byte{0, 1, 0, 0x80, 5, 0, 0, 0xff, 3, 0, 3, 0x10})
	f.Add(random, uint16(0x0a00|0b000100), []byte{1, 0, 9, 0x55, 1, 0, 9, 0x55}) // flip restored
	f.Add(random, uint16(0x0a00|0b001000), []byte{4, 0, 9, 0x00, 5, 0xff, 0xff, 1})
	f.Add(random, uint16(0b010000), []byte{0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3})
	f.Add(random[:50], uint16(0xff00|0b100001), []byte{2, 0x12, 0x34, 0x56})
	f.Add(random[:7], uint16(0x4000), []byte{0, 0x7f, 0xff, 1, 1, 0x7f, 0xff, 1})
	f.Add(random[:7], uint16(0x4000), []byte{0, 0x7f, 0xff, 1, 1, 0x7f, 0xff, 1, 2, 0, 0, 1})

	f.Fuzz(func(t *testing.T, data []byte, lossMask uint16, flips []byte) {
		data = bytes.Clone(data[:min(len(data), fuzzMaxData)]) // not ours to grow
		flips = flips[:min(len(flips), fuzzMaxFlips)]
		if rep := int(lossMask >> 8); rep > 0 && len(data) > 0 {
			n := len(data) + rep*512
			for len(data) < n {
				data = append(data, data...)
			}
			data = data[:n]
		}
		if len(data) > s.BlockSize {
			data = data[:s.BlockSize]
		}
		orig := bytes.Clone(data)
		enc, err := c.Encode(data)
		if err != nil {
			t.Fatalf("Encode(%d bytes): %v", len(data), err)
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("Encode modified its input")
		}
		size := int(s.ShardSize(enc.Length))

		shards := make([][]byte, s.Shards())
		for i := range shards {
			shards[i] = bytes.Clone(enc.Shards[i])
		}
		for ; len(flips) >= 4; flips = flips[4:] {
			i := int(flips[0]) % len(shards)
			if size == 0 {
				continue
			}
			pos := (int(flips[1])<<8 | int(flips[2])) % size
			shards[i][pos] ^= flips[3]
		}
		bad := 0
		for i := range shards {
			switch {
			case lossMask&(1<<i) != 0:
				shards[i] = nil
				bad++
			case !bytes.Equal(shards[i], enc.Shards[i]):
				bad++
			}
		}
		given := make([][]byte, len(shards))
		for i := range shards {
			given[i] = bytes.Clone(shards[i])
		}

		got, err := c.Decode(shards, enc.Sums, enc.Length)
		if err == nil && !bytes.Equal(got, orig) {
			t.Fatalf("Decode returned wrong bytes (%d lost or altered shards)", bad)
		}
		if bad <= s.M && err != nil {
			t.Fatalf("Decode with %d lost or altered shards: %v", bad, err)
		}
		if bad > s.M && !errors.Is(err, ErrTooFewShards) {
			t.Fatalf("Decode with %d lost or altered shards = %d bytes, %v; want ErrTooFewShards", bad, len(got), err)
		}
		for i := range shards {
			if !bytes.Equal(shards[i], given[i]) || (shards[i] == nil) != (given[i] == nil) {
				t.Fatalf("Decode modified shard %d", i)
			}
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("Decode modified the block behind the data shards")
		}
	})
}

// FuzzParseScheme checks that ParseScheme never panics, that its errors
// wrap ErrInvalidScheme, and that what it accepts is valid and prints back.
func FuzzParseScheme(f *testing.F) {
	for _, s := range []string{"4+2", "8+3", "1+1", "4+2/1M", "4+2/64K", "", "4", "0+2", "4+0", "-1+2",
		"200+57", "4+2/100K", "4+2/0", "a+b", "4+2/xyz", "9223372036854775807+1", "4+2/1024M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sc, err := ParseScheme(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidScheme) {
				t.Fatalf("ParseScheme(%q): %v does not wrap ErrInvalidScheme", in, err)
			}
			return
		}
		if err := sc.Validate(); err != nil {
			t.Fatalf("ParseScheme(%q) = %+v, which does not validate: %v", in, sc, err)
		}
		back, err := ParseScheme(sc.String())
		if err != nil || back != sc {
			t.Fatalf("ParseScheme(%q) = %+v; String %q parses as %+v, %v", in, sc, sc.String(), back, err)
		}
	})
}
