package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ecfs/ecfs/codec"
)

const cs = codec.ChunkSize

func TestPutGetStatDelete(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(1, 2))
	sc := mustScheme(t, "4+2")
	olen := int64(4<<20 - 1000) // shard of 16 chunks, the last one short
	k := ShardKey{Object: 0xabc, Index: 3}
	data := putShard(t, c, st.addr, k, sc, olen, rng)
	slen := int64(len(data))
	if slen != sc.ShardSize(olen) || codec.Chunks(slen) != 16 || slen%cs == 0 {
		t.Fatalf("test shard of %d bytes", slen)
	}

	t.Run("whole", func(t *testing.T) {
		r, err := c.Get(ctx, st.addr, k, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Data, data) {
			t.Fatal("whole shard differs")
		}
		if r.Scheme != sc || r.ObjectLen != olen || r.ShardLen != slen || r.FirstChunk != 0 || !slices.Equal(r.Sums, codec.Checksums(data)) {
			t.Fatalf("range metadata %+v", r)
		}
	})

	ranges := []struct {
		name   string
		off, n int64
	}{
		{"first chunk", 0, cs},
		{"second chunk", cs, cs},
		{"two chunks", 3 * cs, 2 * cs},
		{"to the end", 15 * cs, slen - 15*cs},
		{"last chunks to the end", 13 * cs, slen - 13*cs},
		{"whole as a range", 0, slen},
		{"one byte", 1, 1},
		{"last byte", slen - 1, 1},
		{"unaligned start", 100, cs},
		{"unaligned end", cs, 100},
		{"crossing a boundary", cs - 5, 10},
		{"unaligned long", 12345, 5*cs + 777},
		{"unaligned to the end", slen - cs - 3, cs + 3},
	}
	for _, tc := range ranges {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Get(ctx, st.addr, k, tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Data, data[tc.off:tc.off+tc.n]) {
				t.Fatalf("range [%d,+%d) differs", tc.off, tc.n)
			}
			first := int(tc.off / cs)
			last := codec.Chunks(tc.off + tc.n)
			if r.FirstChunk != first || !slices.Equal(r.Sums, codec.Checksums(data)[first:last]) {
				t.Fatalf("chunk sums: first %d, %d sums; want %d, %d", r.FirstChunk, len(r.Sums), first, last-first)
			}
		})
	}

	t.Run("beyond the end", func(t *testing.T) {
		for _, rg := range [][2]int64{{slen, 1}, {0, slen + 1}, {slen - 1, 2}} {
			if _, err := c.Get(ctx, st.addr, k, rg[0], rg[1]); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("Get(%d, %d): %v, want invalid argument", rg[0], rg[1], err)
			}
		}
		if _, err := c.Get(ctx, st.addr, k, 5, 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("empty range: %v", err)
		}
	})

	t.Run("stat", func(t *testing.T) {
		s, err := c.Stat(ctx, st.addr, k)
		if err != nil {
			t.Fatal(err)
		}
		if s.Scheme != sc || s.ObjectLen != olen || s.ShardLen != slen || !slices.Equal(s.Sums, codec.Checksums(data)) {
			t.Fatalf("stat %+v", s)
		}
	})

	t.Run("verify", func(t *testing.T) {
		v, err := c.Verify(ctx, st.addr, k)
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK || len(v.BadChunks) != 0 || v.Key != k.String() || v.Error != "" {
			t.Fatalf("verify %+v", v)
		}
	})

	t.Run("other index is another shard", func(t *testing.T) {
		if _, err := c.Get(ctx, st.addr, ShardKey{k.Object, 2}, 0, -1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of another index: %v, want not found", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.Delete(ctx, st.addr, k); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, st.addr, k, 0, -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after delete: %v, want not found", err)
		}
		if _, err := c.Get(ctx, st.addr, k, 0, 10); !errors.Is(err, ErrNotFound) {
			t.Errorf("ranged Get after delete: %v, want not found", err)
		}
		if _, err := c.Stat(ctx, st.addr, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat after delete: %v, want not found", err)
		}
		if _, err := c.Verify(ctx, st.addr, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("Verify after delete: %v, want not found", err)
		}
		if err := c.Delete(ctx, st.addr, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("second Delete: %v, want not found", err)
		}
		if keys := listAll(t, c, st.addr, 0); len(keys) != 0 {
			t.Errorf("listing after delete: %v", keys)
		}
	})
	assertTmpEmpty(t, st)
}

func TestPutReplaces(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(3, 4))
	k := ShardKey{Object: 77, Index: 0}
	putShard(t, c, st.addr, k, mustScheme(t, "2+1/1M"), 1<<20, rng)
	sc := mustScheme(t, "3+2/256K")
	second := putShard(t, c, st.addr, k, sc, 1000, rng)
	r, err := c.Get(testCtx(t), st.addr, k, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Data, second) || r.Scheme != sc || r.ObjectLen != 1000 {
		t.Fatalf("after a second put: scheme %s, object %d, %d bytes", r.Scheme, r.ObjectLen, len(r.Data))
	}
	if keys := listAll(t, c, st.addr, 0); !slices.Equal(keys, []string{k.String()}) {
		t.Fatalf("listing %v", keys)
	}
}

func TestPutEmptyShard(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	ctx := testCtx(t)
	k := ShardKey{Object: 5, Index: 1}
	sc := mustScheme(t, "4+2")
	if err := c.Put(ctx, st.addr, k, sc, 0, []byte{}, nil); err != nil {
		t.Fatalf("Put of an empty shard: %v", err)
	}
	r, err := c.Get(ctx, st.addr, k, 0, -1)
	if err != nil {
		t.Fatalf("Get of an empty shard: %v", err)
	}
	if len(r.Data) != 0 || r.ShardLen != 0 || r.ObjectLen != 0 || len(r.Sums) != 0 {
		t.Fatalf("empty shard read as %+v", r)
	}
	if s, err := c.Stat(ctx, st.addr, k); err != nil || s.ShardLen != 0 {
		t.Fatalf("Stat: %+v, %v", s, err)
	}
	if v, err := c.Verify(ctx, st.addr, k); err != nil || !v.OK {
		t.Fatalf("Verify: %+v, %v", v, err)
	}
	if _, err := c.Get(ctx, st.addr, k, 0, 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("range of an empty shard: %v, want invalid argument", err)
	}
	// An empty body for a non-empty object is refused.
	if err := c.Put(ctx, st.addr, ShardKey{6, 0}, sc, 10, []byte{}, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty body for 10 bytes: %v, want invalid argument", err)
	}
}

func TestPutWrongChecksums(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(5, 6))
	sc := mustScheme(t, "2+1/1M")
	olen := int64(300 << 10) // 150 KiB shards: 3 chunks
	data, sums := testShard(rng, sc, olen)
	cases := []struct {
		name string
		sums func() []uint32
		data func() []byte
	}{
		{"first chunk", func() []uint32 { s := slices.Clone(sums); s[0]++; return s }, nil},
		{"last chunk", func() []uint32 { s := slices.Clone(sums); s[2] ^= 1; return s }, nil},
		{"data flipped", nil, func() []byte { d := slices.Clone(data); d[cs+7] ^= 0x10; return d }},
		{"too few", func() []uint32 { return sums[:2] }, nil},
		{"too many", func() []uint32 { return append(slices.Clone(sums), 0) }, nil},
		{"none", func() []uint32 { return nil }, nil},
		{"swapped", func() []uint32 { return []uint32{sums[1], sums[0], sums[2]} }, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := ShardKey{Object: ObjectID(100 + i), Index: 1}
			s, d := sums, data
			if tc.sums != nil {
				s = tc.sums()
			}
			if tc.data != nil {
				d = tc.data()
			}
			if err := c.Put(ctx, st.addr, k, sc, olen, d, s); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("Put: %v, want invalid argument", err)
			}
			if _, err := c.Get(ctx, st.addr, k, 0, -1); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after a refused put: %v, want not found", err)
			}
			assertTmpEmpty(t, st)
		})
	}
	if keys := listAll(t, c, st.addr, 0); len(keys) != 0 {
		t.Fatalf("refused puts left %v", keys)
	}
}

// A client must not return bytes that do not match the checksums the store
// sent when it can check them (the range is chunk-aligned).
func TestClientVerifiesAlignedRanges(t *testing.T) {
	flip := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.Header.Get("X-Test-Direct") == "" {
				w = &flipWriter{ResponseWriter: w}
			}
			h.ServeHTTP(w, r)
		})
	}
	st := newTestStoreWrapped(t, flip)
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(7, 8))
	sc := mustScheme(t, "2+1/1M")
	k := ShardKey{Object: 9, Index: 2}
	data := putShard(t, c, st.addr, k, sc, 1<<20-3, rng) // 512 KiB - 1
	for _, rg := range [][2]int64{{0, -1}, {0, cs}, {cs, 2 * cs}, {7 * cs, int64(len(data)) - 7*cs}} {
		if _, err := c.Get(ctx, st.addr, k, rg[0], rg[1]); !errors.Is(err, ErrDataLoss) {
			t.Errorf("Get(%d, %d) of flipped bytes: %v, want data loss", rg[0], rg[1], err)
		}
	}
	// Unaligned: the client cannot check, the flipped byte comes through.
	r, err := c.Get(ctx, st.addr, k, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	if r.Data[0] != data[10]^1 || !bytes.Equal(r.Data[1:], data[11:30]) {
		t.Fatal("wrapper did not flip the first byte")
	}
}

// gatedReader closes started at its first Read and then waits for gate.
type gatedReader struct {
	r       io.Reader
	started chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (g *gatedReader) Read(p []byte) (int, error) {
	g.once.Do(func() { close(g.started) })
	<-g.gate
	return g.r.Read(p)
}

// flipWriter flips the lowest bit of the first body byte.
type flipWriter struct {
	http.ResponseWriter
	done bool
}

func (w *flipWriter) Write(b []byte) (int, error) {
	if !w.done && len(b) > 0 {
		w.done = true
		b = bytes.Clone(b)
		b[0] ^= 1
	}
	return w.ResponseWriter.Write(b)
}

func TestCapacity(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	capa, err := c.Capacity(testCtx(t), st.addr)
	if err != nil {
		t.Fatal(err)
	}
	if capa.StoreID != st.srv.ID() || !validUUID(capa.StoreID) {
		t.Fatalf("store id %q, server says %q", capa.StoreID, st.srv.ID())
	}
	if capa.Free <= 0 || capa.Total < capa.Free || len(capa.Disks) != 1 {
		t.Fatalf("capacity %+v", capa)
	}
	if capa.Disks[0].Path != st.diskDir() || capa.Disks[0].Error != "" {
		t.Fatalf("disk %+v, want %s", capa.Disks[0], st.diskDir())
	}
	resp, _ := rawRequest(t, st, "GET", "/v1/capacity", "Bearer "+testSecret, nil, nil)
	if resp.Header.Get(hdrStoreID) != st.srv.ID() {
		t.Fatalf("store id header %q", resp.Header.Get(hdrStoreID))
	}
}

func TestListPagination(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(9, 10))
	sc := mustScheme(t, "4+2/256K")
	want := map[string]bool{}
	for i := 0; len(want) < 50; i++ {
		// Random ids spread over fan-out dirs; some objects with several
		// shards share a directory.
		k := ShardKey{Object: ObjectID(rng.Uint64()), Index: rng.IntN(6)}
		if i%5 == 0 {
			k.Object = ObjectID(i / 10)
		}
		putShard(t, c, st.addr, k, sc, int64(rng.IntN(1000)), rng)
		want[k.String()] = true
	}

	check := func(t *testing.T, limit int, want map[string]bool) []string {
		t.Helper()
		keys := listAll(t, c, st.addr, limit)
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("limit %d: %s listed twice", limit, k)
			}
			seen[k] = true
			if !want[k] {
				t.Errorf("limit %d: %s listed, not stored", limit, k)
			}
		}
		for k := range want {
			if !seen[k] {
				t.Errorf("limit %d: %s missing", limit, k)
			}
		}
		return keys
	}
	var order []string
	for _, limit := range []int{7, 1, 2, 49, 50, 51, 0} {
		keys := check(t, limit, want)
		if order == nil {
			order = keys
		} else if !slices.Equal(order, keys) {
			t.Errorf("limit %d lists in another order", limit)
		}
	}

	// Sizes and times are filled in.
	res, err := c.List(ctx, st.addr, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if res.Next != "" || len(res.Shards) != 50 {
		t.Fatalf("one page of 100: %d shards, next %q", len(res.Shards), res.Next)
	}
	for _, s := range res.Shards {
		if s.Size < headerAlign || s.ModTime.IsZero() {
			t.Errorf("entry %+v", s)
		}
	}

	// Deleted shards vanish from the listing.
	deleted := 0
	var gone []string
	for k := range want {
		if deleted == 13 {
			break
		}
		key, err := ParseShardKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, st.addr, key); err != nil {
			t.Fatal(err)
		}
		delete(want, k)
		gone = append(gone, k)
		deleted++
	}
	for _, limit := range []int{7, 3, 0} {
		check(t, limit, want)
	}

	// A cursor that is not a stored key (here: deleted ones) still works:
	// it is a position in listing order (fan-out directory, then key).
	keys := listAll(t, c, st.addr, 0)
	pos := func(s string) string {
		k, err := ParseShardKey(s)
		if err != nil {
			t.Fatal(err)
		}
		return k.fanout() + "/" + s
	}
	for _, after := range append(gone, "0000000000000000-000", "ffffffffffffffff-255") {
		var want []string
		for _, k := range keys {
			if pos(k) > pos(after) {
				want = append(want, k)
			}
		}
		page, err := c.List(ctx, st.addr, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range page.Shards {
			got = append(got, s.Key)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("list after %s:\n got %v\nwant %v", after, got, want)
		}
	}
}

func TestListManyDisks(t *testing.T) {
	dir := t.TempDir()
	d1, d2 := filepath.Join(dir, "d1"), filepath.Join(dir, "d2")
	st := newTestStore(t, withDisks(d1, d2))
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(11, 12))
	sc := mustScheme(t, "2+1/128K")
	var want []string
	datas := map[ShardKey][]byte{}
	for i := range 20 {
		k := ShardKey{Object: ObjectID(1000 + i), Index: i % 3}
		datas[k] = putShard(t, c, st.addr, k, sc, 100000, rng)
		want = append(want, k.String())
	}
	// A stale copy of a shard on the other disk is listed once and removed
	// by the next put of that shard.
	k := ShardKey{Object: 1000, Index: 0}
	var src, other string
	for _, d := range []string{d1, d2} {
		p := filepath.Join(d, shardsDir, k.fanout(), k.String())
		if _, err := os.Stat(p); err == nil {
			src = p
		} else {
			other = filepath.Join(d, shardsDir, k.fanout(), k.String())
		}
	}
	if src == "" || other == "" {
		t.Fatalf("shard %s is on no disk or on both", k)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(other), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, b, 0o640); err != nil {
		t.Fatal(err)
	}
	keys := listAll(t, c, st.addr, 3)
	sort.Strings(keys)
	sort.Strings(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("listing over two disks:\n got %v\nwant %v", keys, want)
	}
	for k, d := range datas {
		r, err := c.Get(ctx, st.addr, k, 0, -1)
		if err != nil || !bytes.Equal(r.Data, d) {
			t.Fatalf("Get %s: %v", k, err)
		}
	}
	if err := c.Delete(ctx, st.addr, k); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{src, other} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after delete: %v", p, err)
		}
	}
}

func TestAuth(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(13, 14))
	sc := mustScheme(t, "2+1/128K")
	k := ShardKey{Object: 1, Index: 0}
	putShard(t, c, st.addr, k, sc, 1000, rng)
	before := gatherCounter(t, st.reg, "ecfs_store_auth_failures_total")
	if before != 0 {
		t.Fatalf("auth failures before any: %v", before)
	}

	auths := []struct{ name, value string }{
		{"missing", ""},
		{"wrong secret", "Bearer " + strings.Repeat("x", len(testSecret))},
		{"basic", "Basic x"},
		{"basic with the secret", "Basic " + testSecret},
		{"lower-case scheme", "bearer " + testSecret},
		{"secret prefix", "Bearer " + testSecret[:len(testSecret)-1]},
		{"secret and more", "Bearer " + testSecret + "0"},
		{"no space", "Bearer" + testSecret},
		{"empty bearer", "Bearer "},
	}
	calls := []struct{ method, path string }{
		{"GET", "/v1/shards/" + k.Object.String() + "/000"},
		{"HEAD", "/v1/shards/" + k.Object.String() + "/000"},
		{"DELETE", "/v1/shards/" + k.Object.String() + "/000"},
		{"POST", "/v1/shards/" + k.Object.String() + "/000/verify"},
		{"GET", "/v1/shards"},
		{"GET", "/v1/capacity"},
		{"GET", "/nowhere"},
	}
	n := 0
	for _, a := range auths {
		for _, call := range calls {
			t.Run(a.name+" "+call.method+" "+call.path, func(t *testing.T) {
				resp, body := rawRequest(t, st, call.method, call.path, a.value, nil, nil)
				n++
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401", resp.StatusCode)
				}
				if got := resp.Header.Get(hdrCode); got != string(CodeUnauthenticated) {
					t.Fatalf("code %q", got)
				}
				if bytes.Contains(body, []byte(testSecret)) || strings.Contains(resp.Header.Get(hdrMessage), testSecret) {
					t.Fatal("the answer contains the secret")
				}
			})
		}
	}
	if got := gatherCounter(t, st.reg, "ecfs_store_auth_failures_total"); got != before+float64(n) {
		t.Fatalf("auth failures counter %v, want %v", got, before+float64(n))
	}

	bad := newClientWithSecret(t, "fedcba9876543210fedcba9876543210")
	k2 := ShardKey{Object: 2, Index: 0}
	data, sums := testShard(rng, sc, 1000)
	if err := bad.Put(ctx, st.addr, k2, sc, 1000, data, sums); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Put with a wrong secret: %v", err)
	}
	if _, err := bad.Get(ctx, st.addr, k, 0, -1); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Get with a wrong secret: %v", err)
	}
	if _, err := bad.Stat(ctx, st.addr, k); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Stat with a wrong secret: %v", err)
	}
	if err := bad.Delete(ctx, st.addr, k); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Delete with a wrong secret: %v", err)
	}
	if _, err := bad.List(ctx, st.addr, "", 0); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("List with a wrong secret: %v", err)
	}
	if _, err := bad.Capacity(ctx, st.addr); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Capacity with a wrong secret: %v", err)
	}
	if got := gatherCounter(t, st.reg, "ecfs_store_auth_failures_total"); got != before+float64(n)+6 {
		t.Errorf("auth failures counter %v, want %v", got, before+float64(n)+6)
	}
	// Nothing was changed by the rejected calls.
	if keys := listAll(t, c, st.addr, 0); !slices.Equal(keys, []string{k.String()}) {
		t.Fatalf("listing %v", keys)
	}
}

func TestMalformedRequests(t *testing.T) {
	st := newTestStore(t, withMaxShard(128<<10))
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(15, 16))
	sc := mustScheme(t, "2+1/128K")
	existing := ShardKey{Object: 0x42, Index: 1}
	putShard(t, c, st.addr, existing, sc, 100000, rng) // 50000 bytes
	shardPath := "/v1/shards/" + existing.Object.String() + "/001"

	// A valid upload whose parts the cases spoil one at a time.
	okData, okSums := testShard(rng, sc, 100000)
	okHdr := map[string]string{
		hdrScheme:    sc.String(),
		hdrObjectLen: "100000",
		hdrChecksums: EncodeChecksums(okSums),
	}
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for a, b := range okHdr {
			h[a] = b
		}
		if v == "\x00" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	big := randBytes(rng, 200<<10)
	bigSc := mustScheme(t, "1+1/256K")
	bigHdr := map[string]string{hdrScheme: bigSc.String(), hdrObjectLen: "204800", hdrChecksums: EncodeChecksums(codec.Checksums(big))}
	over := randBytes(rng, 64<<10)
	overSc := mustScheme(t, "1+1/64K")
	overHdr := map[string]string{hdrScheme: overSc.String(), hdrObjectLen: "65537", hdrChecksums: EncodeChecksums(codec.Checksums(over))}
	newPath := "/v1/shards/0000000000000099/000"

	cases := []struct {
		name       string
		method     string
		path       string
		hdr        map[string]string
		body       []byte
		wantStatus int
	}{
		{"id zz", "PUT", "/v1/shards/zz/000", okHdr, okData, 400},
		{"id ../x", "PUT", "/v1/shards/..%2Fx/000", okHdr, okData, 400},
		{"id ..", "GET", "/v1/shards/%2E%2E/000", nil, nil, 400},
		{"id 17 digits", "PUT", "/v1/shards/00000000000000099/000", okHdr, okData, 400},
		{"id 15 digits", "GET", "/v1/shards/000000000000042/001", nil, nil, 400},
		{"id upper case", "PUT", "/v1/shards/00000000000000AA/000", okHdr, okData, 400},
		{"index 999", "PUT", "/v1/shards/0000000000000099/999", okHdr, okData, 400},
		{"index 256", "PUT", "/v1/shards/0000000000000099/256", okHdr, okData, 400},
		{"index abc", "PUT", "/v1/shards/0000000000000099/abc", okHdr, okData, 400},
		{"index -01", "PUT", "/v1/shards/0000000000000099/-01", okHdr, okData, 400},
		{"index +01", "GET", "/v1/shards/0000000000000042/+01", nil, nil, 400},
		{"index outside scheme", "PUT", "/v1/shards/0000000000000099/003", okHdr, okData, 400},
		{"no scheme", "PUT", newPath, with(hdrScheme, "\x00"), okData, 400},
		{"bad scheme", "PUT", newPath, with(hdrScheme, "two+one"), okData, 400},
		{"scheme m=0", "PUT", newPath, with(hdrScheme, "2+0/128K"), okData, 400},
		{"scheme k+m > 256", "PUT", newPath, with(hdrScheme, "200+57/128K"), okData, 400},
		{"scheme odd block", "PUT", newPath, with(hdrScheme, "2+1/100K"), okData, 400},
		{"other scheme", "PUT", newPath, with(hdrScheme, "3+1/128K"), okData, 400},
		{"no object length", "PUT", newPath, with(hdrObjectLen, "\x00"), okData, 400},
		{"object length junk", "PUT", newPath, with(hdrObjectLen, "1e5"), okData, 400},
		{"object length negative", "PUT", newPath, with(hdrObjectLen, "-100000"), okData, 400},
		{"object length wrong", "PUT", newPath, with(hdrObjectLen, "99998"), okData, 400},
		{"object length over block", "PUT", newPath, overHdr, over[:32769], 400},
		{"object length huge", "PUT", newPath, with(hdrObjectLen, "9223372036854775807"), okData, 400},
		{"content length over max", "PUT", newPath, bigHdr, big, 413},
		{"no checksums", "PUT", newPath, with(hdrChecksums, "\x00"), okData, 400},
		{"checksums not base64", "PUT", newPath, with(hdrChecksums, "!!!!"), okData, 400},
		{"checksums odd length", "PUT", newPath, with(hdrChecksums, "AAAA"), okData, 400},
		{"checksums wrong", "PUT", newPath, with(hdrChecksums, EncodeChecksums([]uint32{1})), okData, 400},
		{"body short", "PUT", newPath, okHdr, okData[:len(okData)-1], 400},
		{"body long", "PUT", newPath, okHdr, append(slices.Clone(okData), 0), 400},
		{"no body", "PUT", newPath, okHdr, nil, 400},
		{"range past the end", "GET", shardPath, map[string]string{"Range": "bytes=0-50000"}, nil, 400},
		{"range start past the end", "GET", shardPath, map[string]string{"Range": "bytes=50000-50000"}, nil, 400},
		{"range reversed", "GET", shardPath, map[string]string{"Range": "bytes=10-5"}, nil, 400},
		{"range suffix", "GET", shardPath, map[string]string{"Range": "bytes=-5"}, nil, 400},
		{"range open", "GET", shardPath, map[string]string{"Range": "bytes=5-"}, nil, 400},
		{"range many", "GET", shardPath, map[string]string{"Range": "bytes=0-1,3-4"}, nil, 400},
		{"range unit", "GET", shardPath, map[string]string{"Range": "items=0-1"}, nil, 400},
		{"range junk", "GET", shardPath, map[string]string{"Range": "bytes=a-b"}, nil, 400},
		{"range negative", "GET", shardPath, map[string]string{"Range": "bytes=-1-3"}, nil, 400},
		{"range overflow", "GET", shardPath, map[string]string{"Range": "bytes=0-9223372036854775807"}, nil, 400},
		{"get missing", "GET", newPath, nil, nil, 404},
		{"stat missing", "HEAD", newPath, nil, nil, 404},
		{"delete missing", "DELETE", newPath, nil, nil, 404},
		{"verify missing", "POST", newPath + "/verify", nil, nil, 404},
		{"list limit 0", "GET", "/v1/shards?limit=0", nil, nil, 400},
		{"list limit junk", "GET", "/v1/shards?limit=x", nil, nil, 400},
		{"list limit huge", "GET", "/v1/shards?limit=10001", nil, nil, 400},
		{"list after junk", "GET", "/v1/shards?after=../../etc", nil, nil, 400},
		{"unknown path", "GET", "/v2/shards", nil, nil, 400},
		{"too deep", "GET", shardPath + "/x", nil, nil, 400},
		{"post shard", "POST", shardPath, nil, nil, 400},
		{"put capacity", "PUT", "/v1/capacity", nil, []byte("x"), 400},
		{"patch", "PATCH", shardPath, nil, []byte("x"), 400},
		{"verify with get", "GET", shardPath + "/verify", nil, nil, 400},
	}
	auth := "Bearer " + testSecret
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawRequest(t, st, tc.method, tc.path, auth, tc.hdr, tc.body)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d (%s %s)", resp.StatusCode, tc.wantStatus, resp.Header.Get(hdrCode), resp.Header.Get(hdrMessage))
			}
			if code := resp.Header.Get(hdrCode); code == "" || code == string(CodeInternal) {
				t.Errorf("code %q", code)
			}
			if tc.method != "HEAD" && !bytes.Contains(body, []byte(`"code"`)) {
				t.Errorf("body %q is not a JSON error", body)
			}
			assertTmpEmpty(t, st)
		})
	}
	if keys := listAll(t, c, st.addr, 0); !slices.Equal(keys, []string{existing.String()}) {
		t.Fatalf("after malformed requests the store holds %v", keys)
	}

	// The same valid upload is accepted (the cases above were refused for
	// the one thing they spoil).
	resp, _ := rawRequest(t, st, "PUT", newPath, auth, okHdr, okData)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("valid raw put: %d %s", resp.StatusCode, resp.Header.Get(hdrMessage))
	}
}

func TestCorruptChunk(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(17, 18))
	sc := mustScheme(t, "4+2")
	k := ShardKey{Object: 0xc0, Index: 4}
	data := putShard(t, c, st.addr, k, sc, 4<<20-100, rng) // 16 chunks, the last short
	slen := int64(len(data))
	const bad = 5
	corruptShardData(t, st, k, bad*cs+1234)

	cases := []struct {
		name   string
		off, n int64
		ok     bool
	}{
		{"whole", 0, -1, false},
		{"the chunk", bad * cs, cs, false},
		{"one byte of it", bad*cs + 1234, 1, false},
		{"unaligned in it", bad*cs + 10, 20, false},
		{"from before it", 4 * cs, 2 * cs, false},             // trailer path
		{"unaligned from before it", 3*cs + 7, 3 * cs, false}, // trailer path
		{"from the start", 0, 8 * cs, false},                  // trailer path
		{"up to its start", 0, bad * cs, true},
		{"after it", (bad + 1) * cs, slen - (bad+1)*cs, true},
		{"byte before it", bad*cs - 1, 1, true},
		{"unaligned before it", 2*cs + 3, 3*cs - 3, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Get(ctx, st.addr, k, tc.off, tc.n)
			if !tc.ok {
				if !errors.Is(err, ErrDataLoss) {
					t.Fatalf("Get(%d, %d): %v, want data loss", tc.off, tc.n, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Get(%d, %d): %v", tc.off, tc.n, err)
			}
			if !bytes.Equal(r.Data, data[tc.off:tc.off+tc.n]) {
				t.Fatal("bytes differ")
			}
		})
	}
	v, err := c.Verify(ctx, st.addr, k)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || !slices.Equal(v.BadChunks, []int{bad}) {
		t.Fatalf("verify %+v, want bad chunk %d", v, bad)
	}
	if n := gatherCounter(t, st.reg, "ecfs_store_corrupt_chunks_total"); n < 1 {
		t.Fatalf("corrupt chunks counter %v", n)
	}

	// The last, short chunk too.
	corruptShardData(t, st, k, slen-1)
	v, err = c.Verify(ctx, st.addr, k)
	if err != nil || v.OK || !slices.Equal(v.BadChunks, []int{bad, 15}) {
		t.Fatalf("verify %+v, %v; want bad chunks %d and 15", v, err, bad)
	}
	if _, err := c.Get(ctx, st.addr, k, 15*cs, slen-15*cs); !errors.Is(err, ErrDataLoss) {
		t.Fatalf("Get of the last chunk: %v", err)
	}
	if _, err := c.Get(ctx, st.addr, k, 14*cs, cs); err != nil {
		t.Fatalf("Get of chunk 14: %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	const olen = 1<<20 - 5 // 4 chunks
	cases := []struct {
		name    string
		corrupt func(t *testing.T, path string)
	}{
		{"header object length", func(t *testing.T, p string) { flipByte(t, p, 33) }},
		{"header magic", func(t *testing.T, p string) { flipByte(t, p, 0) }},
		{"header checksum", func(t *testing.T, p string) { flipByte(t, p, 53) }},
		{"header chunk sum", func(t *testing.T, p string) { flipByte(t, p, fixedHeaderLen+5) }},
		{"truncated by one", func(t *testing.T, p string) { truncate(t, p, -1) }},
		{"truncated to the header", func(t *testing.T, p string) { truncate(t, p, -(sc.ShardSize(olen))) }},
		{"truncated in the header", func(t *testing.T, p string) { truncateTo(t, p, 30) }},
		{"empty", func(t *testing.T, p string) { truncateTo(t, p, 0) }},
		{"extended", func(t *testing.T, p string) { truncate(t, p, 1) }},
		{"another shard's file", func(t *testing.T, p string) {
			other := strings.TrimSuffix(p, "001") + "002"
			b, err := os.ReadFile(other)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o640); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := newTestStore(t)
			c := newTestClient(t)
			ctx := testCtx(t)
			rng := rand.New(rand.NewPCG(19, uint64(i)))
			k := ShardKey{Object: ObjectID(0x1000 + i), Index: 1}
			putShard(t, c, st.addr, k, sc, olen, rng)
			putShard(t, c, st.addr, ShardKey{k.Object, 2}, sc, olen, rng)
			tc.corrupt(t, shardFilePath(t, st, k))
			for _, rg := range [][2]int64{{0, -1}, {0, cs}, {2 * cs, 100}} {
				if _, err := c.Get(ctx, st.addr, k, rg[0], rg[1]); !errors.Is(err, ErrDataLoss) {
					t.Errorf("Get(%d, %d): %v, want data loss", rg[0], rg[1], err)
				}
			}
			if _, err := c.Stat(ctx, st.addr, k); !errors.Is(err, ErrDataLoss) {
				t.Errorf("Stat: %v, want data loss", err)
			}
			v, err := c.Verify(ctx, st.addr, k)
			if err != nil || v.OK || v.Error == "" {
				t.Errorf("Verify: %+v, %v; want not OK with an error", v, err)
			}
			// The damaged shard can be deleted and replaced.
			if err := c.Delete(ctx, st.addr, k); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			d := putShard(t, c, st.addr, k, sc, olen, rng)
			if r, err := c.Get(ctx, st.addr, k, 0, -1); err != nil || !bytes.Equal(r.Data, d) {
				t.Fatalf("Get after replacing: %v", err)
			}
		})
	}
}

func truncate(t *testing.T, path string, delta int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	truncateTo(t, path, fi.Size()+delta)
}

func truncateTo(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func TestReopen(t *testing.T) {
	cfg := testConfig(t)
	s1, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := s1.ID()
	if !validUUID(id) {
		t.Fatalf("store id %q", id)
	}
	// A shard stored before the "crash" and leftovers of writes in flight.
	ts := newTestStoreOn(t, s1)
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(21, 22))
	k := ShardKey{Object: 3, Index: 0}
	data := putShard(t, c, ts.addr, k, mustScheme(t, "2+1/128K"), 99999, rng)
	ts.ts.Close()
	tmp := filepath.Join(cfg.DataDir, "disk", tmpDir)
	for _, name := range []string{k.String() + ".0123456789abcdef.tmp", "junk"} {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte("partial"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(tmp, "dir", "sub"), 0o750); err != nil {
		t.Fatal(err)
	}

	s2, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if s2.ID() != id {
		t.Fatalf("store id %s after reopen, was %s", s2.ID(), id)
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Fatalf("tmp dir holds %v after reopen", names)
	}
	ts2 := newTestStoreOn(t, s2)
	r, err := c.Get(testCtx(t), ts2.addr, k, 0, -1)
	if err != nil || !bytes.Equal(r.Data, data) {
		t.Fatalf("Get after reopen: %v", err)
	}
	if keys := listAll(t, c, ts2.addr, 0); !slices.Equal(keys, []string{k.String()}) {
		t.Fatalf("listing after reopen: %v", keys)
	}
}

// Lowering MaxShardSize limits new shards; the larger shards already stored
// are still good data, not data loss.
func TestReopenWithSmallerMaxShard(t *testing.T) {
	cfg := testConfig(t)
	s1, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts1 := newTestStoreOn(t, s1)
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(25, 26))
	sc := mustScheme(t, "1+1/1M")
	k := ShardKey{Object: 0x77, Index: 1}
	data := putShard(t, c, ts1.addr, k, sc, 1<<20, rng) // a 1 MiB shard
	ts1.ts.Close()

	cfg.MaxShardSize = 128 << 10
	s2, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts2 := newTestStoreOn(t, s2)
	ctx := testCtx(t)
	r, err := c.Get(ctx, ts2.addr, k, 0, -1)
	if err != nil || !bytes.Equal(r.Data, data) {
		t.Fatalf("Get of a shard over the new limit: %v", err)
	}
	if v, err := c.Verify(ctx, ts2.addr, k); err != nil || !v.OK {
		t.Fatalf("Verify of a shard over the new limit: %+v, %v", v, err)
	}
	if _, err := c.Stat(ctx, ts2.addr, k); err != nil {
		t.Fatalf("Stat of a shard over the new limit: %v", err)
	}
	// New shards over the limit are refused.
	d, sums := testShard(rng, sc, 1<<20)
	if err := c.Put(ctx, ts2.addr, ShardKey{0x78, 1}, sc, 1<<20, d, sums); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Put over the limit: %v, want invalid argument", err)
	}
}

// Something that is not a fan-out directory in the shards tree (a stray
// file) is skipped by the listing, not a failure of it.
func TestListSkipsStrayFiles(t *testing.T) {
	st := newTestStore(t)
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(27, 28))
	sc := mustScheme(t, "2+1/128K")
	var want []string
	for i := range 10 {
		k := ShardKey{Object: ObjectID(rng.Uint64()), Index: i % 3}
		putShard(t, c, st.addr, k, sc, 1000, rng)
		want = append(want, k.String())
	}
	k, err := ParseShardKey(want[0])
	if err != nil {
		t.Fatal(err)
	}
	shards := filepath.Join(st.diskDir(), shardsDir)
	for _, p := range []string{
		filepath.Join(shards, "README"),
		filepath.Join(shards, "00"),                          // a file where a level-1 directory could be
		filepath.Join(shards, k.fanout()[:2], "zz"),          // a file among the level-2 directories
		filepath.Join(shards, k.fanout(), "notes.txt"),       // junk among shards
		filepath.Join(shards, k.fanout(), want[0]+".backup"), // junk named like a shard
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("junk"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(shards, "lost+found", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	keys := listAll(t, c, st.addr, 3)
	sort.Strings(keys)
	sort.Strings(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("listing with stray files:\n got %v\nwant %v", keys, want)
	}
}

// newTestStoreOn serves an already opened server.
func newTestStoreOn(t *testing.T, srv *Server) *testStore {
	t.Helper()
	return serveStore(t, srv, nil)
}

func TestDiskClaims(t *testing.T) {
	disk := t.TempDir()
	a, err := NewServer(testConfig(t, withDisks(disk)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(testConfig(t, withDisks(disk))); err == nil || !strings.Contains(err.Error(), a.ID()) {
		t.Fatalf("a second store took the disk of store %s: %v", a.ID(), err)
	}
	// The owner can open it again.
	if _, err := NewServer(a.cfg); err != nil {
		t.Fatalf("owner reopening: %v", err)
	}

	t.Run("disk given twice", func(t *testing.T) {
		d := t.TempDir()
		if _, err := NewServer(testConfig(t, withDisks(d, d+"/."))); err == nil {
			t.Fatal("the same disk twice was accepted")
		}
	})
	t.Run("bad store id file", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "store-id"), []byte("../../etc\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := NewServer(cfg); err == nil {
			t.Fatal("a junk store id was accepted")
		}
	})
	t.Run("config", func(t *testing.T) {
		for name, cfg := range map[string]Config{
			"no data dir":  {Secret: testSecret},
			"short secret": {DataDir: t.TempDir(), Secret: "short"},
			"tiny shards":  {DataDir: t.TempDir(), Secret: testSecret, MaxShardSize: 1000},
			"huge shards":  {DataDir: t.TempDir(), Secret: testSecret, MaxShardSize: 2 << 30},
		} {
			cfg.Logger = discardLogger()
			if _, err := NewServer(cfg); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
	})
}

// TestFullDisk fills a small tmpfs: the write that does not fit is refused as
// ResourceExhausted, leaves nothing behind, and what was stored before stays
// readable.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestFullDisk needs root to mount a tmpfs, and CI=true")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	disk := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", disk).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", disk).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", disk, err, out)
		}
	})
	st := newTestStore(t, withDisks(disk), withReserve(-1))
	c := newTestClient(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(23, 24))
	sc := mustScheme(t, "2+1/512K")
	const olen = 400 << 10 // shards of 200 KiB

	stored := map[ShardKey][]byte{}
	var full error
	for i := 0; i < 100 && full == nil; i++ {
		k := ShardKey{Object: ObjectID(i), Index: 0}
		data, sums := testShard(rng, sc, olen)
		if err := c.Put(ctx, st.addr, k, sc, olen, data, sums); err != nil {
			full = err
			if _, err := c.Get(ctx, st.addr, k, 0, -1); !errors.Is(err, ErrNotFound) {
				t.Errorf("refused shard %s: Get gives %v, want not found", k, err)
			}
			break
		}
		stored[k] = data
	}
	if full == nil {
		t.Fatal("100 shards of 200 KiB fit on a 3 MiB disk")
	}
	t.Logf("after %d shards: %v", len(stored), full)
	if !errors.Is(full, ErrResourceExhausted) {
		t.Fatalf("the put that did not fit: %v, want resource exhausted", full)
	}
	if len(stored) < 5 {
		t.Fatalf("only %d shards stored before the disk was full", len(stored))
	}
	assertTmpEmpty(t, st)

	// Free room for a few, then race many writers for it: the ones that run
	// out of space mid-write are refused cleanly too.
	var freed int
	for k := range stored {
		if freed == 3 {
			break
		}
		if err := c.Delete(ctx, st.addr, k); err != nil {
			t.Fatal(err)
		}
		delete(stored, k)
		freed++
	}
	// Six writers all get past the free-space check (each holds its temp
	// file, header written, when it first reads its body), then all write:
	// only three fit, the others hit ENOSPC mid-write.
	const writers = 6
	h := st.srv.Handler()
	gate := make(chan struct{})
	type result struct {
		k    ShardKey
		data []byte
		rec  *httptest.ResponseRecorder
	}
	results := make([]result, writers)
	started := make([]chan struct{}, writers)
	finished := make([]chan struct{}, writers)
	for i := range writers {
		k := ShardKey{Object: ObjectID(1000 + i), Index: 1}
		data, sums := testShard(rng, sc, olen)
		results[i] = result{k: k, data: data, rec: httptest.NewRecorder()}
		started[i], finished[i] = make(chan struct{}), make(chan struct{})
		req := httptest.NewRequest("PUT", "/v1/shards/"+k.Object.String()+"/001", &gatedReader{r: bytes.NewReader(data), started: started[i], gate: gate})
		req.ContentLength = int64(len(data))
		req.Header.Set("Authorization", "Bearer "+testSecret)
		req.Header.Set(hdrScheme, sc.String())
		req.Header.Set(hdrObjectLen, fmt.Sprint(olen))
		req.Header.Set(hdrChecksums, EncodeChecksums(sums))
		go func() {
			defer close(finished[i])
			h.ServeHTTP(results[i].rec, req)
		}()
	}
	inFlight := 0
	for i := range writers {
		select {
		case <-started[i]:
			inFlight++
		case <-finished[i]:
		}
	}
	if n := len(dirEntries(t, st.tmpDir())); n != inFlight {
		t.Errorf("%d writes in flight, %d temp files", inFlight, n)
	}
	close(gate)
	refused := 0
	for i, r := range results {
		<-finished[i]
		switch r.rec.Code {
		case http.StatusCreated:
			stored[r.k] = r.data
		case http.StatusInsufficientStorage:
			refused++
			t.Logf("concurrent put %d: %s", i, r.rec.Header().Get(hdrMessage))
			if code := r.rec.Header().Get(hdrCode); code != string(CodeResourceExhausted) {
				t.Errorf("concurrent put %d: code %s", i, code)
			}
		default:
			t.Errorf("concurrent put %d: status %d: %s", i, r.rec.Code, r.rec.Header().Get(hdrMessage))
		}
	}
	if inFlight != writers {
		t.Errorf("only %d of %d writers got past the free-space check", inFlight, writers)
	}
	if refused == 0 {
		t.Errorf("%d concurrent shards fit in the room of 3", writers)
	}
	assertTmpEmpty(t, st)
	for k, d := range stored {
		r, err := c.Get(ctx, st.addr, k, 0, -1)
		if err != nil || !bytes.Equal(r.Data, d) {
			t.Fatalf("Get %s on a full disk: %v", k, err)
		}
		if v, err := c.Verify(ctx, st.addr, k); err != nil || !v.OK {
			t.Fatalf("Verify %s: %+v, %v", k, v, err)
		}
	}
	keys := listAll(t, c, st.addr, 0)
	if len(keys) != len(stored) {
		t.Fatalf("listing has %d shards, %d stored", len(keys), len(stored))
	}
}
