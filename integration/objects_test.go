package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// objectSizes are the lengths the object tests cycle through: empty, tiny,
// around a checksum chunk, and up to a whole 4 MiB block.
var objectSizes = []int{0, 1, 4095, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20, 4<<20 - 1, 4 << 20}

type testObject struct {
	obj  store.Object
	data []byte
}

func objData(id store.ObjectID, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(id), byte(id >> 8), byte(id >> 16)}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n / 8 * 8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// parallel runs f(i) for i in [0, n) on w workers.
func parallel(n, w int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func newObjects(t testing.TB, c *testCluster, hedge time.Duration) *store.Objects {
	t.Helper()
	o, err := store.NewObjects(store.ObjectsConfig{Client: c.client, HedgeAfter: hedge})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// writeObjects writes n objects, shard i of object j on store (i+j) mod 6,
// and checks every shard was stored.
func writeObjects(t *testing.T, c *testCluster, objs *store.Objects, scheme codec.Scheme, n int) []*testObject {
	t.Helper()
	out := make([]*testObject, n)
	addrs := c.addrs()
	var failed atomic.Int64
	parallel(n, 8, func(j int) {
		id := store.ObjectID(0x1000 + j)
		data := objData(id, objectSizes[j%len(objectSizes)])
		place := make([]string, scheme.Shards())
		for i := range place {
			place[i] = addrs[(i+j)%len(addrs)]
		}
		o := store.Object{ID: id, Scheme: scheme, Length: int64(len(data)), Placement: place}
		res, err := objs.Write(context.Background(), o, data, 0)
		if err != nil {
			t.Errorf("write %s: %v", id, err)
			failed.Add(1)
			return
		}
		for _, r := range res {
			if r.Err != nil {
				t.Errorf("write %s: shard %d: %v", id, r.Index, r.Err)
			}
		}
		out[j] = &testObject{obj: o, data: data}
	})
	if failed.Load() > 0 {
		t.FailNow()
	}
	return out
}

type readStats struct {
	reads     atomic.Int64
	slowReads atomic.Int64 // took 2 s or more
	badShards atomic.Int64 // shard failures reported
}

// readAll reads every object whole and in 3 random ranges with the given
// placement and checks the exact bytes come back. blame says which shards of
// an object may be reported bad; a report of any other fails the test.
func readAll(t *testing.T, objs *store.Objects, tos []*testObject, place func(*testObject) []string, blame func(*testObject, int) bool) *readStats {
	t.Helper()
	st := &readStats{}
	parallel(len(tos), 8, func(j int) {
		to := tos[j]
		o := to.obj
		o.Placement = place(to)
		r := rand.New(rand.NewPCG(uint64(j), 7))
		type rng struct{ off, n int64 }
		ranges := []rng{{0, o.Length}}
		for range 3 {
			if o.Length == 0 {
				break
			}
			off := r.Int64N(o.Length)
			ranges = append(ranges, rng{off, 1 + r.Int64N(o.Length-off)})
		}
		for _, rg := range ranges {
			buf := make([]byte, rg.n)
			start := time.Now()
			n, bad, err := objs.ReadAt(context.Background(), o, buf, rg.off)
			if time.Since(start) >= 2*time.Second {
				st.slowReads.Add(1)
			}
			st.reads.Add(1)
			if err != nil {
				t.Errorf("read %s [%d,+%d): %v", o.ID, rg.off, rg.n, err)
				continue
			}
			if int64(n) != rg.n || !bytes.Equal(buf[:n], to.data[rg.off:rg.off+rg.n]) {
				t.Errorf("read %s [%d,+%d): WRONG BYTES (n=%d)", o.ID, rg.off, rg.n, n)
			}
			for _, b := range bad {
				st.badShards.Add(1)
				if !blame(to, b.Index) {
					t.Errorf("read %s: blamed good shard %d on %s: %v", o.ID, b.Index, b.Addr, b.Err)
				}
			}
		}
	})
	return st
}

func TestObjectsSurviveFailures(t *testing.T) {
	c := newStores(t, 6)
	scheme, err := codec.ParseScheme("4+2")
	if err != nil {
		t.Fatal(err)
	}
	objs := newObjects(t, c, 300*time.Millisecond)
	start := time.Now()
	tos := writeObjects(t, c, objs, scheme, 1000)
	t.Logf("wrote %d objects in %v", len(tos), time.Since(start).Round(time.Millisecond))
	same := func(to *testObject) []string { return to.obj.Placement }

	t.Run("all stores up", func(t *testing.T) {
		st := readAll(t, objs, tos, same, func(*testObject, int) bool { return false })
		t.Logf("%d reads", st.reads.Load())
	})

	t.Run("two stores killed", func(t *testing.T) {
		dead := map[string]bool{c.stores[0].addr: true, c.stores[1].addr: true}
		c.stores[0].p.kill()
		c.stores[1].p.kill()
		st := readAll(t, objs, tos, same, func(to *testObject, i int) bool { return dead[to.obj.Placement[i]] })
		if st.badShards.Load() == 0 {
			t.Errorf("no read reported a shard on a dead store")
		}
		t.Logf("%d reads, %d dead shards reported", st.reads.Load(), st.badShards.Load())
		c.start(0)
		c.start(1)
	})

	t.Run("one store answers after 2s", func(t *testing.T) {
		slow := c.stores[2].addr
		proxy := newDelayProxy(t, "127.0.0.20", slow, 2*time.Second)
		via := func(to *testObject) []string {
			p := append([]string(nil), to.obj.Placement...)
			for i := range p {
				if p[i] == slow {
					p[i] = proxy.addr()
				}
			}
			return p
		}
		st := readAll(t, objs, tos, via, func(*testObject, int) bool { return false })
		t.Logf("%d reads, %d took 2s or more", st.reads.Load(), st.slowReads.Load())
		if st.slowReads.Load() > st.reads.Load()/100 {
			t.Errorf("%d of %d reads waited for the slow store: hedging did not work", st.slowReads.Load(), st.reads.Load())
		}
	})

	t.Run("two shards of every object corrupt", func(t *testing.T) {
		corrupt := corruptShards(t, c, tos, 2)
		st := readAll(t, objs, tos, same, func(to *testObject, i int) bool { return corrupt[to.obj.ID][i] })
		if st.badShards.Load() == 0 {
			t.Errorf("no read reported a corrupt shard")
		}
		t.Logf("%d reads, %d corrupt shards reported", st.reads.Load(), st.badShards.Load())
	})

	t.Run("three stores down", func(t *testing.T) {
		for i := 3; i < 6; i++ {
			c.stores[i].p.kill()
		}
		data := objData(1, 1<<20)
		o := store.Object{ID: 0xdead, Scheme: scheme, Placement: c.addrs()[:6]}
		_, err := objs.Write(context.Background(), o, data, 0)
		var we *store.WriteError
		if !errors.Is(err, store.ErrWriteQuorum) || !errors.As(err, &we) {
			t.Fatalf("write with 3 of 6 stores down: got %v, want a write quorum error", err)
		}
		t.Logf("write error: %v", err)
		// An object whose needed data shards all live on the 3 stores left
		// still reads; one that needs a shard of a dead store cannot, since
		// only 3 of its 6 shards are left: it must fail with DataLoss, never
		// return other bytes.
		failed := 0
		for _, to := range tos[:180] {
			buf := make([]byte, to.obj.Length)
			n, _, err := objs.ReadAt(context.Background(), to.obj, buf, 0)
			var re *store.ReadError
			switch {
			case err == nil:
				if int64(n) != to.obj.Length || !bytes.Equal(buf, to.data) {
					t.Fatalf("read %s with 3 stores down: WRONG BYTES", to.obj.ID)
				}
				if to.obj.Length >= int64(scheme.K) {
					t.Fatalf("read %s (%d bytes, on all %d data shards) succeeded with 3 of 6 stores down", to.obj.ID, to.obj.Length, scheme.K)
				}
			case errors.Is(err, store.ErrDataLoss) && errors.As(err, &re):
				failed++
			default:
				t.Fatalf("read %s with 3 stores down: %v, want DataLoss", to.obj.ID, err)
			}
		}
		t.Logf("%d of 180 reads failed with DataLoss; first: %v", failed, func() error {
			_, _, err := objs.ReadAt(context.Background(), tos[8].obj, make([]byte, 10), 0)
			return err
		}())
	})
}

// corruptShards flips 1 to 4 random bytes (header or data) in perObject
// distinct shards of every non-empty object and returns which.
func corruptShards(t *testing.T, c *testCluster, tos []*testObject, perObject int) map[store.ObjectID]map[int]bool {
	t.Helper()
	r := rand.New(rand.NewPCG(42, 42))
	storeOf := map[string]int{}
	for i, s := range c.stores {
		storeOf[s.addr] = i
	}
	out := map[store.ObjectID]map[int]bool{}
	for _, to := range tos {
		if to.obj.Length == 0 {
			continue
		}
		out[to.obj.ID] = map[int]bool{}
		for _, idx := range r.Perm(to.obj.Scheme.Shards())[:perObject] {
			path, err := c.shardFile(storeOf[to.obj.Placement[idx]], store.ShardKey{Object: to.obj.ID, Index: idx})
			if err != nil {
				t.Fatal(err)
			}
			if err := flipBytes(path, r, 1+r.IntN(4)); err != nil {
				t.Fatal(err)
			}
			out[to.obj.ID][idx] = true
		}
	}
	return out
}

func flipBytes(path string, r *rand.Rand, n int) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	for range n {
		off := r.Int64N(st.Size())
		var b [1]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return err
		}
		b[0] ^= byte(1 + r.IntN(255))
		if _, err := f.WriteAt(b[:], off); err != nil {
			return fmt.Errorf("flipping byte %d of %s: %w", off, path, err)
		}
	}
	return nil
}
