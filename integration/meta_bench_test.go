package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// BenchmarkMeta measures a 3-member meta group on loopback: creates,
// getattrs and lookups per second with 1, 16 and 64 clients, and their
// latency percentiles.
func BenchmarkMeta(b *testing.B) {
	g := newMetaGroup(b, 3)
	for _, clients := range []int{1, 16, 64} {
		cs := make([]*cluster.Client, clients)
		for i := range cs {
			cs[i] = g.client()
			defer cs[i].Close()
		}
		ctx := context.Background()
		r, err := cs[0].Apply(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{
			Parent: namespace.RootIno, Name: fmt.Sprint("bench", clients), Mode: 0o755}}})
		if err != nil || r.Errno != 0 {
			b.Fatal(err, r)
		}
		dir := r.Attr.Ino
		const perClientOps = 400
		run := func(op string, f func(c *cluster.Client, i, j int) error) {
			lat := make([][]time.Duration, clients)
			start := time.Now()
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := perClientOps
					if clients == 1 {
						n = 2000
					}
					for j := range n {
						t0 := time.Now()
						if err := f(cs[i], i, j); err != nil {
							b.Error(err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			p := func(q float64) time.Duration { return all[int(q*float64(len(all)-1))] }
			b.ReportMetric(float64(len(all))/el.Seconds(), fmt.Sprintf("%s/s-%dc", op, clients))
			b.Logf("%-8s %2d clients: %7.0f ops/s  p50 %v  p99 %v", op, clients, float64(len(all))/el.Seconds(),
				p(0.5).Round(time.Microsecond), p(0.99).Round(time.Microsecond))
		}
		if dir := os.Getenv("ECFS_BENCH_PROFILE"); dir != "" && clients == 64 {
			go profileCPU(b, g.nodes[g.leader()].http, filepath.Join(dir, "meta-create.pprof"))
		}
		run("create", func(c *cluster.Client, i, j int) error {
			r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
				Parent: dir, Name: fmt.Sprintf("f%d-%d", i, j), Type: uint32(namespace.TypeFile), Mode: 0o644, Excl: true}}})
			if err == nil && r.Errno != 0 {
				err = fmt.Errorf("create: errno %d", r.Errno)
			}
			return err
		})
		sessions := make([]uint64, clients)
		files := make([]uint64, clients)
		for i, c := range cs {
			id, _, err := c.OpenSession(ctx, "bench", time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			sessions[i] = id
			r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
				Parent: dir, Name: fmt.Sprint("data", i), Type: uint32(namespace.TypeFile), Mode: 0o644}}})
			if err != nil || r.Errno != 0 {
				b.Fatal(err, r)
			}
			files[i] = r.Attr.Ino
		}
		run("commit", func(c *cluster.Client, i, j int) error {
			obj := uint64(i)<<32 | uint64(j)
			r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
				Session: sessions[i], Ino: files[i], NewSize: uint64(j+1) << 20,
				Writes:  []*metapb.BlockWrite{{Block: uint64(j) / 4, Off: uint32(j%4) << 20, Len: 1 << 20, Object: obj}},
				Objects: []*metapb.ObjectRecord{{Id: obj, Length: 1 << 20, Stores: []string{"a", "b", "c", "d", "e", "f"}}},
			}}})
			if err == nil && r.Errno != 0 {
				err = fmt.Errorf("commit: errno %d", r.Errno)
			}
			return err
		})
		run("lookup", func(c *cluster.Client, i, j int) error {
			r, err := c.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: dir, Name: fmt.Sprintf("f%d-%d", i, j%perClientOps)}}})
			if err == nil && r.Errno != 0 {
				err = fmt.Errorf("lookup: errno %d", r.Errno)
			}
			return err
		})
		run("getattr", func(c *cluster.Client, i, j int) error {
			_, err := c.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: dir}}})
			return err
		})
	}
}
