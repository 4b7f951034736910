package codec

import (
	"errors"
	"math"
	"strconv"
	"testing"
)

func TestParseSchemeValid(t *testing.T) {
	tests := []struct {
		in   string
		want Scheme
		str  string // canonical String() form
	}{
		{"4+2", Scheme{K: 4, M: 2, BlockSize: DefaultBlockSize}, "4+2"},
		{"8+3", Scheme{K: 8, M: 3, BlockSize: DefaultBlockSize}, "8+3"},
		{"1+1", Scheme{K: 1, M: 1, BlockSize: DefaultBlockSize}, "1+1"},
		{"4+2/1M", Scheme{K: 4, M: 2, BlockSize: 1 << 20}, "4+2/1M"},
		{"4+2/64K", Scheme{K: 4, M: 2, BlockSize: 64 << 10}, "4+2/64K"},
		{"4+2/4M", Scheme{K: 4, M: 2, BlockSize: 4 << 20}, "4+2"},
		{"4+2/1024K", Scheme{K: 4, M: 2, BlockSize: 1 << 20}, "4+2/1M"},
		{"4+2/131072", Scheme{K: 4, M: 2, BlockSize: 128 << 10}, "4+2/128K"},
		{"10+4/192K", Scheme{K: 10, M: 4, BlockSize: 192 << 10}, "10+4/192K"},
		{"200+56", Scheme{K: 200, M: 56, BlockSize: DefaultBlockSize}, "200+56"}, // k+m == 256
		{"1+255", Scheme{K: 1, M: 255, BlockSize: DefaultBlockSize}, "1+255"},
		{"4+2/1024M", Scheme{K: 4, M: 2, BlockSize: 1 << 30}, "4+2/1024M"}, // the largest
		{" 4+2 ", Scheme{K: 4, M: 2, BlockSize: DefaultBlockSize}, "4+2"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseScheme(tt.in)
			if err != nil {
				t.Fatalf("ParseScheme(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseScheme(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate(%+v): %v", got, err)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
			back, err := ParseScheme(got.String())
			if err != nil || back != got {
				t.Errorf("ParseScheme(String()=%q) = %+v, %v; want %+v", got.String(), back, err, got)
			}
			if got.Shards() != tt.want.K+tt.want.M {
				t.Errorf("Shards() = %d", got.Shards())
			}
		})
	}
}

func TestParseSchemeInvalid(t *testing.T) {
	maxInt := strconv.Itoa(math.MaxInt)
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"no plus", "4"},
		{"k zero", "0+2"},
		{"m zero", "4+0"},
		{"k negative", "-1+2"},
		{"m negative", "4+-2"},
		{"too many shards", "200+57"},
		{"size not chunk multiple", "4+2/100K"},
		{"size zero", "4+2/0"},
		{"size negative", "4+2/-64K"},
		{"letters", "a+b"},
		{"signed m", "4++2"},
		{"signed k", "+4+2"},
		{"signed size", "4+2/+64K"},
		{"negative size", "4+2/-64K"},
		{"size letters", "4+2/xyz"},
		{"size empty", "4+2/"},
		{"size suffix only", "4+2/M"},
		{"size lowercase suffix", "4+2/64k"},
		{"size over 1GiB", "4+2/1025M"},
		{"size overflow", "4+2/99999999999999999999M"},
		{"size small bytes", "4+2/65535"},
		{"k missing", "+2"},
		{"m missing", "4+"},
		{"float", "4.0+2"},
		{"two slashes", "4+2/64K/64K"},
		// k+m must not overflow past the MaxShards check.
		{"k maxint", maxInt + "+1"},
		{"m maxint", "1+" + maxInt},
		{"k and m maxint", maxInt + "+" + maxInt},
		{"k huge", "99999999999999999999+1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScheme(tt.in)
			if err == nil {
				t.Fatalf("ParseScheme(%q) = %+v, want error", tt.in, got)
			}
			if !errors.Is(err, ErrInvalidScheme) {
				t.Fatalf("ParseScheme(%q) error %v does not wrap ErrInvalidScheme", tt.in, err)
			}
		})
	}
}

func TestSchemeValidate(t *testing.T) {
	tests := []struct {
		name string
		s    Scheme
		ok   bool
	}{
		{"4+2", Scheme{4, 2, DefaultBlockSize}, true},
		{"256 shards", Scheme{128, 128, ChunkSize}, true},
		{"257 shards", Scheme{128, 129, ChunkSize}, false},
		{"zero value", Scheme{}, false},
		{"no block size", Scheme{4, 2, 0}, false},
		{"negative block size", Scheme{4, 2, -ChunkSize}, false},
		{"odd block size", Scheme{4, 2, ChunkSize + 1}, false},
		{"block size 1GiB", Scheme{4, 2, 1 << 30}, true},
		{"block size over 1GiB", Scheme{4, 2, 1<<30 + ChunkSize}, false},
		{"k+m overflows", Scheme{math.MaxInt, 1, ChunkSize}, false},
		{"m+k overflows", Scheme{1, math.MaxInt, ChunkSize}, false},
		{"both max", Scheme{math.MaxInt, math.MaxInt, ChunkSize}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate(%+v) = %v, want nil", tt.s, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidScheme) {
				t.Fatalf("Validate(%+v) = %v, want ErrInvalidScheme", tt.s, err)
			}
			// New must agree with Validate.
			c, err := New(tt.s)
			if tt.ok != (err == nil) {
				t.Fatalf("New(%+v) = %v, %v; Validate ok=%v", tt.s, c, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidScheme) {
				t.Fatalf("New(%+v) error %v does not wrap ErrInvalidScheme", tt.s, err)
			}
			if tt.ok {
				if c.Scheme() != tt.s {
					t.Fatalf("Scheme() = %+v", c.Scheme())
				}
				back, err := ParseScheme(tt.s.String())
				if err != nil || back != tt.s {
					t.Fatalf("round trip of %q: %+v, %v", tt.s.String(), back, err)
				}
			}
		})
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, k := range []int{1, 2, 4, 8, 17, 128, 255} {
		for _, m := range []int{1, 2, 3, 100} {
			if k+m > MaxShards {
				continue
			}
			for _, bs := range []int{ChunkSize, 2 * ChunkSize, 3 * ChunkSize, 1 << 20, 5 * ChunkSize * 16, DefaultBlockSize, 3 << 20, 1 << 30} {
				s := Scheme{K: k, M: m, BlockSize: bs}
				got, err := ParseScheme(s.String())
				if err != nil || got != s {
					t.Errorf("ParseScheme(%q) = %+v, %v; want %+v", s.String(), got, err, s)
				}
			}
		}
	}
}

func TestShardSizeAndChunks(t *testing.T) {
	s := Scheme{K: 4, M: 2, BlockSize: DefaultBlockSize}
	shardTests := []struct{ n, want int64 }{
		{0, 0}, {1, 1}, {4, 1}, {5, 2}, {4095, 1024}, {65536, 16384}, {65537, 16385}, {4 << 20, 1 << 20},
	}
	for _, tt := range shardTests {
		if got := s.ShardSize(tt.n); got != tt.want {
			t.Errorf("ShardSize(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
	chunkTests := []struct {
		n    int64
		want int
	}{
		{0, 0}, {1, 1}, {ChunkSize - 1, 1}, {ChunkSize, 1}, {ChunkSize + 1, 2}, {1 << 20, 16}, {1<<20 + 1, 17},
	}
	for _, tt := range chunkTests {
		if got := Chunks(tt.n); got != tt.want {
			t.Errorf("Chunks(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}
