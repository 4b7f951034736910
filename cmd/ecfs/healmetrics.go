package main

import (
	"strconv"

	"github.com/ecfs/ecfs/cluster"
	"github.com/prometheus/client_golang/prometheus"
)

// healCollector exports the healer's queue and progress from the meta
// leader's /metrics (other members export none of it: the leader's
// figures are the cluster's).
type healCollector struct {
	srv *cluster.Server

	pending, pendingBytes, corrupt, unreadable, rate        *prometheus.Desc
	rebuiltShards, rebuiltBytes, readBytes, moved, failures *prometheus.Desc
}

func newHealCollector(srv *cluster.Server) *healCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ecfs_heal_"+name, help, labels, nil)
	}
	return &healCollector{srv: srv,
		pending:       d("pending_objects", "Objects the healer can still make whole or move, by risk: healthy shards beyond k (0: one more loss makes the object unreadable).", "risk"),
		pendingBytes:  d("pending_bytes", "Length of the pending objects."),
		corrupt:       d("corrupt_shards", "Shards known rotten or missing and not yet rebuilt."),
		unreadable:    d("unreadable_objects", "Objects with fewer than k healthy shards."),
		rate:          d("rate_bytes_per_second", "Bytes read to rebuild shards per second, over the last 10 s."),
		rebuiltShards: d("rebuilt_shards_total", "Shards rebuilt or moved by this leader's healer."),
		rebuiltBytes:  d("rebuilt_bytes_total", "Shard bytes written by this leader's healer."),
		readBytes:     d("read_bytes_total", "Object bytes read by this leader's healer to rebuild shards."),
		moved:         d("moved_shards_total", "Shards moved off draining stores."),
		failures:      d("failures_total", "Shards the healer failed to rebuild, by reason (full, unreachable, timeout, source, commit, other).", "reason"),
	}
}

func (c *healCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.pendingBytes, c.corrupt, c.unreadable, c.rate,
		c.rebuiltShards, c.rebuiltBytes, c.readBytes, c.moved, c.failures} {
		ch <- d
	}
}

func (c *healCollector) Collect(ch chan<- prometheus.Metric) {
	hs := c.srv.HealStatus()
	if !hs.Leader {
		return
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	n := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for risk, v := range hs.PendingByRisk {
		g(c.pending, float64(v), strconv.Itoa(risk))
	}
	g(c.pendingBytes, float64(hs.PendingBytes))
	g(c.corrupt, float64(hs.Corrupt))
	g(c.unreadable, float64(hs.Unreadable))
	g(c.rate, hs.Rate)
	n(c.rebuiltShards, hs.RebuiltShards)
	n(c.rebuiltBytes, hs.RebuiltBytes)
	n(c.readBytes, hs.ReadBytes)
	n(c.moved, hs.MovedShards)
	for _, reason := range []string{"full", "unreachable", "timeout", "source", "commit", "other"} {
		n(c.failures, hs.Failures[reason], reason)
	}
}
