package cluster

import (
	"context"
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

// healFSM is an FSM with a 4+2 scheme, stores s0..s(n-1) (up, with room) and
// a session.
func healFSM(t *testing.T, n int) (*FSM, func(*metapb.Command) *metapb.Result, uint64) {
	t.Helper()
	f := NewFSM()
	at := func(c *metapb.Command) *metapb.Result { return applyAt(f, 1, c) }
	at(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	for i := range n {
		at(storeCmd(fmt.Sprint("s", i), 1<<30))
	}
	s := at(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	return f, at, s
}

func storeCmd(id string, free int64) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: &metapb.StoreInfo{
		Id: id, Addr: id + ":1", TotalBytes: 1 << 30, FreeBytes: free}}}}
}

// commitObject commits a file made of one object placed on stores.
func commitObject(t *testing.T, at func(*metapb.Command) *metapb.Result, session, id uint64, stores ...string) {
	t.Helper()
	ino := at(createCmd(namespace.RootIno, fmt.Sprint("f", id), true)).Attr.Ino
	r := at(&metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: session, Ino: ino, NewSize: 1 << 20,
		Writes:  []*metapb.BlockWrite{{Len: 1 << 20, Object: id}},
		Objects: []*metapb.ObjectRecord{{Id: id, Length: 1 << 20, Stores: stores}}}}})
	if r.Errno != 0 {
		t.Fatalf("commit of object %d: errno %d", id, r.Errno)
	}
}

func setState(at func(*metapb.Command) *metapb.Result, id, state string) {
	at(&metapb.Command{Op: &metapb.Command_StoreState{StoreState: &metapb.StoreStateOp{Id: id, State: state}}})
}

func report(at func(*metapb.Command) *metapb.Result, object uint64, index uint32, store string) {
	at(&metapb.Command{Op: &metapb.Command_Report{Report: &metapb.ReportOp{Shards: []*metapb.BadShard{
		{Object: object, Index: index, Store: store, Reason: "corrupt"}}}}})
}

func queued(f *FSM) []uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Sorted(maps.Keys(f.heal))
}

func candidateIDs(jobs []healJob) []uint64 {
	var ids []uint64
	for _, j := range jobs {
		ids = append(ids, j.object)
	}
	return ids
}

// TestHealQueueOrdersByRisk: the queue holds exactly the objects with work,
// and the object closest to unreadable comes first.
func TestHealQueueOrdersByRisk(t *testing.T) {
	f, at, s := healFSM(t, 8)
	commitObject(t, at, s, 1, "s0", "s1", "s2", "s3", "s4", "s5") // whole
	commitObject(t, at, s, 2, "s0", "s1", "s2", "s3", "s4", "")   // one unplaced
	commitObject(t, at, s, 3, "s0", "s1", "s2", "s3", "", "")     // two unplaced
	commitObject(t, at, s, 4, "s2", "s3", "s4", "s5", "s6", "s7") // whole
	if got := queued(f); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("queue %v, want [2 3]", got)
	}
	jobs, st := f.healCandidates(10, nil)
	if got := candidateIDs(jobs); !slices.Equal(got, []uint64{3, 2}) {
		t.Fatalf("candidates %v, want the riskiest (3) first", got)
	}
	if st.pending != 2 || !slices.Equal(st.byRisk, []uint64{1, 1, 0}) || st.degraded != 2 || st.pendingBytes != 2<<20 {
		t.Fatalf("queue stats %+v", st)
	}
	// skip leaves an object out without hiding it from the figures.
	jobs, st = f.healCandidates(10, func(id uint64) bool { return id == 3 })
	if got := candidateIDs(jobs); !slices.Equal(got, []uint64{2}) || st.pending != 2 {
		t.Fatalf("with 3 skipped: %v %+v", got, st)
	}
	// A store going down queues its objects; coming back takes them out.
	setState(at, "s7", StoreDown)
	if got := queued(f); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("queue after s7 down: %v", got)
	}
	at(storeCmd("s7", 1<<30)) // a heartbeat: up again
	if got := queued(f); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("queue after s7 back: %v", got)
	}
	// A suspect store's shards are waited for, not rebuilt.
	setState(at, "s6", StoreSuspect)
	if got := queued(f); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("queue with s6 suspect: %v", got)
	}
	// Deleting a file takes its object out of the queue.
	at(&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "f3"}}})
	if got := queued(f); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("queue after unlinking f3: %v", got)
	}
}

// TestReportMarksShardBadUntilRewritten: a report queues the shard; one
// naming a store that does not hold it is ignored; a relocation (in place
// or elsewhere) clears it.
func TestReportMarksShardBadUntilRewritten(t *testing.T) {
	f, at, s := healFSM(t, 7)
	commitObject(t, at, s, 1, "s0", "s1", "s2", "s3", "s4", "s5")
	report(at, 1, 2, "s3:1") // shard 2 is on s2, not s3: stale
	report(at, 1, 9, "s2")   // no such shard
	report(at, 99, 0, "s0")  // no such object
	if q := queued(f); len(q) != 0 {
		t.Fatalf("stale reports queued %v", q)
	}
	report(at, 1, 2, "s2:1") // by address
	report(at, 1, 4, "s4")   // by id
	if h := f.ObjectHealth(); h.Corrupt != 2 || h.Degraded != 1 || h.HealPending != 1 {
		t.Fatalf("health after two reports: %+v", h)
	}
	rec := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{1}}}}).Objects[0]
	if rec.Bad != 1<<2|1<<4 {
		t.Fatalf("record's bad shards %b", rec.Bad)
	}
	jobs, _ := f.healCandidates(1, nil)
	if len(jobs) != 1 || jobs[0].healthy != 4 || jobs[0].needs[2] != shardRewrite || jobs[0].from[2] != "" || jobs[0].from[0] != "s0:1" {
		t.Fatalf("job %+v", jobs)
	}
	// In place.
	at(&metapb.Command{Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{Object: 1, Index: 2, Store: "s2", From: "s2"}}})
	// Elsewhere; a stale relocation (wrong from) is refused.
	if r := at(&metapb.Command{Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{Object: 1, Index: 4, Store: "s6", From: "s5"}}}); r.Errno == 0 {
		t.Fatal("a relocation from the wrong store was accepted")
	}
	if h := f.ObjectHealth(); h.Corrupt != 1 {
		t.Fatalf("health after one rewrite: %+v", h)
	}
	at(&metapb.Command{Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{Object: 1, Index: 4, Store: "s6", From: "s4"}}})
	if h := f.ObjectHealth(); h.Corrupt != 0 || h.Degraded != 0 || h.HealPending != 0 || len(queued(f)) != 0 {
		t.Fatalf("health after both rewrites: %+v, queue %v", h, queued(f))
	}
	on := f.ShardsOn()
	if on["s4"] != 0 || on["s6"] != 1 || on["s2"] != 1 {
		t.Fatalf("shards per store %v", on)
	}
	// A store's heartbeat carries what its scrub found.
	hb := storeCmd("s0", 1<<30)
	hb.GetStore().Info.Corrupt = []*metapb.ShardRef{{Object: 1, Index: 0}, {Object: 1, Index: 1}} // 1 is on s1: ignored
	at(hb)
	if h := f.ObjectHealth(); h.Corrupt != 1 {
		t.Fatalf("health after a heartbeat reporting rot: %+v", h)
	}
	if st := f.Stores()[0]; len(st.Corrupt) != 0 {
		t.Fatal("the state kept a heartbeat's corrupt list")
	}
}

// TestDrainQueuesMoves: a draining store's shards are healthy but to move;
// draining ends when no record places a shard there.
func TestDrainQueuesMoves(t *testing.T) {
	f, at, s := healFSM(t, 7)
	commitObject(t, at, s, 1, "s0", "s1", "s2", "s3", "s4", "s5")
	commitObject(t, at, s, 2, "s1", "s2", "s3", "s4", "s5", "s6")
	setState(at, "s0", StoreDraining)
	at(storeCmd("s0", 1<<30)) // a heartbeat keeps it draining
	if f.Stores()[0].State != StoreDraining {
		t.Fatal("a heartbeat ended the drain")
	}
	jobs, st := f.healCandidates(10, nil)
	if got := candidateIDs(jobs); !slices.Equal(got, []uint64{1}) || st.degraded != 0 || st.pending != 1 {
		t.Fatalf("candidates %v, stats %+v", got, st)
	}
	if j := jobs[0]; j.healthy != 6 || j.needs[0] != shardMove || j.from[0] != "s0:1" {
		t.Fatalf("job %+v", j)
	}
	if task := plan(jobs[0], f.Stores()); !slices.Equal(task.toID, []string{"s6"}) || !slices.Equal(task.shard, []int{0}) {
		t.Fatalf("plan %+v", task)
	}
	at(&metapb.Command{Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{Object: 1, Index: 0, Store: "s6", From: "s0"}}})
	if on := f.ShardsOn(); on["s0"] != 0 || len(queued(f)) != 0 {
		t.Fatalf("after the move: shards %v, queue %v", on, queued(f))
	}
}

// TestHealDerivedStateAfterRestore: the queue, bad shards and counts are the
// same on a member restored from a snapshot.
func TestHealDerivedStateAfterRestore(t *testing.T) {
	f, at, s := healFSM(t, 7)
	commitObject(t, at, s, 1, "s0", "s1", "s2", "s3", "s4", "s5")
	commitObject(t, at, s, 2, "s1", "s2", "s3", "s4", "s5", "")
	commitObject(t, at, s, 3, "s1", "s2", "s3", "s4", "s5", "s6")
	report(at, 1, 3, "s3")
	setState(at, "s6", StoreDown)
	at(&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "f2"}}})
	g := restored(t, f)
	if a, b := queued(f), queued(g); !slices.Equal(a, b) || !slices.Equal(a, []uint64{1, 3}) {
		t.Fatalf("queue %v, restored %v", a, b)
	}
	if a, b := f.ObjectHealth(), g.ObjectHealth(); a != b || a.Corrupt != 1 || a.GCPending != 1 {
		t.Fatalf("health %+v, restored %+v", a, b)
	}
	if a, b := f.ShardsOn(), g.ShardsOn(); !maps.Equal(a, b) {
		t.Fatalf("shards per store %v, restored %v", a, b)
	}
}

// TestFullStoreGetsNoShards: placement and the healer skip a store that
// reports less than MinFreeBytes free.
func TestFullStoreGetsNoShards(t *testing.T) {
	f, at, _ := healFSM(t, 7)
	at(storeCmd("s3", MinFreeBytes-1))
	for obj := range uint64(200) {
		chosen, err := place(f.Stores(), obj, 6, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range chosen {
			if st != nil && st.Id == "s3" {
				t.Fatalf("object %d placed on the full store", obj)
			}
		}
	}
}

// fakeRebuilder records rebuilds and refuses shards to stores in full.
type fakeRebuilder struct {
	mu      sync.Mutex
	calls   []string // "object:shard->addr"
	full    map[string]bool
	deleted []string
}

func (r *fakeRebuilder) RebuildShards(ctx context.Context, scheme string, object uint64, length int64, from []string, shards []int, to []string) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := make([]error, len(shards))
	for i, idx := range shards {
		r.calls = append(r.calls, fmt.Sprintf("%d:%d->%s", object, idx, to[i]))
		if r.full[to[i]] {
			errs[i] = fmt.Errorf("%w: no space", ErrStoreFull)
		}
	}
	return errs
}

func (r *fakeRebuilder) ListShards(context.Context, string, func(uint64, int, time.Time)) error {
	return nil
}

func (r *fakeRebuilder) DeleteShard(_ context.Context, addr string, object uint64, index int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleted = append(r.deleted, fmt.Sprintf("%d:%d@%s", object, index, addr))
	return nil
}

func (r *fakeRebuilder) callsTo(addr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if len(c) > len(addr) && c[len(c)-len(addr):] == addr {
			n++
		}
	}
	return n
}

// TestHealerRebuildsAndBacksOffFromAFullStore: with a store that refuses
// every shard, the healer records the rest, tries the full store a couple
// of times at most in a few seconds, and deletes a moved shard's old copy.
func TestHealerRebuildsAndBacksOffFromAFullStore(t *testing.T) {
	srv, apply, sess := leaderWithStores(t, 8)
	for id := uint64(1); id <= 20; id++ {
		commitObject(t, apply, sess, id, "s0", "s1", "s2", "s3", "s4", "s5")
	}
	r := &fakeRebuilder{full: map[string]bool{}}
	// s6 and s7 are the only spares; s6 refuses everything.
	r.full["s6:1"] = true
	setState(apply, "s5", StoreDraining) // 20 shards to move
	report(apply, 7, 1, "s1")            // one rotten: rewritten in place
	hctx, hcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.RunHealer(hctx, r, r, HealConfig{Every: 20 * time.Millisecond, Parallel: 2})
	}()
	defer func() { hcancel(); <-done }()
	// Each object can move shard 5 to s7 only (s6 is full): the moves go
	// there, and s6 is tried rarely.
	waitFor(t, "every shard moved off the draining store", 20*time.Second, func() bool {
		return srv.fsm.ShardsOn()["s5"] == 0 && srv.fsm.ObjectHealth().Corrupt == 0
	})
	// The healer counts a move, and deletes the old shard, once the
	// service applied it: the last ones may come just after.
	waitFor(t, "the moves counted and the old shards deleted", 10*time.Second, func() bool {
		hs := srv.HealStatus()
		r.mu.Lock()
		defer r.mu.Unlock()
		return hs.MovedShards >= 20 && hs.RebuiltShards >= 21 && len(r.deleted) >= 20
	})
	if n := r.callsTo("s6:1"); n < 1 || n > 2 {
		t.Errorf("the full store was asked %d times; want 1 or 2 (it backs off for 5 s at first)", n)
	}
	hs := srv.HealStatus()
	if !hs.Leader || hs.Failures["full"] < 1 || hs.MovedShards != 20 || hs.RebuiltShards != 21 || hs.LastError == "" {
		t.Errorf("heal status %+v", hs)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.deleted) != 20 {
		t.Errorf("deleted %d replaced shards, want the 20 moved: %v", len(r.deleted), r.deleted)
	}
	if !slices.Contains(r.calls, "7:1->s1:1") {
		t.Errorf("the rotten shard was not rewritten in place: %v", r.calls)
	}
}

// leaderWithStores is a one-member group's server, leading and past its
// barrier, with a 4+2 scheme, stores s0..s(n-1) with room, and a session;
// apply proposes a command through it.
func leaderWithStores(t *testing.T, n int) (*Server, func(*metapb.Command) *metapb.Result, uint64) {
	t.Helper()
	g := newTestGroup(t, 1)
	srv := g.servers(t)[0]
	g.leader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	apply := func(c *metapb.Command) *metapb.Result {
		t.Helper()
		c.Now = time.Now().UnixNano()
		r, err := srv.commit.propose(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	apply(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	for i := range n {
		apply(storeCmd(fmt.Sprint("s", i), 1<<30))
	}
	sess := apply(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	waitFor(t, "the barrier", 10*time.Second, srv.barrier.ready)
	return srv, apply, sess
}

// verifyingStores is a fakeRebuilder whose stores can verify shards: those
// in whole are found whole.
type verifyingStores struct {
	*fakeRebuilder
	whole map[string]bool // "object:index"
}

func (v verifyingStores) VerifyShard(_ context.Context, _ string, object uint64, index int) (bool, error) {
	return v.whole[fmt.Sprintf("%d:%d", object, index)], nil
}

// TestHealerVerifiesBeforeRewriting: a shard reported bad that its store
// finds whole is recorded good again, not rebuilt; one found corrupt is
// rebuilt in place.
func TestHealerVerifiesBeforeRewriting(t *testing.T) {
	srv, apply, sess := leaderWithStores(t, 6)
	commitObject(t, apply, sess, 1, "s0", "s1", "s2", "s3", "s4", "s5")
	commitObject(t, apply, sess, 2, "s0", "s1", "s2", "s3", "s4", "s5")
	report(apply, 1, 2, "s2") // stale: whole on its store
	report(apply, 2, 3, "s3") // really corrupt
	v := verifyingStores{&fakeRebuilder{full: map[string]bool{}}, map[string]bool{"1:2": true}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.RunHealer(ctx, v, v, HealConfig{Every: 20 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	waitFor(t, "both reports dealt with", 10*time.Second, func() bool { return srv.fsm.ObjectHealth().Corrupt == 0 })
	v.mu.Lock()
	defer v.mu.Unlock()
	if !slices.Equal(v.calls, []string{"2:3->s3:1"}) {
		t.Fatalf("rebuilds %v, want only the corrupt shard", v.calls)
	}
}

// TestRemoveDrainedStore: a store is forgotten only once no shard is
// recorded on it and it has stopped reporting.
func TestRemoveDrainedStore(t *testing.T) {
	srv, apply, sess := leaderWithStores(t, 7)
	commitObject(t, apply, sess, 1, "s0", "s1", "s2", "s3", "s4", "s5")
	remove := func(id string) error {
		_, err := srv.Admin(context.Background(), &metapb.AdminReq{Op: &metapb.AdminReq_Drain{Drain: &metapb.DrainReq{Store: id, Remove: true}}})
		return err
	}
	if err := remove("s6"); err == nil || !strings.Contains(err.Error(), "stop its daemon") {
		t.Fatalf("removing a store that reports: %v", err)
	}
	// s6 and s0 fall silent a minute ago.
	for _, id := range []string{"s6", "s0"} {
		c := storeCmd(id, 1<<30)
		c.Now = time.Now().Add(-time.Minute).UnixNano()
		if _, err := srv.commit.propose(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := remove("s0"); err == nil || !strings.Contains(err.Error(), "still holds 1 shards") {
		t.Fatalf("removing a store with a shard: %v", err)
	}
	if err := remove("s6:1"); err != nil {
		t.Fatal(err)
	}
	for _, st := range srv.fsm.Stores() {
		if st.Id == "s6" {
			t.Fatal("s6 is still a store")
		}
	}
	// Reporting again, it is a store again.
	apply(storeCmd("s6", 1<<30))
	if n := len(srv.fsm.Stores()); n != 7 {
		t.Fatalf("%d stores after s6 reported again", n)
	}
}
