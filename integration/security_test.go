package integration

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/hashicorp/raft"
)

// raftGauge reads a meta member's ecfs_meta_raft_NAME gauge.
func raftGauge(t *testing.T, m *metaNode, name string) float64 {
	t.Helper()
	return counters(t, m.http, "ecfs_meta_raft_"+name)[""]
}

// TestRaftPortRefusesForgedVotes: a process without the cluster secret
// sends each member of a real 3-member group a RequestVote with term 1000
// and leadership transfer set (one such vote deposed the leader when the
// Raft port took anyone). No member answers; no term or leader changes;
// each member counts the refusal on /metrics; the group still commits.
func TestRaftPortRefusesForgedVotes(t *testing.T) {
	t.Parallel()
	g := newMetaGroup(t, 3)
	lead := g.leader()
	var term float64
	waitFor(t, "every member in one term", 15*time.Second, func() error {
		term = raftGauge(t, g.nodes[0], "term")
		for _, m := range g.nodes {
			if got := raftGauge(t, m, "term"); got != term || term == 0 {
				return fmt.Errorf("%s in term %v, %s in %v", m.id, got, g.nodes[0].id, term)
			}
		}
		return nil
	})
	forger, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	for _, m := range g.nodes {
		req := &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("forger"), Addr: []byte(forger.LocalAddr())},
			Term:      1000, LastLogIndex: 1 << 40, LastLogTerm: 1000, LeadershipTransfer: true,
		}
		var resp raft.RequestVoteResponse
		if err := forger.RequestVote(raft.ServerID(m.id), raft.ServerAddress(m.raft), req, &resp); err == nil {
			t.Errorf("%s answered a forged vote: %+v", m.id, resp)
		}
	}
	waitFor(t, "each member to count a refused connection", 10*time.Second, func() error {
		for _, m := range g.nodes {
			var n float64
			for _, v := range counters(t, m.http, "ecfs_meta_raft_refused_connections_total") {
				n += v
			}
			if n < 1 {
				return fmt.Errorf("%s counts no refused raft connection", m.id)
			}
		}
		return nil
	})
	for i, m := range g.nodes {
		if got := raftGauge(t, m, "term"); got != term {
			t.Errorf("%s: term %v after the forged votes, was %v", m.id, got, term)
		}
		if i == lead && raftGauge(t, m, "is_leader") != 1 {
			t.Errorf("%s led before the forged votes and does not now", m.id)
		}
	}
	if got := g.leader(); got != lead {
		t.Errorf("leader %s after the forged votes, was %s", g.nodes[got].id, g.nodes[lead].id)
	}
	c := g.client() // the group still commits
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: 1, Name: "after-forgery", Mode: 0o755}}})
	if err != nil || r.Errno != 0 {
		t.Errorf("mkdir after the forged votes: %v, errno %d", err, r.GetErrno())
	}
}
