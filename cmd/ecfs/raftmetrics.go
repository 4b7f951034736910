package main

import (
	"strconv"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// raftCollector exports a meta member's Raft state from its /metrics:
// every member's, so a scrape of each shows who leads, in which term, and
// how far each has applied.
type raftCollector struct {
	node *cluster.Node
	srv  *cluster.Server

	term, state, leader, commit, applied, lastContact, peers, refused, apiRefused *prometheus.Desc
}

func newRaftCollector(node *cluster.Node, srv *cluster.Server) *raftCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ecfs_meta_raft_"+name, help, labels, nil)
	}
	return &raftCollector{node: node, srv: srv,
		apiRefused:  prometheus.NewDesc("ecfs_meta_api_refused_total", "Metadata API connections refused at the TLS handshake (reason tls), and calls refused for a wrong or missing secret (reason secret).", []string{"reason"}, nil),
		term:        d("term", "The member's current Raft term."),
		state:       d("state", "1 for the member's Raft state (follower, candidate, leader, shutdown), 0 for the others.", "state"),
		leader:      d("is_leader", "1 if this member is the leader."),
		commit:      d("commit_index", "The highest log index known committed."),
		applied:     d("applied_index", "The highest log index applied to the state machine."),
		lastContact: d("last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader, -1 never)."),
		peers:       d("peers", "Other voting members in the latest configuration."),
		refused:     d("refused_connections_total", "Connections to the Raft port refused at the handshake, by reason (secret, tls, overload, handshake).", "reason"),
	}
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.term, c.state, c.leader, c.commit, c.applied, c.lastContact, c.peers, c.refused, c.apiRefused} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.node.Raft()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := r.Stats()
	num := func(k string) float64 {
		v, _ := strconv.ParseFloat(st[k], 64)
		return v
	}
	g(c.term, num("term"))
	state := r.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == state {
			v = 1
		}
		g(c.state, v, lowerState(s))
	}
	isLeader := 0.0
	if state == raft.Leader {
		isLeader = 1
	}
	g(c.leader, isLeader)
	g(c.commit, num("commit_index"))
	g(c.applied, num("applied_index"))
	lc := -1.0
	switch {
	case state == raft.Leader:
		lc = 0
	case r.LastContact().IsZero():
	default:
		lc = time.Since(r.LastContact()).Seconds()
	}
	g(c.lastContact, lc)
	g(c.peers, num("num_peers"))
	ar := c.srv.Refusals()
	ch <- prometheus.MustNewConstMetric(c.apiRefused, prometheus.CounterValue, float64(ar.TLS.Load()), "tls")
	ch <- prometheus.MustNewConstMetric(c.apiRefused, prometheus.CounterValue, float64(ar.Secret.Load()), "secret")
	rf := c.node.RaftRefusals()
	for reason, v := range map[string]uint64{"secret": rf.Secret.Load(), "tls": rf.TLS.Load(), "overload": rf.Overload.Load(), "handshake": rf.Handshake.Load()} {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(v), reason)
	}
}

func lowerState(s raft.RaftState) string {
	switch s {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	default:
		return "shutdown"
	}
}
