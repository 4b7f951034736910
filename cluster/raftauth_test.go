package cluster

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// tcpGroup starts n members talking Raft over TCP on 127.0.0.1, each made
// by node(i, addr), with member 0 bootstrapping all of them.
func tcpGroup(t *testing.T, n int, node func(i int, addr string) NodeConfig) []*Node {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	var nodes []*Node
	var servers []raft.Server
	for i := range n {
		cfg := node(i, addrs[i])
		cfg.ID, cfg.DataDir, cfg.Fast = fmt.Sprint("n", i), t.TempDir(), true
		cfg.Logger = slog.New(slog.DiscardHandler)
		nd, err := NewNode(cfg, NewFSM())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Close() })
		nodes = append(nodes, nd)
		servers = append(servers, raft.Server{ID: raft.ServerID(cfg.ID), Address: nd.trans.LocalAddr()})
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// settled waits for one leader that every member knows, and a commit of
// an entry in its term (so every member has the term), and returns the
// leader's address and the term.
func settled(t *testing.T, nodes []*Node) (raft.ServerAddress, uint64) {
	t.Helper()
	var leader raft.ServerAddress
	waitFor(t, "a leader every member knows", 15*time.Second, func() bool {
		leader, _ = nodes[0].raft.LeaderWithID()
		for _, n := range nodes {
			if l, _ := n.raft.LeaderWithID(); l == "" || l != leader {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		if n.IsLeader() {
			if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	term := nodes[0].raft.CurrentTerm()
	waitFor(t, "every member in the leader's term", 5*time.Second, func() bool {
		for _, n := range nodes {
			if n.raft.CurrentTerm() != term {
				return false
			}
		}
		return true
	})
	return leader, term
}

// forgeVotes sends every member a RequestVote with a term far ahead and
// leadership transfer set, as a host on the network could, through trans;
// it returns how many were answered.
func forgeVotes(t *testing.T, trans raft.Transport, nodes []*Node) int {
	t.Helper()
	answered := 0
	for i, n := range nodes {
		req := &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(fmt.Sprint("n", i)), Addr: []byte(trans.LocalAddr())},
			Term:      1000, LastLogIndex: 1 << 40, LastLogTerm: 1000, LeadershipTransfer: true,
		}
		var resp raft.RequestVoteResponse
		if err := trans.RequestVote(raft.ServerID(fmt.Sprint("n", i)), n.trans.LocalAddr(), req, &resp); err == nil {
			answered++
		}
	}
	return answered
}

// TestForgedVoteWithoutSecret: a RequestVote (term 1000, leadership
// transfer) from a host without the cluster secret reaches no member's
// raft: no term or leader changes, and each refusal is counted. The same
// vote against members on raft's plain TCP transport does depose the
// leader (what the handshake prevents).
func TestForgedVoteWithoutSecret(t *testing.T) {
	t.Run("plain transport (control)", func(t *testing.T) {
		nodes := tcpGroup(t, 3, func(i int, addr string) NodeConfig {
			tr, err := raft.NewTCPTransport(addr, nil, 4, time.Second, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			return NodeConfig{Transport: tr}
		})
		_, term := settled(t, nodes)
		forger, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer forger.Close()
		if n := forgeVotes(t, forger, nodes); n == 0 {
			t.Fatal("no member answered a forged vote on the plain transport")
		}
		waitFor(t, "the forged term to reach a member", 5*time.Second, func() bool {
			for _, n := range nodes {
				if n.raft.CurrentTerm() >= 1000 {
					return true
				}
			}
			return false
		})
		t.Logf("plain transport: term %d -> %d", term, nodes[0].raft.CurrentTerm())
	})

	t.Run("authenticated", func(t *testing.T) {
		nodes := tcpGroup(t, 3, func(i int, addr string) NodeConfig {
			return NodeConfig{RaftAddr: addr, Secret: testSecret}
		})
		leader, term := settled(t, nodes)

		plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if n := forgeVotes(t, plain, nodes); n != 0 {
			t.Errorf("%d members answered a vote over plain TCP", n)
		}
		wrong, err := newAuthStream("127.0.0.1:0", nil, "another-cluster-secret-0123456789", nil, slog.New(slog.DiscardHandler), &RaftRefusals{})
		if err != nil {
			t.Fatal(err)
		}
		wrongTrans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: wrong, MaxPool: 1, Timeout: time.Second, Logger: nil})
		defer wrongTrans.Close()
		if n := forgeVotes(t, wrongTrans, nodes); n != 0 {
			t.Errorf("%d members answered a vote from a host with another secret", n)
		}

		var refused uint64
		waitFor(t, "every forged connection refused and counted", 10*time.Second, func() bool {
			refused = 0
			for _, n := range nodes {
				r := n.RaftRefusals()
				refused += r.Secret.Load() + r.Handshake.Load()
			}
			return refused >= 6
		})
		var wrongSecret uint64
		for _, n := range nodes {
			wrongSecret += n.RaftRefusals().Secret.Load()
		}
		if wrongSecret < 3 {
			t.Errorf("%d connections refused for a wrong proof of the secret, want at least 3 (one per member from the other cluster)", wrongSecret)
		}
		for i, n := range nodes {
			if got := n.raft.CurrentTerm(); got != term {
				t.Errorf("member %d: term %d after the forged votes, was %d", i, got, term)
			}
			if l, _ := n.raft.LeaderWithID(); l != leader {
				t.Errorf("member %d: leader %q after the forged votes, was %q", i, l, leader)
			}
		}
		// The members still replicate to each other.
		for _, n := range nodes {
			if n.IsLeader() {
				if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
					t.Errorf("barrier after the forged votes: %v", err)
				}
			}
		}
	})
}

// TestAuthStreamHandshake: a connection through the stream carries bytes
// both ways once both ends know the secret; a dialer with another secret
// fails and the listener accepts nothing from it; a listener with another
// secret is refused by the dialer.
func TestAuthStreamHandshake(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	var refused RaftRefusals
	srv, err := newAuthStream("127.0.0.1:0", nil, testSecret, nil, log, &refused)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := newAuthStream("127.0.0.1:0", nil, testSecret, nil, log, &RaftRefusals{})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	other, err := newAuthStream("127.0.0.1:0", nil, "another-cluster-secret-0123456789", nil, log, &RaftRefusals{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c, err := cli.Dial(raft.ServerAddress(srv.Addr().String()), time.Second)
	if err != nil {
		t.Fatalf("dial with the secret: %v", err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}

	if c, err := other.Dial(raft.ServerAddress(srv.Addr().String()), time.Second); err == nil {
		c.Close()
		t.Error("a dialer with another secret got a connection")
	}
	waitFor(t, "the wrong secret counted", 5*time.Second, func() bool { return refused.Secret.Load() == 1 })
	if c, err := cli.Dial(raft.ServerAddress(other.Addr().String()), time.Second); err == nil {
		c.Close()
		t.Error("a listener with another secret was accepted by the dialer")
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Error("the listener accepted a connection with another secret")
	case <-time.After(100 * time.Millisecond): // a refused one never arrives; this bounds the check
	}
}
