package cluster

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/hashicorp/raft"
)

// TestReadAfterElectionSeesAcknowledgedWrites: a member whose state machine
// lags its log becomes leader. A linearizable read there must see a write
// the previous leader acknowledged: it waits (or is refused, retryably)
// until the new leader has applied it, rather than answering from before
// it. The member then loses leadership and gains it again: the new term
// needs its own barrier.
func TestReadAfterElectionSeesAcknowledgedWrites(t *testing.T) {
	g := newTestGroup(t, 3)
	l := g.leader(t)
	srvs := g.servers(t)
	slow, other := (l+1)%3, (l+2)%3

	t.Run("first term as leader", func(t *testing.T) {
		writeThenElectLagging(t, g, srvs, l, slow, "d1")
	})
	t.Run("leadership lost and regained", func(t *testing.T) {
		transferLeadership(t, g, slow, other)
		writeThenElectLagging(t, g, srvs, other, slow, "d2")
	})
}

// writeThenElectLagging makes a directory through leader from while member
// to applies nothing, hands leadership to to, and reads the directory there.
func writeThenElectLagging(t *testing.T, g *testGroup, srvs []*Server, from, to int, name string) {
	t.Helper()
	ctx := context.Background()
	release := holdApplies(t, g.fsms[to])
	res, err := srvs[from].Apply(ctx, mkdirCmd(namespace.RootIno, name))
	if err != nil || res.Errno != 0 {
		t.Fatalf("mkdir %s through the leader: %v %v", name, res, err)
	}
	last := g.nodes[from].raft.LastIndex()
	waitFor(t, "the lagging member to log the write", 5*time.Second, func() bool {
		return g.nodes[to].raft.LastIndex() >= last
	})
	if r := g.fsms[to].Read(lookupReq(name)); r.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("the lagging member applied the write (errno %d): the test would not test anything", r.Errno)
	}
	transferLeadership(t, g, from, to)

	// Its state machine still lacks the write: the read must not answer.
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	r, err := srvs[to].Read(rctx, lookupReq(name))
	cancel()
	switch {
	case err == nil && r.Errno == uint32(syscall.ENOENT):
		t.Fatalf("the new leader answered %s: ENOENT, from before a write acknowledged before the read", name)
	case err == nil:
		t.Fatalf("the new leader answered errno %d while it could not have applied the write", r.Errno)
	case !retryable(err):
		t.Fatalf("a read during the new leader's catch-up failed for good: %v", err)
	}

	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := srvs[to].Read(rctx, lookupReq(name))
		cancel()
		if err == nil {
			if r.Errno != 0 {
				t.Fatalf("lookup of %s on the new leader after it caught up: errno %d", name, r.Errno)
			}
			return
		}
		if !retryable(err) || time.Now().After(deadline) {
			t.Fatalf("read on the new leader after it caught up: %v", err)
		}
	}
}

// holdApplies stops f applying entries until release is called (or the test
// ends).
func holdApplies(t *testing.T, f *FSM) (release func()) {
	t.Helper()
	gate := make(chan struct{})
	hold := func() { <-gate }
	f.beforeApply.Store(&hold)
	release = sync.OnceFunc(func() {
		f.beforeApply.Store(nil)
		close(gate)
	})
	t.Cleanup(release) // before the servers and nodes close: they wait for applies
	return release
}

// transferLeadership moves leadership from member from to member to.
func transferLeadership(t *testing.T, g *testGroup, from, to int) {
	t.Helper()
	id := fmt.Sprint("n", to)
	waitFor(t, fmt.Sprintf("n%d to lead", from), 10*time.Second, g.nodes[from].IsLeader)
	if err := g.nodes[from].raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(id)).Error(); err != nil {
		t.Fatalf("leadership transfer to %s: %v", id, err)
	}
	waitFor(t, id+" to lead", 10*time.Second, g.nodes[to].IsLeader)
}

func lookupReq(name string) *metapb.ReadReq {
	return &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: name}}}
}
