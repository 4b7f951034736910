package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// metric sums the series of name on the /metrics at addr whose labels
// contain want (all of them with want "").
func metric(t *testing.T, addr, name, want string) float64 {
	t.Helper()
	var sum float64
	for labels, v := range scrape(t, addr, name) {
		if strings.Contains(labels, want) {
			sum += v
		}
	}
	return sum
}

// TestMetricsMove: the meta leader's and a mount's /metrics follow a copy
// and a store's death: commits and their latency, the mount's requests,
// buffers, journal and leases, its calls to the stores, the stores by
// state, objects and degraded ones, and the calls that found a store dead.
func TestMetricsMove(t *testing.T) {
	fc := newFSCluster(t, 3, 6)
	ops := freeAddr(t, "127.0.0.41")
	m := fc.mount("--http-addr", ops)
	lead := fc.g.nodes[fc.g.leader()]
	if up := metric(t, lead.http, "ecfs_cluster_stores", `state="up"`); up != 6 {
		t.Fatalf("the leader counts %v stores up, want 6", up)
	}
	for _, n := range fc.g.nodes {
		if n != lead {
			if got := counters(t, n.http, "ecfs_meta_raft_is_leader")[""]; got != 0 {
				t.Errorf("follower %s says it leads", n.id)
			}
		}
	}
	commits := metric(t, lead.http, "ecfs_meta_raft_commit_seconds_count", "")
	puts := metric(t, ops, "ecfs_mount_store_request_seconds_count", `op="put"`)
	writes := metric(t, ops, "ecfs_mount_fuse_requests_total", `op="write"`)

	// Sample the mount's gauges while it copies.
	var maxBuf, maxJournal, maxWrite atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			st := counters(t, ops, "ecfs_mount_buffer_bytes")[""]
			maxBuf.Store(max(maxBuf.Load(), int64(st)))
			maxJournal.Store(max(maxJournal.Load(), int64(counters(t, ops, "ecfs_mount_journal_backlog")[""])))
			maxWrite.Store(max(maxWrite.Load(), int64(metric(t, ops, "ecfs_mount_leases", `kind="write"`))))
		}
	}()
	src := makeTree(t, 24)
	sh(t, m.dir, "cp -a "+src+" a")
	close(stop)
	wg.Wait()
	if maxBuf.Load() == 0 || maxJournal.Load() == 0 || maxWrite.Load() == 0 {
		t.Errorf("during the copy the mount showed at most %d buffer bytes, %d journal backlog, %d write leases; want each above 0",
			maxBuf.Load(), maxJournal.Load(), maxWrite.Load())
	}
	if limit := counters(t, ops, "ecfs_mount_buffer_limit_bytes")[""]; limit != 256<<20 {
		t.Errorf("buffer limit %v, want 256 MiB", limit)
	}
	for _, c := range []struct {
		what, addr, name, labels string
		before                   float64
	}{
		{"leader commits", lead.http, "ecfs_meta_raft_commit_seconds_count", "", commits},
		{"mount shard puts", ops, "ecfs_mount_store_request_seconds_count", `op="put"`, puts},
		{"mount FUSE writes", ops, "ecfs_mount_fuse_requests_total", `op="write"`, writes},
	} {
		if got := metric(t, c.addr, c.name, c.labels); got <= c.before {
			t.Errorf("%s: %s{%s} stayed at %v during the copy", c.what, c.name, c.labels, got)
		}
	}
	objects := counters(t, lead.http, "ecfs_cluster_objects")[""]
	if objects == 0 {
		t.Error("the leader counts no objects after the copy")
	}
	if d := counters(t, lead.http, "ecfs_cluster_objects_degraded")[""]; d != 0 {
		t.Errorf("%v objects degraded with every store up", d)
	}

	// A store dies: the leader sees it down and the objects degraded; a
	// cold read through the mount finds it dead.
	dead := fc.c.stores[0]
	dead.p.kill()
	waitFor(t, "the leader to count a store down", 20*time.Second, func() error {
		if down := metric(t, lead.http, "ecfs_cluster_stores", `state="down"`); down != 1 {
			return fmt.Errorf("%v stores down", down)
		}
		if up := metric(t, lead.http, "ecfs_cluster_store_up", `addr="`+dead.addr+`"`); up != 0 {
			return fmt.Errorf("the dead store is up")
		}
		if d := counters(t, lead.http, "ecfs_cluster_objects_degraded")[""]; d == 0 {
			return fmt.Errorf("no object degraded")
		}
		return nil
	})
	m2ops := freeAddr(t, "127.0.0.42")
	m2 := fc.mount("--http-addr", m2ops)
	compareTrees(t, src, filepath.Join(m2.dir, "a"), true)
	if n := metric(t, m2ops, "ecfs_mount_store_request_errors_total", `code="Unavailable"`); n == 0 {
		t.Error("reading every file back with a store dead counted no call that found it unreachable")
	}
}

// TestDfCountsSharedDiskOnce: six stores whose disks are on one file
// system (as ecfs dev runs them) make a filesystem of that disk's size
// times k/(k+m), not six times it: df shows what can be stored.
func TestDfCountsSharedDiskOnce(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	m := fc.mount()
	var disk, mnt syscall.Statfs_t
	if err := syscall.Statfs(fc.c.dir, &disk); err != nil {
		t.Fatal(err)
	}
	want := disk.Blocks * uint64(disk.Bsize) / 6 * 4
	waitFor(t, "df to count the shared disk once", 10*time.Second, func() error {
		if err := syscall.Statfs(m.dir, &mnt); err != nil {
			return err
		}
		got := mnt.Blocks * uint64(mnt.Bsize)
		if got < want*99/100 || got > want*101/100 {
			return fmt.Errorf("df size %d, want about %d (the store disks' file system of %d at 4+2)", got, want, disk.Blocks*uint64(disk.Bsize))
		}
		if mnt.Bavail > mnt.Blocks {
			return fmt.Errorf("more available (%d) than in all (%d)", mnt.Bavail, mnt.Blocks)
		}
		return nil
	})
}
