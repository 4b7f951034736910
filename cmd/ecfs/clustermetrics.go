package main

import (
	"context"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/prometheus/client_golang/prometheus"
)

// clusterCollector exports the cluster's state from the meta leader's
// /metrics (the other members export none of it: the leader's figures are
// the cluster's): members, stores by state with their space, objects and
// their health, the GC backlog. The healer's figures are healCollector's.
type clusterCollector struct {
	srv *cluster.Server

	members, stores, storeUp, storeFree, storeTotal, storeShards  *prometheus.Desc
	objects, degraded, unreadable, healPending, gcPending, inodes *prometheus.Desc
}

func newClusterCollector(srv *cluster.Server) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ecfs_cluster_"+name, help, labels, nil)
	}
	return &clusterCollector{srv: srv,
		members:     d("members", "Voting members of the metadata group."),
		stores:      d("stores", "Stores by state: up, suspect (silent a while, gets no new shards), down (its shards are rebuilt elsewhere), draining.", "state"),
		storeUp:     d("store_up", "1 if the store is up.", "store", "addr"),
		storeFree:   d("store_free_bytes", "Free bytes a store reports (what shards may still use).", "store", "addr"),
		storeTotal:  d("store_total_bytes", "Total bytes of a store's disks.", "store", "addr"),
		storeShards: d("store_shards", "Shards recorded on a store.", "store", "addr"),
		objects:     d("objects", "Objects (coded blocks) recorded."),
		degraded:    d("objects_degraded", "Objects with fewer than k+m shards on up stores."),
		unreadable:  d("objects_unreadable", "Objects with fewer than k shards on up stores: their data cannot be read now."),
		healPending: d("objects_heal_pending", "Objects with fewer healthy shards than the up stores could hold: the healer's remaining work."),
		gcPending:   d("gc_pending_objects", "Unreferenced objects whose shards are still to be deleted."),
		inodes:      d("inodes", "Files, directories and links."),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.stores, c.storeUp, c.storeFree, c.storeTotal, c.storeShards,
		c.objects, c.degraded, c.unreadable, c.healPending, c.gcPending, c.inodes} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.srv.Status(ctx, &metapb.StatusReq{})
	if err != nil || st.State != "leader" {
		return
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(c.members, float64(len(st.Members)))
	byState := map[string]int{cluster.StoreUp: 0, cluster.StoreSuspect: 0, cluster.StoreDown: 0, cluster.StoreDraining: 0}
	for _, s := range st.Stores {
		byState[s.State]++
		up := 0.0
		if s.State == cluster.StoreUp {
			up = 1
		}
		g(c.storeUp, up, s.Id, s.Addr)
		g(c.storeFree, float64(s.FreeBytes), s.Id, s.Addr)
		g(c.storeTotal, float64(s.TotalBytes), s.Id, s.Addr)
		g(c.storeShards, float64(s.Shards), s.Id, s.Addr)
	}
	for state, n := range byState {
		g(c.stores, float64(n), state)
	}
	g(c.objects, float64(st.Objects))
	g(c.degraded, float64(st.ObjectsDegraded))
	g(c.unreadable, float64(st.ObjectsUnreadable))
	g(c.healPending, float64(st.ObjectsHealPending))
	g(c.gcPending, float64(st.GcPending))
	g(c.inodes, float64(st.Inodes))
}

// newCommitLatency is the histogram of the leader's Raft commits
// (cluster.Server.ObserveCommits).
func newCommitLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ecfs_meta_raft_commit_seconds",
		Help:    "Time to commit a batch of commands as leader: from handing it to Raft until it is replicated to a quorum and applied here.",
		Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16), // 100 µs … 3.3 s
	})
}
