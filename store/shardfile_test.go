package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/ecfs/ecfs/codec"
)

func testHeader(t *testing.T, scheme string, olen int64, idx int) *ShardHeader {
	t.Helper()
	sc := mustScheme(t, scheme)
	rng := rand.New(rand.NewPCG(uint64(olen), uint64(idx)))
	sums := make([]uint32, codec.Chunks(sc.ShardSize(olen)))
	for i := range sums {
		sums[i] = rng.Uint32()
	}
	return &ShardHeader{
		Key:       ShardKey{Object: ObjectID(0x0123456789abcdef), Index: idx},
		Scheme:    sc,
		ObjectLen: olen,
		ShardLen:  sc.ShardSize(olen),
		Sums:      sums,
	}
}

func TestShardHeaderRoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		scheme string
		olen   int64
		idx    int
	}{
		{"empty", "4+2", 0, 0},
		{"one byte", "4+2/1M", 1, 5},
		{"one chunk", "2+1/128K", 128 << 10, 2},
		{"full default block", "4+2", 4 << 20, 3},
		{"many chunks", "1+1/64M", 64 << 20, 1},
		{"wide", "200+56/256M", 255<<20 + 17, 255},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := testHeader(t, tc.scheme, tc.olen, tc.idx)
			if err := h.Validate(1 << 30); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			b := h.Marshal()
			if int64(len(b)) != h.DataOffset() || len(b)%headerAlign != 0 || len(b) < fixedHeaderLen+4*len(h.Sums) {
				t.Fatalf("Marshal gave %d bytes, DataOffset %d, %d sums", len(b), h.DataOffset(), len(h.Sums))
			}
			got, err := ReadShardHeader(bytes.NewReader(b), 1<<30)
			if err != nil {
				t.Fatalf("ReadShardHeader: %v", err)
			}
			if got.Key != h.Key || got.Scheme != h.Scheme || got.ObjectLen != h.ObjectLen || got.ShardLen != h.ShardLen || !reflect.DeepEqual(got.Sums, h.Sums) {
				t.Fatalf("round trip: got %+v, want %+v", got, h)
			}
			if got.DataOffset() != h.DataOffset() {
				t.Fatalf("DataOffset %d, want %d", got.DataOffset(), h.DataOffset())
			}
		})
	}
}

// Every byte the header checksum covers is checked: flipping any one of them
// makes the header unreadable, as data loss.
func TestShardHeaderFlippedByte(t *testing.T) {
	for _, tc := range []struct {
		scheme string
		olen   int64
	}{
		{"4+2", 0},
		{"4+2/1M", 1},
		{"4+2", 4<<20 - 3},
		{"1+1/64M", 64 << 20}, // 1024 sums, the header spans two pages
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			h := testHeader(t, tc.scheme, tc.olen, 1)
			good := h.Marshal()
			covered := fixedHeaderLen + 4*len(h.Sums)
			for i := range covered {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					b := bytes.Clone(good)
					b[i] ^= mask
					_, err := ReadShardHeader(bytes.NewReader(b), 64<<20)
					if !errors.Is(err, ErrDataLoss) {
						t.Fatalf("byte %d ^ %#x: err %v, want data loss", i, mask, err)
					}
				}
			}
			// Padding is not covered: flipping it is harmless.
			if covered < len(good) {
				b := bytes.Clone(good)
				b[len(b)-1] ^= 0xff
				if _, err := ReadShardHeader(bytes.NewReader(b), 64<<20); err != nil {
					t.Fatalf("padding flipped: %v", err)
				}
			}
		})
	}
}

func TestShardHeaderTruncatedAndBogus(t *testing.T) {
	h := testHeader(t, "4+2", 4<<20, 2)
	good := h.Marshal()
	for _, n := range []int{0, 1, 8, 55, 56, 57, fixedHeaderLen + 4*len(h.Sums) - 1} {
		if _, err := ReadShardHeader(bytes.NewReader(good[:n]), 64<<20); !errors.Is(err, ErrDataLoss) {
			t.Errorf("header cut at %d: err %v, want data loss", n, err)
		}
	}
	// A valid header for a shard bigger than the reader's limit.
	if _, err := ReadShardHeader(bytes.NewReader(good), 64<<10); !errors.Is(err, ErrDataLoss) {
		t.Errorf("shard over the limit: err %v, want data loss", err)
	}
	// A self-consistent checksum over an inconsistent header: still refused.
	bad := *h
	bad.ShardLen++
	if _, err := ReadShardHeader(bytes.NewReader(bad.Marshal()), 64<<20); !errors.Is(err, ErrDataLoss) {
		t.Errorf("inconsistent header: err %v, want data loss", err)
	}
	bad = *h
	bad.Key.Index = 6
	if _, err := ReadShardHeader(bytes.NewReader(bad.Marshal()), 64<<20); !errors.Is(err, ErrDataLoss) {
		t.Errorf("index outside scheme: err %v, want data loss", err)
	}
}

func TestShardHeaderValidate(t *testing.T) {
	base := testHeader(t, "4+2/1M", 1<<20, 0)
	cases := []struct {
		name string
		mod  func(h *ShardHeader)
		max  int64
	}{
		{"bad scheme", func(h *ShardHeader) { h.Scheme.M = 0 }, 1 << 30},
		{"index negative", func(h *ShardHeader) { h.Key.Index = -1 }, 1 << 30},
		{"index k+m", func(h *ShardHeader) { h.Key.Index = 6 }, 1 << 30},
		{"object too long", func(h *ShardHeader) { h.ObjectLen = 1<<20 + 1; h.ShardLen = h.Scheme.ShardSize(h.ObjectLen) }, 1 << 30},
		{"object negative", func(h *ShardHeader) { h.ObjectLen = -1 }, 1 << 30},
		{"shard length", func(h *ShardHeader) { h.ShardLen-- }, 1 << 30},
		{"too many sums", func(h *ShardHeader) { h.Sums = append(h.Sums, 1) }, 1 << 30},
		{"too few sums", func(h *ShardHeader) { h.Sums = h.Sums[1:] }, 1 << 30},
		{"over the limit", func(h *ShardHeader) {}, 128 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *base
			h.Sums = append([]uint32(nil), base.Sums...)
			tc.mod(&h)
			if err := h.Validate(tc.max); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("Validate: %v, want invalid argument", err)
			}
		})
	}
	if err := base.Validate(256 << 10); err != nil {
		t.Fatalf("valid header: %v", err)
	}
}

func TestParseObjectID(t *testing.T) {
	good := map[string]ObjectID{
		"0000000000000000": 0,
		"0000000000000001": 1,
		"0123456789abcdef": 0x0123456789abcdef,
		"ffffffffffffffff": 0xffffffffffffffff,
	}
	for s, want := range good {
		id, err := ParseObjectID(s)
		if err != nil || id != want {
			t.Errorf("ParseObjectID(%q) = %v, %v; want %v", s, id, err, want)
		}
		if id.String() != s {
			t.Errorf("%v.String() = %q, want %q", id, id.String(), s)
		}
	}
	bad := []string{
		"", "0", "zz", "../../etc", "../../etc/passwd",
		"0123456789ABCDEF", "0123456789abcdeF",
		"0123456789abcde", "0123456789abcdef0", "00000000000000000",
		"0x23456789abcdef", "+123456789abcdef", "-123456789abcdef",
		"0123456789abcdeg", "0123456789abcde ", " 123456789abcdef",
		"01234567_9abcdef", "0123456789abcd/f", "0123456789abcd\x00f",
	}
	for _, s := range bad {
		if id, err := ParseObjectID(s); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseObjectID(%q) = %v, %v; want invalid argument", s, id, err)
		}
	}
}

func TestParseShardKey(t *testing.T) {
	good := []ShardKey{
		{0, 0}, {1, 1}, {0x0123456789abcdef, 42}, {0xffffffffffffffff, 255},
	}
	for _, k := range good {
		s := k.String()
		if len(s) != 20 {
			t.Errorf("%v.String() = %q", k, s)
		}
		got, err := ParseShardKey(s)
		if err != nil || got != k {
			t.Errorf("ParseShardKey(%q) = %v, %v; want %v", s, got, err, k)
		}
	}
	bad := []string{
		"", "-", "0000000000000001", "0000000000000001-",
		"0000000000000001-256", "0000000000000001-999",
		"0000000000000001--01", "0000000000000001-+01", "0000000000000001-+1",
		"0000000000000001-1", "0000000000000001-01", "0000000000000001-0001",
		"0000000000000001-abc", "0000000000000001-0x1", "0000000000000001- 01",
		"0000000000000001-001-", "0000000000000001-001.tmp", "0000000000000001-001/x",
		"000000000000000A-001", "00000000000000001-001", "000000000000001-001",
		"../../etc-001", "../../etc/passwd", "zz-001",
		"0000000000000001_001",
	}
	for _, s := range bad {
		if k, err := ParseShardKey(s); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseShardKey(%q) = %v, %v; want invalid argument", s, k, err)
		}
	}
}

// The fan-out directory is a function of the object id only, has the
// documented form, and spreads sequential ids.
func TestFanout(t *testing.T) {
	seen := map[string]bool{}
	for i := range 256 {
		a := ShardKey{Object: ObjectID(i), Index: 0}.fanout()
		b := ShardKey{Object: ObjectID(i), Index: 7}.fanout()
		if a != b {
			t.Fatalf("fanout depends on the index: %s, %s", a, b)
		}
		if len(a) != 5 || a[2] != '/' || strings.Trim(a[:2]+a[3:], "0123456789abcdef") != "" {
			t.Fatalf("fanout %q", a)
		}
		seen[a[:2]] = true
	}
	if len(seen) < 100 {
		t.Errorf("256 sequential ids use only %d top-level directories", len(seen))
	}
}

func TestChecksumsWire(t *testing.T) {
	for _, sums := range [][]uint32{nil, {0}, {1, 2, 3}, {0xffffffff, 0x12345678}} {
		got, err := DecodeChecksums(EncodeChecksums(sums))
		if err != nil || len(got) != len(sums) {
			t.Fatalf("round trip of %v: %v, %v", sums, got, err)
		}
		for i := range sums {
			if got[i] != sums[i] {
				t.Fatalf("round trip of %v: %v", sums, got)
			}
		}
	}
	for _, s := range []string{"!", "AAA", "AAAA", "AAAAAAA=", "AAAAA===", "A", "AAAAAA"} {
		if _, err := DecodeChecksums(s); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("DecodeChecksums(%q): %v, want invalid argument", s, err)
		}
	}
}
