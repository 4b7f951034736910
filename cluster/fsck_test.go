package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// fakeFsckStores is FsckStores in memory: shards by store address.
type fakeFsckStores struct {
	mu      sync.Mutex
	shards  map[string]map[[2]uint64]fakeShard
	corrupt map[string][]*metapb.ShardRef
	fail    map[string]bool // listing fails after the first shard
	stats   int             // StatShard calls
}

type fakeShard struct {
	size   int64
	mtime  time.Time
	hidden bool // not listed (as if written after the listing passed), but there
	rotten bool // a verify finds it corrupt
}

func newFakeFsckStores() *fakeFsckStores {
	return &fakeFsckStores{shards: map[string]map[[2]uint64]fakeShard{},
		corrupt: map[string][]*metapb.ShardRef{}, fail: map[string]bool{}}
}

// fakeShardSize is the size on disk of a shard of 4+2 of an object of n bytes.
func fakeShardSize(n int64) int64 { return 4096 + (n+3)/4 }

func (f *fakeFsckStores) put(addr string, object uint64, index int, size int64, age time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shards[addr] == nil {
		f.shards[addr] = map[[2]uint64]fakeShard{}
	}
	f.shards[addr][[2]uint64{object, uint64(index)}] = fakeShard{size: size, mtime: time.Now().Add(-age)}
}

func (f *fakeFsckStores) has(addr string, object uint64, index int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.shards[addr][[2]uint64{object, uint64(index)}]
	return ok
}

func (f *fakeFsckStores) edit(addr string, object uint64, index int, fn func(*fakeShard)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]uint64{object, uint64(index)}
	sh := f.shards[addr][k]
	fn(&sh)
	f.shards[addr][k] = sh
}

func (f *fakeFsckStores) ListShards(ctx context.Context, addr string, fn func(object uint64, index int, size int64, mtime time.Time)) error {
	f.mu.Lock()
	m := maps.Clone(f.shards[addr])
	fail := f.fail[addr]
	f.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(m), func(a, b [2]uint64) int {
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		return int(a[1]) - int(b[1])
	})
	for i, k := range keys {
		if fail && i == 1 {
			return errors.New("connection reset by peer")
		}
		if sh := m[k]; !sh.hidden {
			fn(k[0], int(k[1]), sh.size, sh.mtime)
		}
	}
	if fail {
		return errors.New("connection reset by peer")
	}
	return nil
}

func (f *fakeFsckStores) Corrupt(ctx context.Context, addr string) ([]*metapb.ShardRef, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.corrupt[addr], nil
}

func (f *fakeFsckStores) StatShard(ctx context.Context, addr string, object uint64, index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats++
	if _, ok := f.shards[addr][[2]uint64{object, uint64(index)}]; !ok {
		return fmt.Errorf("%w: %016x-%03d on %s", ErrShardNotFound, object, index, addr)
	}
	return nil
}

func (f *fakeFsckStores) VerifyShard(ctx context.Context, addr string, object uint64, index int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh, ok := f.shards[addr][[2]uint64{object, uint64(index)}]
	if !ok {
		return false, fmt.Errorf("%w: %016x-%03d on %s", ErrShardNotFound, object, index, addr)
	}
	return !sh.rotten, nil
}

func (f *fakeFsckStores) DeleteShard(ctx context.Context, addr string, object uint64, index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.shards[addr], [2]uint64{object, uint64(index)})
	return nil
}

func (f *fakeFsckStores) ShardFileSize(scheme string, n int64) (int64, error) {
	if scheme != "4+2" {
		return 0, fmt.Errorf("scheme %q", scheme)
	}
	return fakeShardSize(n), nil
}

// TestFsck builds a filesystem through committed commands, with its shards
// on fake stores: a clean one first, then one with every kind of problem,
// which fsck reports, repairs, and then no longer finds.
func TestFsck(t *testing.T) {
	g := newTestGroup(t, 3)
	srvs := g.servers(t)
	s := srvs[g.leader(t)]
	fake := newFakeFsckStores()
	for _, sv := range srvs {
		sv.EnableFsck(fake, time.Hour)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply := func(c *metapb.Command) *metapb.Result {
		t.Helper()
		r, err := s.Apply(ctx, c)
		if err != nil || r.Errno != 0 {
			t.Fatalf("%v: %v %v", c, r, err)
		}
		return r
	}
	apply(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		apply(&metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: &metapb.StoreInfo{Id: id, Addr: id + ":1"}}}})
	}
	apply(&metapb.Command{Op: &metapb.Command_StoreState{StoreState: &metapb.StoreStateOp{Id: "g", State: StoreDown}}})
	sess := apply(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: int64(time.Hour)}}}).SessionId
	const length = 1000
	// file commits a new file whose block i is object objs[i], with the
	// records recs (each placed on stores and put on the fake stores, but
	// for shards on g, which is down, or on no store).
	file := func(name string, objs []uint64, recs map[uint64][]string) uint64 {
		t.Helper()
		ino := apply(createCmd(namespace.RootIno, name, true)).Attr.Ino
		op := &metapb.CommitOp{Session: sess, Ino: ino, NewSize: uint64(len(objs) * length)}
		for i, o := range objs {
			op.Writes = append(op.Writes, &metapb.BlockWrite{Block: uint64(i), Len: length, Object: o})
		}
		for _, id := range slices.Sorted(maps.Keys(recs)) {
			op.Objects = append(op.Objects, &metapb.ObjectRecord{Id: id, Length: length, Stores: recs[id]})
			for i, st := range recs[id] {
				if st != "" && st != "g" && st != "zz" {
					fake.put(st+":1", id, i, fakeShardSize(length), 2*time.Hour)
				}
			}
		}
		apply(&metapb.Command{Op: &metapb.Command_Commit{Commit: op}})
		return ino
	}
	all := []string{"a", "b", "c", "d", "e", "f"}
	file("f1", []uint64{1}, map[uint64][]string{1: all})
	file("f2", []uint64{2}, map[uint64][]string{2: {"a", "b", "c", "d", "e", "g"}}) // shard 5 on a down store
	// Shard 4 unplaced, shard 5 on a store never registered: the healer's.
	file("f6", []uint64{6}, map[uint64][]string{6: {"a", "b", "c", "d", "", "zz"}})
	file("f5", []uint64{5}, map[uint64][]string{5: all})
	apply(&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "f5"}}}) // queued for GC

	fsck := func(repair bool) *metapb.FsckResp {
		t.Helper()
		r, err := s.Admin(ctx, &metapb.AdminReq{Op: &metapb.AdminReq_Fsck{Fsck: &metapb.FsckReq{Repair: repair}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Fsck
	}
	counts := func(r *metapb.FsckResp, want map[string]uint64) {
		t.Helper()
		for _, k := range FsckKinds {
			if r.Counts[k] != want[k] {
				t.Errorf("%d %s problems, want %d; problems:\n%s", r.Counts[k], k, want[k], problemList(r))
			}
		}
	}

	r := fsck(false)
	counts(r, nil)
	if len(r.Problems) != 0 || r.Objects != 3 || r.Files != 3 || r.ShardsListed != 6+5+4+6 || r.YoungOrphans != 0 || r.Repaired != 0 {
		t.Fatalf("clean run: %v", r)
	}
	if len(r.Skipped) != 1 || !strings.HasPrefix(r.Skipped[0], "g (g:1): down") {
		t.Fatalf("skipped %q, want g (down)", r.Skipped)
	}

	// Now every kind of problem.
	fake.DeleteShard(ctx, "c:1", 1, 2)                                                      // missing
	fake.edit("d:1", 1, 3, func(sh *fakeShard) { sh.size-- })                               // length
	fake.corrupt["e:1"] = []*metapb.ShardRef{{Object: 1, Index: 4}, {Object: 77, Index: 0}} // rotten, and one of nobody's
	fake.edit("a:1", 2, 0, func(sh *fakeShard) { sh.hidden = true })                        // not listed, but there
	fake.put("a:1", 99, 0, 100, 2*time.Hour)                                                // orphan
	fake.put("b:1", 1, 200, 100, 2*time.Hour)                                               // orphan: no shard 200
	fake.put("f:1", 2, 5, fakeShardSize(length), 2*time.Hour)                               // orphan: recorded on g
	fake.put("b:1", 98, 1, 100, time.Second)                                                // young orphan
	f3 := file("f3", []uint64{50}, nil)                                                     // dangling
	file("f4", []uint64{4}, map[uint64][]string{3: all, 4: all})                            // 3 unreferenced
	fake.put("h:1", 4, 6, 100, 2*time.Hour)
	fake.put("h:1", 4, 7, 100, 2*time.Hour)
	fake.fail["h:1"] = true

	want := map[string]uint64{FsckMissing: 1, FsckLength: 1, FsckRotten: 1, FsckOrphan: 3, FsckDangling: 1, FsckUnreferenced: 1}
	check := func(r *metapb.FsckResp, repaired bool) {
		t.Helper()
		counts(r, want)
		if r.Objects != 5 || r.Files != 5 || r.YoungOrphans != 1 || len(r.Problems) != 8 {
			t.Fatalf("%d objects, %d files, %d young orphans, %d problems listed: %v", r.Objects, r.Files, r.YoungOrphans, len(r.Problems), r)
		}
		if len(r.Skipped) != 2 || !strings.HasPrefix(r.Skipped[0], "g (g:1): down") ||
			!strings.Contains(r.Skipped[1], "h (h:1): listing its shards: connection reset") {
			t.Fatalf("skipped %q", r.Skipped)
		}
		type key struct {
			kind   string
			object uint64
			index  int32
			store  string
			ino    uint64
		}
		got := map[key]bool{}
		for _, p := range r.Problems {
			got[key{p.Kind, p.Object, p.Index, p.Store, p.Ino}] = true
			if p.Repaired != (repaired && p.Kind != FsckDangling) {
				t.Errorf("problem %v: repaired %v", p, p.Repaired)
			}
		}
		for _, k := range []key{{FsckMissing, 1, 2, "c", 0}, {FsckLength, 1, 3, "d", 0}, {FsckRotten, 1, 4, "e", 0},
			{FsckOrphan, 99, 0, "a", 0}, {FsckOrphan, 1, 200, "b", 0}, {FsckOrphan, 2, 5, "f", 0},
			{FsckDangling, 50, -1, "", f3}, {FsckUnreferenced, 3, -1, "", 0}} {
			if !got[k] {
				t.Errorf("no problem %+v; problems:\n%s", k, problemList(r))
			}
		}
		if want := map[bool]uint64{false: 0, true: 7}[repaired]; r.Repaired != want {
			t.Errorf("%d repaired, want %d (with repair, all but the dangling slice)", r.Repaired, want)
		}
	}
	stats := fake.stats
	check(fsck(false), false)
	if fake.stats-stats != 2 {
		t.Errorf("%d shards confirmed missing with StatShard, want 2 (1/2 on c, 2/0 on a)", fake.stats-stats)
	}
	// Reporting changed nothing.
	if !fake.has("a:1", 99, 0) || s.fsm.ObjectHealth().GCPending != 1 {
		t.Fatal("fsck without repair deleted or queued something")
	}

	check(fsck(true), true)
	rec := s.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{1}}}})
	if len(rec.Objects) != 1 || rec.Objects[0].Bad != 1<<2|1<<3|1<<4 {
		t.Fatalf("object 1 after repair: %v, want shards 2, 3 and 4 bad", rec.Objects)
	}
	for _, o := range []struct {
		addr   string
		object uint64
		index  int
		want   bool
	}{{"a:1", 99, 0, false}, {"b:1", 1, 200, false}, {"f:1", 2, 5, false}, {"b:1", 98, 1, true}, {"a:1", 2, 0, true}, {"b:1", 1, 1, true}} {
		if fake.has(o.addr, o.object, o.index) != o.want {
			t.Errorf("shard %d/%d on %s: there %v, want %v", o.object, o.index, o.addr, !o.want, o.want)
		}
	}
	s.fsm.mu.RLock()
	queued := s.fsm.gcQueued[3]
	s.fsm.mu.RUnlock()
	if !queued {
		t.Fatal("unreferenced object 3 is not queued for GC after repair")
	}

	// What is left is the healer's (the bad shards) and the GC's (object
	// 3), and the lost data, which nothing can repair.
	r = fsck(false)
	counts(r, map[string]uint64{FsckDangling: 1})
	if r.YoungOrphans != 1 || len(r.Problems) != 1 || r.Problems[0].Ino != f3 {
		t.Fatalf("after repair: %v", r)
	}
}

// TestFsckListsEveryKind: past fsckMaxListed problems, each kind keeps a
// share of the listing, and every problem is counted.
func TestFsckListsEveryKind(t *testing.T) {
	c := &fscker{resp: &metapb.FsckResp{Counts: map[string]uint64{}}, listed: map[string][]*metapb.FsckProblem{}}
	for i := range 3000 {
		c.add(&metapb.FsckProblem{Kind: FsckOrphan, Object: uint64(i), Store: "a", Repaired: i%2 == 0})
	}
	c.add(&metapb.FsckProblem{Kind: FsckDangling, Object: 7, Index: -1, Ino: 9})
	for i := range 600 {
		c.add(&metapb.FsckProblem{Kind: FsckMissing, Object: uint64(i), Store: "b"})
	}
	l := c.pick()
	n := map[string]int{}
	for _, p := range l {
		n[p.Kind]++
	}
	// Taken in turn: missing, orphan, dangling, then missing and orphan.
	if len(l) != fsckMaxListed || n[FsckDangling] != 1 || n[FsckMissing] != 500 || n[FsckOrphan] != 499 {
		t.Fatalf("listed %d: %v", len(l), n)
	}
	if l[0].Kind != FsckMissing || l[len(l)-1].Kind != FsckDangling || !slices.IsSortedFunc(l[:500], func(a, b *metapb.FsckProblem) int {
		return int(a.Object) - int(b.Object)
	}) {
		t.Fatalf("not sorted by kind, then object: first %v, last %v", l[0], l[len(l)-1])
	}
	if c.resp.Counts[FsckOrphan] != 3000 || c.resp.Counts[FsckMissing] != 600 || c.resp.Repaired != 1500 {
		t.Fatalf("counts %v, %d repaired", c.resp.Counts, c.resp.Repaired)
	}
}

func problemList(r *metapb.FsckResp) string {
	var b strings.Builder
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  %v\n", p)
	}
	return b.String()
}

// TestFsckVerifyFindsRot: rot the stores have not found yet is found only
// with verify, and repair reports it to the healer.
func TestFsckVerifyFindsRot(t *testing.T) {
	srv, apply, sess := leaderWithStores(t, 6)
	fake := newFakeFsckStores()
	srv.EnableFsck(fake, time.Hour)
	stores := []string{"s0", "s1", "s2", "s3", "s4", "s5"}
	commitObject(t, apply, sess, 1, stores...)
	for i, id := range stores {
		fake.put(id+":1", 1, i, fakeShardSize(1<<20), time.Minute)
	}
	fake.edit("s3:1", 1, 3, func(sh *fakeShard) { sh.rotten = true })
	fsck := func(req *metapb.FsckReq) *metapb.FsckResp {
		t.Helper()
		r, err := srv.Admin(context.Background(), &metapb.AdminReq{Op: &metapb.AdminReq_Fsck{Fsck: req}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Fsck
	}
	if r := fsck(&metapb.FsckReq{}); r.Counts[FsckRotten] != 0 {
		t.Fatalf("without verify: %v", r.Counts)
	}
	r := fsck(&metapb.FsckReq{Verify: true, Repair: true})
	if r.Counts[FsckRotten] != 1 || len(r.Problems) != 1 || r.Problems[0].Index != 3 || !r.Problems[0].Repaired {
		t.Fatalf("with verify: %v %v", r.Counts, r.Problems)
	}
	rec := srv.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{1}}}}).Objects[0]
	if rec.Bad != 1<<3 {
		t.Fatalf("bad shards after repair: %b", rec.Bad)
	}
}
