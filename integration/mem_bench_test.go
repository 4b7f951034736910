package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// BenchmarkMountMemory: a mount's memory with a million cached entries.
// The tree (ECFS_BENCH_ENTRIES files, default 1,000,000, in directories of
// 1,000) is made through the metadata service directly, in batches, so that
// it takes seconds; then one mount walks it twice (stat of every name, as
// ls -lR or find -ls does): cold, then warm, with its kernel and its read
// leases holding whatever they keep. It reports the walks' rates and the
// mount's RSS against its bound, --buffer-size + 100 MiB. ECFS_BENCH_HEAP=file
// saves the mount's heap profile after the walks.
func BenchmarkMountMemory(b *testing.B) {
	entries := envInt(b, "ECFS_BENCH_ENTRIES", 1000000)
	const perDir = 1000
	fc := newFSClusterWith(b, 1, 6, nil, nil)
	c, err := cluster.NewClient(fc.g.addrs(), fc.g.secret)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	start := time.Now()
	top := mustApply(b, c, ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
		Parent: namespace.RootIno, Name: "tree", Mode: 0o755}}}).Attr.Ino
	for d := 0; d*perDir < entries; d++ {
		dir := mustApply(b, c, ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
			Parent: top, Name: fmt.Sprintf("d%04d", d), Mode: 0o755}}}).Attr.Ino
		n := min(perDir, entries-d*perDir)
		for i := 0; i < n; i += 500 {
			var cmds []*metapb.Command
			for j := i; j < min(n, i+500); j++ {
				cmds = append(cmds, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
					Parent: dir, Name: fmt.Sprintf("f%04d", j), Type: uint32(namespace.TypeFile), Mode: 0o644, Excl: true}}})
			}
			r := mustApply(b, c, ctx, &metapb.Command{Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds, ErrorsOnly: true}}})
			for _, ir := range r.Results {
				if ir.Errno != 0 {
					b.Fatalf("create in d%04d: errno %d", d, ir.Errno)
				}
			}
		}
	}
	b.Logf("%d files made through the metadata service in %v", entries, time.Since(start).Round(time.Millisecond))

	ops := freeAddr(b, "127.0.0.41")
	m := fc.mount("--http-addr", ops, "--pprof") // default --buffer-size (mountBufferSize)
	pid := m.p.cmd.Process.Pid
	// The reference: go-fuse's loopback over the same tree on the local
	// disk (made there directly), walked the same way.
	lo, orig, loPid := startLoopback(b)
	start = time.Now()
	for d := 0; d*perDir < entries; d++ {
		dir := filepath.Join(orig, "tree", fmt.Sprintf("d%04d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < min(perDir, entries-d*perDir); j++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%04d", j)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
	b.Logf("the same tree made on the local disk in %v", time.Since(start).Round(time.Millisecond))
	walkAll := func(root string) (int, time.Duration) {
		t0 := time.Now()
		n := walk(b, root)
		return n, time.Since(t0)
	}
	b.ResetTimer()
	for range b.N {
		loRSS := startRSSSampler(b, loPid, 100*time.Millisecond)
		dropCaches(b)
		loN, loCold := walkAll(filepath.Join(lo, "tree"))
		_, loWarm := walkAll(filepath.Join(lo, "tree"))
		loRSS.stop()
		loTop, _ := loRSS.max()
		rss := startRSSSampler(b, pid, 100*time.Millisecond)
		rss.phase("cold walk")
		dropCaches(b)
		n, cold := walkAll(filepath.Join(m.dir, "tree"))
		rss.phase("warm walk")
		_, warm := walkAll(filepath.Join(m.dir, "tree"))
		rss.phase("")
		rss.stop()
		if loN != n {
			b.Fatalf("the loopback's walk found %d names, ecfs's %d", loN, n)
		}
		if want := 1 + (entries+perDir-1)/perDir + entries; n != want {
			b.Fatalf("walk found %d names, want %d", n, want)
		}
		top, phases := rss.max()
		now := procStatusKiB(pid, "VmRSS")
		limit := int64(mountBufferSize>>20) + 100
		verdict := "within"
		if top/1024 > limit {
			verdict = "OVER"
		}
		b.Logf("summary: %d names; ecfs: cold walk %v (%.0f names/s, %.2fx loopback), warm walk %v (%.0f names/s, %.2fx loopback); loopback: cold %v, warm %v",
			n, cold.Round(time.Millisecond), float64(n)/cold.Seconds(), loCold.Seconds()/cold.Seconds(),
			warm.Round(time.Millisecond), float64(n)/warm.Seconds(), loWarm.Seconds()/warm.Seconds(),
			loCold.Round(time.Millisecond), loWarm.Round(time.Millisecond))
		b.Logf("memory: ecfs mount RSS max %d MiB (cold walk %d, warm walk %d), %d MiB after, %.2fx the loopback's %d MiB; bound %d MiB (--buffer-size + 100): %s",
			top/1024, phases[len(phases)-2].kib/1024, phases[len(phases)-1].kib/1024, now/1024, float64(top)/float64(loTop), loTop/1024, limit, verdict)
		if path := os.Getenv("ECFS_BENCH_HEAP"); path != "" {
			// The mount's heap profile after the walks, for go tool pprof.
			if err := saveURL("http://"+ops+"/debug/pprof/heap", path); err != nil {
				b.Logf("heap profile: %v", err)
			}
		}
		b.ReportMetric(float64(top)/1024, "MiB-max-RSS")
		b.ReportMetric(float64(n)/cold.Seconds(), "names/s-cold")
	}
}

func mustApply(b *testing.B, c *cluster.Client, ctx context.Context, cmd *metapb.Command) *metapb.Result {
	b.Helper()
	r, err := c.Apply(ctx, cmd)
	if err != nil {
		b.Fatal(err)
	}
	if r.Errno != 0 {
		b.Fatalf("%v: errno %d", cmd.Op, r.Errno)
	}
	return r
}

// saveURL writes what a GET of url answers to path.
func saveURL(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
