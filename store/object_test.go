package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/codec"
)

// cluster is n in-process stores and an object layer over them.
type cluster struct {
	stores []*testStore
	addrs  []string
	c      *Client
	obj    *Objects
}

// newCluster starts n stores; wraps[i], if set, wraps the handler of store i.
func newCluster(t *testing.T, n int, cfg ObjectsConfig, wraps map[int]func(http.Handler) http.Handler) *cluster {
	t.Helper()
	cl := &cluster{c: newTestClient(t)}
	for i := range n {
		s := newTestStoreWrapped(t, wraps[i])
		cl.stores = append(cl.stores, s)
		cl.addrs = append(cl.addrs, s.addr)
	}
	cfg.Client = cl.c
	cfg.Logger = discardLogger()
	o, err := NewObjects(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl.obj = o
	return cl
}

// object is an object of the cluster placed shard i on store i.
func (cl *cluster) object(id ObjectID, sc codec.Scheme) Object {
	return Object{ID: id, Scheme: sc, Placement: slices.Clone(cl.addrs[:sc.Shards()])}
}

// write stores data as obj and requires every shard to be written.
func (cl *cluster) write(t *testing.T, obj Object, data []byte) Object {
	t.Helper()
	res, err := cl.obj.Write(testCtx(t), obj, data, 0)
	if err != nil {
		t.Fatalf("Write of %d bytes: %v", len(data), err)
	}
	if len(res) != obj.Scheme.Shards() {
		t.Fatalf("%d results for %d shards", len(res), obj.Scheme.Shards())
	}
	for i, r := range res {
		if r.Err != nil || r.Index != i || r.Addr != obj.Placement[i] {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	obj.Length = int64(len(data))
	return obj
}

// readAt reads [off, off+n) of obj and requires exactly the bytes of data.
func (cl *cluster) readAt(t *testing.T, obj Object, data []byte, off, n int64) []ShardResult {
	t.Helper()
	// Fill the buffer with junk, so a byte left untouched shows.
	p := bytes.Repeat([]byte{0xa5}, int(n))
	got, bad, err := cl.obj.ReadAt(testCtx(t), obj, p, off)
	if err != nil {
		t.Fatalf("ReadAt(%d, %d) of %d bytes: %v", off, n, obj.Length, err)
	}
	want := data[off:min(off+n, int64(len(data)))]
	if got != len(want) {
		t.Fatalf("ReadAt(%d, %d) of %d bytes read %d, want %d", off, n, obj.Length, got, len(want))
	}
	if !bytes.Equal(p[:got], want) {
		i := 0
		for i < got && p[i] == want[i] {
			i++
		}
		t.Fatalf("ReadAt(%d, %d) of %d bytes: bytes differ from %d", off, n, obj.Length, off+int64(i))
	}
	if !bytes.Equal(p[got:], bytes.Repeat([]byte{0xa5}, len(p)-got)) {
		t.Fatalf("ReadAt(%d, %d) wrote past the object's end", off, n)
	}
	return bad
}

func badIndexes(bad []ShardResult) []int {
	var out []int
	for _, r := range bad {
		out = append(out, r.Index)
	}
	slices.Sort(out)
	return out
}

// randomRanges returns ranges of an object of length n: small and large, on
// and off chunk and shard boundaries.
func randomRanges(rng *rand.Rand, sc codec.Scheme, n int64, count int) [][2]int64 {
	if n == 0 {
		return nil
	}
	size := sc.ShardSize(n)
	out := [][2]int64{{0, n}, {0, 1}, {n - 1, 1}, {0, n + 100}}
	for _, b := range []int64{size, 2 * size, cs, 3 * cs} {
		if b > 0 && b < n {
			out = append(out, [2]int64{b - 1, 2}, [2]int64{b, min(cs, n-b)}, [2]int64{max(b-cs, 0), min(2*cs, n)})
		}
	}
	for range count {
		off := rng.Int64N(n)
		var l int64
		switch rng.IntN(4) {
		case 0:
			l = 1 + rng.Int64N(min(100, n-off))
		case 1:
			l = 1 + rng.Int64N(min(2*cs, n-off))
		case 2:
			l = 1 + rng.Int64N(n-off)
		default:
			l = n - off + rng.Int64N(10) // to the end and past it
		}
		out = append(out, [2]int64{off, l})
	}
	return out
}

func TestObjectWriteRead(t *testing.T) {
	cl := newCluster(t, 6, ObjectsConfig{}, nil)
	rng := rand.New(rand.NewPCG(31, 32))
	sizes := []int64{0, 1, 4095, 65535, 65536, 65537, 1<<20 - 1}
	for _, spec := range []string{"4+2/1M", "4+2", "3+3/256K", "1+5/1M"} {
		sc := mustScheme(t, spec)
		ss := slices.Clone(sizes)
		ss = append(ss, int64(sc.BlockSize), int64(sc.BlockSize)-int64(sc.K)*cs+1)
		for _, n := range ss {
			if n > int64(sc.BlockSize) || n < 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", spec, n), func(t *testing.T) {
				data := randBytes(rng, int(n))
				id := ObjectID(rng.Uint64())
				obj := cl.write(t, cl.object(id, sc), data)
				// Every store holds its shard, of the scheme's size.
				for i, addr := range obj.Placement {
					st, err := cl.c.Stat(testCtx(t), addr, ShardKey{id, i})
					if err != nil {
						t.Fatalf("Stat shard %d: %v", i, err)
					}
					if st.ShardLen != sc.ShardSize(n) || st.ObjectLen != n || st.Scheme != sc {
						t.Fatalf("shard %d: %+v", i, st)
					}
				}
				for _, rg := range randomRanges(rng, sc, n, 25) {
					if bad := cl.readAt(t, obj, data, rg[0], rg[1]); len(bad) != 0 {
						t.Fatalf("ReadAt(%d, %d) with every store up reports %v", rg[0], rg[1], bad)
					}
				}
				// At and past the end.
				p := make([]byte, 10)
				if got, _, err := cl.obj.ReadAt(testCtx(t), obj, p, n); err != nil || got != 0 {
					t.Fatalf("ReadAt at the end: %d, %v", got, err)
				}
				if _, _, err := cl.obj.ReadAt(testCtx(t), obj, p, n+1); !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("ReadAt past the end: %v", err)
				}
				if _, _, err := cl.obj.ReadAt(testCtx(t), obj, p, -1); !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("ReadAt at -1: %v", err)
				}
				if got, _, err := cl.obj.ReadAt(testCtx(t), obj, nil, 0); err != nil || got != 0 {
					t.Fatalf("ReadAt of nothing: %d, %v", got, err)
				}
			})
		}
	}

	t.Run("invalid", func(t *testing.T) {
		sc := mustScheme(t, "4+2/1M")
		obj := cl.object(1, sc)
		if _, err := cl.obj.Write(testCtx(t), obj, make([]byte, 1<<20+1), 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Write over the block size: %v", err)
		}
		short := obj
		short.Placement = short.Placement[:5]
		if _, err := cl.obj.Write(testCtx(t), short, []byte("x"), 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Write with 5 stores for 6 shards: %v", err)
		}
		if _, _, err := cl.obj.ReadAt(testCtx(t), short, make([]byte, 1), 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ReadAt with 5 stores for 6 shards: %v", err)
		}
		long := obj
		long.Length = 1<<20 + 1
		if _, _, err := cl.obj.ReadAt(testCtx(t), long, make([]byte, 1), 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ReadAt of an object over the block size: %v", err)
		}
		bad := obj
		bad.Scheme.M = 0
		if _, err := cl.obj.Write(testCtx(t), bad, []byte("x"), 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Write with a bad scheme: %v", err)
		}
	})
}

func TestObjectDegradedRead(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	const n = 1<<20 - 1
	cases := []struct {
		name   string
		closed []int
		ok     bool
	}{
		{"data shards 1 and 3", []int{1, 3}, true},
		{"data shards 0 and 1", []int{0, 1}, true},
		{"a data and a parity shard", []int{2, 5}, true},
		{"both parity shards", []int{4, 5}, true},
		{"three data shards", []int{0, 1, 2}, false},
		{"two data one parity", []int{0, 3, 4}, false},
		{"one data two parity", []int{2, 4, 5}, false},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 6, ObjectsConfig{}, nil)
			rng := rand.New(rand.NewPCG(33, uint64(ci)))
			data := randBytes(rng, n)
			obj := cl.write(t, cl.object(ObjectID(0x500+ci), sc), data)
			for _, i := range tc.closed {
				cl.stores[i].ts.Close()
			}
			if !tc.ok {
				p := make([]byte, n)
				_, bad, err := cl.obj.ReadAt(testCtx(t), obj, p, 0)
				if !errors.Is(err, ErrDataLoss) {
					t.Fatalf("ReadAt with %v down: %v, want data loss", tc.closed, err)
				}
				var re *ReadError
				if !errors.As(err, &re) {
					t.Fatalf("ReadAt error %T is not a *ReadError", err)
				}
				if re.Need != 4 || re.Good >= 4 || re.Object != obj.ID {
					t.Fatalf("ReadError %+v", re)
				}
				for _, i := range badIndexes(bad) {
					if !slices.Contains(tc.closed, i) {
						t.Fatalf("shard %d of a live store reported bad", i)
					}
				}
				return
			}
			// The whole object: every closed data shard is reported.
			var wantBad []int
			for _, i := range tc.closed {
				if i < sc.K {
					wantBad = append(wantBad, i)
				}
			}
			bad := cl.readAt(t, obj, data, 0, n)
			for _, i := range badIndexes(bad) {
				if !slices.Contains(tc.closed, i) {
					t.Fatalf("shard %d of a live store reported bad", i)
				}
			}
			for _, i := range wantBad {
				if !slices.Contains(badIndexes(bad), i) {
					t.Fatalf("closed data shard %d not reported: %v", i, badIndexes(bad))
				}
			}
			for _, r := range bad {
				if !errors.Is(r.Err, ErrUnavailable) || r.Addr != obj.Placement[r.Index] {
					t.Fatalf("bad shard %+v", r)
				}
			}
			for _, rg := range randomRanges(rng, sc, n, 40) {
				for _, i := range badIndexes(cl.readAt(t, obj, data, rg[0], rg[1])) {
					if !slices.Contains(tc.closed, i) {
						t.Fatalf("ReadAt(%d, %d): shard %d of a live store reported bad", rg[0], rg[1], i)
					}
				}
			}
		})
	}
}

// An unplaced shard is missing: reads go around it like around a dead store.
func TestObjectUnplaced(t *testing.T) {
	cl := newCluster(t, 6, ObjectsConfig{}, nil)
	sc := mustScheme(t, "4+2/1M")
	rng := rand.New(rand.NewPCG(35, 36))
	data := randBytes(rng, 700000)
	for _, missing := range []int{5, 0} {
		obj := cl.object(ObjectID(0x600+missing), sc)
		obj.Placement[missing] = ""
		res, err := cl.obj.Write(testCtx(t), obj, data, 5)
		if err != nil {
			t.Fatalf("Write with shard %d unplaced at quorum 5: %v", missing, err)
		}
		for i, r := range res {
			if i == missing {
				if !errors.Is(r.Err, ErrUnplaced) {
					t.Fatalf("unplaced shard %d: %+v", i, r)
				}
			} else if r.Err != nil {
				t.Fatalf("shard %d: %v", i, r.Err)
			}
		}
		obj.Length = int64(len(data))
		bad := cl.readAt(t, obj, data, 0, int64(len(data)))
		if missing < sc.K && !slices.Equal(badIndexes(bad), []int{missing}) {
			t.Fatalf("unplaced data shard %d, bad %v", missing, badIndexes(bad))
		}
		for _, rg := range randomRanges(rng, sc, obj.Length, 20) {
			cl.readAt(t, obj, data, rg[0], rg[1])
		}
		// Two unplaced: 4 of 6 placed is below quorum 5.
		obj2 := cl.object(ObjectID(0x700+missing), sc)
		obj2.Placement[missing], obj2.Placement[(missing+1)%6] = "", ""
		if _, err := cl.obj.Write(testCtx(t), obj2, data, 0); !errors.Is(err, ErrWriteQuorum) {
			t.Fatalf("Write with 2 unplaced: %v, want write quorum", err)
		}
	}
}

func TestObjectWriteQuorum(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	rng := rand.New(rand.NewPCG(37, 38))
	data := randBytes(rng, 1<<20-7)
	cases := []struct {
		name   string
		dead   []int
		quorum int
		ok     bool
	}{
		{"3 of 6 dead", []int{1, 3, 5}, 0, false},
		{"3 of 6 dead, quorum k", []int{0, 1, 2}, 4, false},
		{"3 of 6 dead, quorum below k", []int{0, 4, 5}, 1, false},
		{"2 of 6 dead, default quorum", []int{2, 4}, 0, false},
		{"1 of 6 dead, quorum all", []int{3}, 6, false},
		{"1 of 6 dead, quorum over all", []int{3}, 7, false},
		{"2 of 6 dead, quorum k", []int{0, 5}, 4, true},
		{"1 of 6 dead, default quorum", []int{2}, 0, true},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 6, ObjectsConfig{}, nil)
			for _, i := range tc.dead {
				cl.stores[i].ts.Close()
			}
			obj := cl.object(ObjectID(0x800+ci), sc)
			res, err := cl.obj.Write(testCtx(t), obj, data, tc.quorum)
			if len(res) != 6 {
				t.Fatalf("%d results", len(res))
			}
			for i, r := range res {
				dead := slices.Contains(tc.dead, i)
				if r.Index != i || r.Addr != obj.Placement[i] || (r.Err != nil) != dead {
					t.Fatalf("result %d: %+v (dead %v)", i, r, dead)
				}
				if dead && !errors.Is(r.Err, ErrUnavailable) {
					t.Fatalf("result %d: %v, want unavailable", i, r.Err)
				}
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("Write: %v", err)
				}
				obj.Length = int64(len(data))
				cl.readAt(t, obj, data, 0, obj.Length)
				return
			}
			if !errors.Is(err, ErrWriteQuorum) {
				t.Fatalf("Write: %v, want write quorum", err)
			}
			var we *WriteError
			if !errors.As(err, &we) {
				t.Fatalf("Write error %T is not a *WriteError", err)
			}
			if we.Quorum != Quorum(sc, tc.quorum) || we.Object != obj.ID || len(we.Results) != 6 {
				t.Fatalf("WriteError %+v", we)
			}
			// The shards that were written are removed again.
			for i, s := range cl.stores {
				if slices.Contains(tc.dead, i) {
					continue
				}
				if keys := listAll(t, cl.c, s.addr, 0); len(keys) != 0 {
					t.Errorf("store %d keeps %v after a failed write", i, keys)
				}
			}
		})
	}
}

func TestQuorum(t *testing.T) {
	sc := mustScheme(t, "4+2")
	for q, want := range map[int]int{0: 5, 1: 4, 3: 4, 4: 4, 5: 5, 6: 6, 7: 6, 100: 6, -1: 4} {
		if got := Quorum(sc, q); got != want {
			t.Errorf("Quorum(4+2, %d) = %d, want %d", q, got, want)
		}
	}
}

// slowGets delays every shard GET by d, or until the request is cancelled.
func slowGets(d time.Duration) func(http.Handler) http.Handler {
	return slowMethod(http.MethodGet, d)
}

func slowMethod(method string, d time.Duration) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == method && strings.HasPrefix(r.URL.Path, "/v1/shards/") {
				// Take the body first: the server notices a client that
				// went away (and cancels r.Context()) only once the body
				// is read.
				body, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				t := time.NewTimer(d)
				defer t.Stop()
				select {
				case <-r.Context().Done():
					return
				case <-t.C:
				}
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestObjectSlowStore(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	cases := []struct {
		slow []int
		fast bool // the read need not wait for a slow store
	}{
		{[]int{0}, true},
		{[]int{2}, true},
		{[]int{4}, true},
		{[]int{1, 3}, true},
		{[]int{0, 5}, true},
		// Three slow stores leave three fast shards: the read waits for a
		// slow one, and still succeeds (slow is not failed).
		{[]int{0, 1, 4}, false},
	}
	for ci, tc := range cases {
		t.Run(fmt.Sprintf("stores %v slow", tc.slow), func(t *testing.T) {
			wraps := map[int]func(http.Handler) http.Handler{}
			for _, i := range tc.slow {
				wraps[i] = slowGets(2 * time.Second)
			}
			cl := newCluster(t, 6, ObjectsConfig{HedgeAfter: 100 * time.Millisecond}, wraps)
			rng := rand.New(rand.NewPCG(39, uint64(ci)))
			data := randBytes(rng, 1<<20-3)
			obj := cl.write(t, cl.object(ObjectID(0x900+ci), sc), data)
			size := sc.ShardSize(obj.Length)
			ranges := [][2]int64{
				{0, obj.Length}, // every data shard
				{int64(min(tc.slow[0], sc.K-1)) * size, 1000}, // only the slow one (or the last data shard)
				{size - 10, 2*size + 20},                      // three shards
				{obj.Length - 100, 100},                       // the last shard only
			}
			if !tc.fast {
				ranges = ranges[:1]
			}
			for _, rg := range ranges {
				start := time.Now()
				bad := cl.readAt(t, obj, data, rg[0], rg[1])
				if el := time.Since(start); tc.fast && el > 1500*time.Millisecond {
					t.Errorf("ReadAt(%d, %d) with stores %v slow took %v", rg[0], rg[1], tc.slow, el)
				}
				if len(bad) != 0 {
					t.Errorf("ReadAt(%d, %d): a slow store is not bad: %v", rg[0], rg[1], bad)
				}
			}
		})
	}
}

// Many writers and readers share one object layer (run with -race).
func TestObjectConcurrent(t *testing.T) {
	cl := newCluster(t, 6, ObjectsConfig{MaxInflight: 2}, nil)
	sc := mustScheme(t, "4+2/1M")
	const workers = 8
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			errs <- func() error {
				rng := rand.New(rand.NewPCG(51, uint64(w)))
				for j := range 3 {
					data := randBytes(rng, rng.IntN(1<<20))
					obj := cl.object(ObjectID(w<<8|j), sc)
					if _, err := cl.obj.Write(testCtx(t), obj, data, 0); err != nil {
						return fmt.Errorf("worker %d: Write: %w", w, err)
					}
					obj.Length = int64(len(data))
					for _, rg := range randomRanges(rng, sc, obj.Length, 5) {
						p := make([]byte, rg[1])
						n, _, err := cl.obj.ReadAt(testCtx(t), obj, p, rg[0])
						if err != nil {
							return fmt.Errorf("worker %d: ReadAt: %w", w, err)
						}
						if !bytes.Equal(p[:n], data[rg[0]:rg[0]+int64(n)]) {
							return fmt.Errorf("worker %d: ReadAt(%d, %d): bytes differ", w, rg[0], rg[1])
						}
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A write that reached its quorum waits StragglerWait for the rest, then
// reports them missing.
func TestObjectWriteStraggler(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	cl := newCluster(t, 6, ObjectsConfig{StragglerWait: 200 * time.Millisecond},
		map[int]func(http.Handler) http.Handler{3: slowMethod(http.MethodPut, 10*time.Second)})
	rng := rand.New(rand.NewPCG(41, 42))
	data := randBytes(rng, 300000)
	obj := cl.object(0xa00, sc)
	start := time.Now()
	res, err := cl.obj.Write(testCtx(t), obj, data, 0)
	if err != nil {
		t.Fatalf("Write with one straggler: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Write waited %v for a straggler", el)
	}
	for i, r := range res {
		if (r.Err != nil) != (i == 3) {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if !errors.Is(res[3].Err, ErrUnavailable) {
		t.Fatalf("straggler: %v, want unavailable", res[3].Err)
	}
	obj.Length = int64(len(data))
	cl.readAt(t, obj, data, 0, obj.Length)
}

func TestObjectCorruptShards(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	const n = 1<<20 - 1 // shards of 4 chunks
	cases := []struct {
		name    string
		corrupt map[int]int64 // shard → offset in its data
		ok      bool
	}{
		{"two data shards", map[int]int64{0: cs + 5, 2: 3*cs + 100}, true},
		{"first chunks", map[int]int64{1: 0, 3: 0}, true},
		{"a data and a parity shard", map[int]int64{1: 2 * cs, 4: 2*cs + 1}, true},
		{"two parity shards", map[int]int64{4: 0, 5: 3 * cs}, true},
		{"three shards", map[int]int64{0: 10, 1: 10, 4: 10}, false},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 6, ObjectsConfig{}, nil)
			rng := rand.New(rand.NewPCG(43, uint64(ci)))
			data := randBytes(rng, n)
			obj := cl.write(t, cl.object(ObjectID(0xb00+ci), sc), data)
			for i, off := range tc.corrupt {
				corruptShardData(t, cl.stores[i], ShardKey{obj.ID, i}, off)
			}
			if !tc.ok {
				_, _, err := cl.obj.ReadAt(testCtx(t), obj, make([]byte, n), 0)
				var re *ReadError
				if !errors.Is(err, ErrDataLoss) || !errors.As(err, &re) {
					t.Fatalf("ReadAt with 3 corrupt shards: %v, want a *ReadError", err)
				}
				return
			}
			bad := cl.readAt(t, obj, data, 0, n)
			for _, r := range bad {
				if _, ok := tc.corrupt[r.Index]; !ok {
					t.Fatalf("good shard %d reported bad: %v", r.Index, r.Err)
				}
				if !errors.Is(r.Err, ErrDataLoss) {
					t.Fatalf("corrupt shard %d: %v, want data loss", r.Index, r.Err)
				}
			}
			for i := range tc.corrupt {
				if i < sc.K && !slices.Contains(badIndexes(bad), i) {
					t.Fatalf("corrupt data shard %d not reported: %v", i, badIndexes(bad))
				}
			}
			for _, rg := range randomRanges(rng, sc, n, 40) {
				for _, i := range badIndexes(cl.readAt(t, obj, data, rg[0], rg[1])) {
					if _, ok := tc.corrupt[i]; !ok {
						t.Fatalf("ReadAt(%d, %d): good shard %d reported bad", rg[0], rg[1], i)
					}
				}
			}
			// A range that avoids the corrupt chunks reports nothing.
			if off, ok := tc.corrupt[0]; ok && off >= cs {
				if bad := cl.readAt(t, obj, data, 0, 100); len(bad) != 0 {
					t.Fatalf("ReadAt of good chunks: bad %v", bad)
				}
			}
		})
	}
}

// A store answering with a shard of another object (same key, other length)
// is not believed.
func TestObjectWrongShard(t *testing.T) {
	cl := newCluster(t, 6, ObjectsConfig{}, nil)
	sc := mustScheme(t, "4+2/1M")
	rng := rand.New(rand.NewPCG(45, 46))
	data := randBytes(rng, 500000)
	obj := cl.write(t, cl.object(0xc00, sc), data)
	// Shard 1 replaced by a valid shard of a longer object.
	putShard(t, cl.c, cl.addrs[1], ShardKey{obj.ID, 1}, sc, 500004, rng)
	// Shard 2 replaced by one of another scheme with the same shard size.
	putShard(t, cl.c, cl.addrs[2], ShardKey{obj.ID, 2}, mustScheme(t, "4+3/1M"), 500000, rng)
	bad := cl.readAt(t, obj, data, 0, obj.Length)
	if !slices.Equal(badIndexes(bad), []int{1, 2}) {
		t.Fatalf("bad %v, want shards 1 and 2", bad)
	}
	for _, r := range bad {
		if !errors.Is(r.Err, ErrDataLoss) {
			t.Fatalf("shard %d: %v, want data loss", r.Index, r.Err)
		}
	}
}

func TestObjectDelete(t *testing.T) {
	cl := newCluster(t, 6, ObjectsConfig{}, nil)
	sc := mustScheme(t, "4+2/1M")
	rng := rand.New(rand.NewPCG(47, 48))
	data := randBytes(rng, 123456)
	obj := cl.write(t, cl.object(0xd00, sc), data)
	// One shard already gone: not an error.
	if err := cl.c.Delete(testCtx(t), cl.addrs[2], ShardKey{obj.ID, 2}); err != nil {
		t.Fatal(err)
	}
	obj.Placement[4] = ""
	if err := cl.obj.Delete(testCtx(t), obj); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for i, s := range cl.stores {
		keys := listAll(t, cl.c, s.addr, 0)
		if i == 4 {
			if len(keys) != 1 {
				t.Fatalf("unplaced shard's store: %v", keys)
			}
			continue
		}
		if len(keys) != 0 {
			t.Fatalf("store %d keeps %v", i, keys)
		}
	}
	cl.stores[0].ts.Close()
	obj.Placement[4] = cl.addrs[4]
	if err := cl.obj.Delete(testCtx(t), obj); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Delete with a store down: %v, want unavailable", err)
	}
	if keys := listAll(t, cl.c, cl.addrs[4], 0); len(keys) != 0 {
		t.Fatalf("Delete with a store down stopped early: %v", keys)
	}
}

func TestObjectCancelledRead(t *testing.T) {
	cl := newCluster(t, 6, ObjectsConfig{HedgeAfter: time.Minute},
		map[int]func(http.Handler) http.Handler{0: slowGets(10 * time.Second)})
	sc := mustScheme(t, "4+2/1M")
	rng := rand.New(rand.NewPCG(49, 50))
	data := randBytes(rng, 100000)
	obj := cl.write(t, cl.object(0xe00, sc), data)
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	_, _, err := cl.obj.ReadAt(ctx, obj, make([]byte, 100), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadAt past its deadline: %v", err)
	}
}

// A store that takes a shard and never answers holds a write only for
// ShardTimeout; below the quorum the write fails and cleans up.
func TestObjectShardTimeout(t *testing.T) {
	sc := mustScheme(t, "4+2/1M")
	hang := slowMethod(http.MethodPut, 20*time.Second)
	cl := newCluster(t, 6, ObjectsConfig{ShardTimeout: 300 * time.Millisecond, StragglerWait: 10 * time.Second},
		map[int]func(http.Handler) http.Handler{1: hang, 4: hang})
	rng := rand.New(rand.NewPCG(53, 54))
	data := randBytes(rng, 300000)
	obj := cl.object(0xf00, sc)
	start := time.Now()
	res, err := cl.obj.Write(testCtx(t), obj, data, 0)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Write waited %v for hung stores", el)
	}
	var we *WriteError
	if !errors.Is(err, ErrWriteQuorum) || !errors.As(err, &we) {
		t.Fatalf("Write with 2 hung stores at quorum 5: %v", err)
	}
	for i, r := range res {
		if (r.Err != nil) != (i == 1 || i == 4) {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	for i, s := range cl.stores {
		if keys := listAll(t, cl.c, s.addr, 0); len(keys) != 0 {
			t.Errorf("store %d keeps %v after a failed write", i, keys)
		}
	}
	// At quorum 4 the same write succeeds.
	if _, err := cl.obj.Write(testCtx(t), obj, data, 4); err != nil {
		t.Fatalf("Write at quorum 4: %v", err)
	}
}
