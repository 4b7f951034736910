package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// testGroup is a Raft group on raft's in-memory transport: no network.
type testGroup struct {
	nodes []*Node
	fsms  []*FSM
	comms []*committer
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

func newTestGroup(t *testing.T, n int) *testGroup {
	t.Helper()
	g := &testGroup{}
	var trans []*raft.InmemTransport
	var servers []raft.Server
	for i := range n {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprint("n", i)))
		trans = append(trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint("n", i)), Address: addr})
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	log := slog.New(slog.DiscardHandler)
	for i := range n {
		fsm := NewFSM()
		node, err := NewNode(NodeConfig{ID: fmt.Sprint("n", i), Transport: trans[i], Fast: true, Logger: log}, fsm)
		if err != nil {
			t.Fatal(err)
		}
		g.nodes = append(g.nodes, node)
		g.fsms = append(g.fsms, fsm)
		g.comms = append(g.comms, newCommitter(node.raft, 5*time.Second))
	}
	if err := g.nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i, node := range g.nodes {
			g.comms[i].close()
			node.Close()
		}
	})
	return g
}

// servers is an API server on each member of g (no network), closed with
// the test.
func (g *testGroup) servers(t *testing.T) []*Server {
	t.Helper()
	srvs := make([]*Server, len(g.nodes))
	for i := range g.nodes {
		srvs[i] = NewServer(g.nodes[i], g.fsms[i], "", "", slog.New(slog.DiscardHandler))
		t.Cleanup(srvs[i].Close)
	}
	return srvs
}

func (g *testGroup) leader(t *testing.T) int {
	t.Helper()
	idx := -1
	waitFor(t, "a leader", 10*time.Second, func() bool {
		for i, n := range g.nodes {
			if n.IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

func mkdirCmd(parent uint64, name string) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: parent, Name: name, Mode: 0o755}}}
}

func createCmd(parent uint64, name string, excl bool) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: parent, Name: name, Type: uint32(namespace.TypeFile), Mode: 0o644, Excl: excl,
	}}}
}

func TestGroupCommitReplicatesIdenticalState(t *testing.T) {
	g := newTestGroup(t, 3)
	l := g.leader(t)
	ctx := context.Background()
	res, err := g.comms[l].propose(ctx, mkdirCmd(namespace.RootIno, "d"))
	if err != nil || res.Errno != 0 {
		t.Fatalf("mkdir: %v %v", res, err)
	}
	dir := res.Attr.Ino
	// 16 writers at once: the group commit packs them into few entries.
	var wg sync.WaitGroup
	errs := make(chan error, 16*50)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				r, err := g.comms[l].propose(ctx, createCmd(dir, fmt.Sprintf("f%d-%d", w, i), true))
				if err != nil {
					errs <- err
				} else if r.Errno != 0 {
					errs <- syscall.Errno(r.Errno)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// One entry per create would be 800 and more; 16 writers mostly give
	// 4 or more per entry, but a slow moment (2 cores, other tests) lets
	// a few go alone: 203 entries once.
	if got := g.nodes[l].raft.LastIndex(); got > 400 {
		t.Errorf("800 creates took %d log entries: the group commit did not batch", got)
	}
	want := g.fsms[l].Inodes()
	if want != 802 {
		t.Fatalf("leader has %d inodes, want 802", want)
	}
	for i, f := range g.fsms {
		waitFor(t, "replica to catch up", 5*time.Second, func() bool { return f.Inodes() == want })
		d0, _ := g.fsms[l].Digest()
		di, _ := f.Digest()
		if d0 != di {
			t.Fatalf("replica %d differs from the leader", i)
		}
	}
}

func TestExactlyOnceRetry(t *testing.T) {
	f := NewFSM()
	apply := func(c *metapb.Command) *metapb.Result {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.applyOnce(c)
	}
	c := createCmd(namespace.RootIno, "x", true)
	c.Session, c.Seq = 7, 1
	first := apply(c)
	again := apply(c)
	if first.Errno != 0 || again.Errno != 0 || first.Attr.Ino != again.Attr.Ino {
		t.Fatalf("retry of a create: first %v, again %v: want the same success", first, again)
	}
	c2 := createCmd(namespace.RootIno, "x", true)
	c2.Session, c2.Seq = 7, 2
	if r := apply(c2); r.Errno != uint32(syscall.EEXIST) {
		t.Fatalf("a new exclusive create of the same name: %v, want EEXIST", r)
	}
}

func TestSnapshotRestore(t *testing.T) {
	f := NewFSM()
	f.mu.Lock()
	for i := range 100 {
		c := createCmd(namespace.RootIno, fmt.Sprint("f", i), false)
		c.Session, c.Seq = 3, uint64(i+1)
		f.applyOnce(c)
	}
	f.members["a"] = &metapb.MemberOp{Id: "a", ApiAddr: "127.0.0.1:1"}
	f.mu.Unlock()
	sink := snapshotOf(t, f)
	g := NewFSM()
	if err := g.Restore(sink); err != nil {
		t.Fatal(err)
	}
	d1, _ := f.Digest()
	d2, _ := g.Digest()
	if d1 != d2 || g.MemberAPI("a") != "127.0.0.1:1" || g.Inodes() != 101 {
		t.Fatalf("restored state differs")
	}
	// A corrupt snapshot is an error, not a panic.
	bad := &memSink{}
	bad.Write(sink.b[:len(sink.b)/2])
	if err := NewFSM().Restore(bad); err == nil {
		t.Fatal("restoring half a snapshot succeeded")
	}
}

type memSink struct {
	b   []byte
	off int
}

func (m *memSink) Write(p []byte) (int, error) { m.b = append(m.b, p...); return len(p), nil }
func (m *memSink) Read(p []byte) (int, error) {
	if m.off >= len(m.b) {
		return 0, io.EOF
	}
	n := copy(p, m.b[m.off:])
	m.off += n
	return n, nil
}
func (m *memSink) Close() error  { return nil }
func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }

// TestFollowerFarBehindCatchesUpFromSnapshot: a follower cut off while the
// others apply, snapshot and compact their logs gets a snapshot, then the
// rest, and ends identical.
func TestFollowerFarBehindCatchesUpFromSnapshot(t *testing.T) {
	var trans []*raft.InmemTransport
	var servers []raft.Server
	for i := range 3 {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprint("s", i)))
		trans = append(trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint("s", i)), Address: addr})
	}
	connect := func(i, j int) {
		trans[i].Connect(trans[j].LocalAddr(), trans[j])
		trans[j].Connect(trans[i].LocalAddr(), trans[i])
	}
	connect(0, 1)
	connect(0, 2)
	connect(1, 2)
	var nodes []*Node
	var fsms []*FSM
	for i := range 3 {
		fsm := NewFSM()
		n, err := NewNode(NodeConfig{ID: fmt.Sprint("s", i), Transport: trans[i], Fast: true, Logger: slog.New(slog.DiscardHandler),
			SnapshotThreshold: 50, TrailingLogs: 10, SnapshotInterval: 50 * time.Millisecond}, fsm)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes, fsms = append(nodes, n), append(fsms, fsm)
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node 0 to lead", 10*time.Second, func() bool { return nodes[0].IsLeader() })
	// Cut node 2 off.
	trans[2].DisconnectAll()
	trans[0].Disconnect(trans[2].LocalAddr())
	trans[1].Disconnect(trans[2].LocalAddr())
	c := newCommitter(nodes[0].raft, 5*time.Second)
	defer c.close()
	for i := range 300 {
		if r, err := c.propose(context.Background(), createCmd(namespace.RootIno, fmt.Sprint("f", i), true)); err != nil || r.Errno != 0 {
			t.Fatalf("create %d: %v %v", i, r, err)
		}
	}
	// Both connected members compact their logs: under load the other one
	// may lead when node 2 comes back, and it must not have the old
	// entries either.
	for i := range 2 {
		waitFor(t, "the members to snapshot and compact their logs", 10*time.Second, func() bool {
			return nodes[i].raft.Stats()["last_snapshot_index"] != "0"
		})
		if err := nodes[i].raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			t.Fatal(err)
		}
	}
	connect(0, 2)
	connect(1, 2)
	waitFor(t, "the cut-off follower to catch up", 15*time.Second, func() bool { return fsms[2].Inodes() == fsms[0].Inodes() })
	d0, _ := fsms[0].Digest()
	d2, _ := fsms[2].Digest()
	if d0 != d2 {
		t.Fatal("the follower that caught up differs from the leader")
	}
	// raft restores the FSM from an installed snapshot before it records the
	// snapshot's index, so the index is polled rather than read once.
	deadline := time.Now().Add(5 * time.Second)
	for nodes[2].raft.Stats()["last_snapshot_index"] == "0" {
		if time.Now().After(deadline) {
			t.Fatal("the follower caught up without installing a snapshot (last_snapshot_index 0): the test did not test that")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIdleClientSessionsAreForgotten(t *testing.T) {
	f := NewFSM()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range maxClientSessions + 1 {
		c := mkdirCmd(namespace.RootIno, fmt.Sprint("d", i))
		c.Session, c.Seq, c.Now = uint64(i+1), 1, int64(i)
		f.applyOnce(c)
	}
	if n := len(f.sessions); n > maxClientSessions || n < maxClientSessions*8/10 {
		t.Fatalf("%d client sessions remembered, want at most %d and most of them", n, maxClientSessions)
	}
	if f.sessions[1] != nil || f.sessions[maxClientSessions+1] == nil {
		t.Fatal("the oldest session should be forgotten and the newest kept")
	}
}

// TestFSMConcurrentReadsAndApplies: queries and digests run beside Apply
// (under -race in make test).
func TestFSMConcurrentReadsAndApplies(t *testing.T) {
	f := NewFSM()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: namespace.RootIno, Max: 50}}})
				f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "f7"}}})
				if _, err := f.Digest(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 300 {
		b := &metapb.Batch{Commands: []*metapb.Command{createCmd(namespace.RootIno, fmt.Sprint("f", i), true)}}
		if i%3 == 2 {
			b.Commands = append(b.Commands, &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: fmt.Sprint("f", i-1)}}})
		}
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}).([]*metapb.Result)
		for _, r := range res {
			if r.Errno != 0 {
				t.Fatalf("entry %d: errno %d", i, r.Errno)
			}
		}
	}
	close(done)
	wg.Wait()
	if n := f.Inodes(); n != 201 {
		t.Fatalf("%d inodes, want 201", n)
	}
}

// applyAt applies one command to f as if the leader stamped it with now.
func applyAt(f *FSM, now int64, c *metapb.Command) *metapb.Result {
	c.Now = now
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.apply(c)
}

// snapshotOf is f's snapshot, persisted.
func snapshotOf(t *testing.T, f *FSM) *memSink {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink
}

// restored is a new FSM restored from f's snapshot.
func restored(t *testing.T, f *FSM) *FSM {
	t.Helper()
	g := NewFSM()
	if err := g.Restore(snapshotOf(t, f)); err != nil {
		t.Fatal(err)
	}
	return g
}
