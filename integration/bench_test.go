package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// dropCaches empties the page cache so reads come from the disk; it needs
// root. Without it the read figures measure memory, and say so.
func dropCaches(b *testing.B) bool {
	if err := runCmd("sync"); err != nil {
		b.Logf("sync: %v", err)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		b.Logf("cannot drop caches (%v): read figures include the page cache", err)
		return false
	}
	return true
}

// BenchmarkObjectsVsDisk writes and reads the same bytes as 4 MiB objects
// (4+2) through 6 store daemons on loopback and as one file on the local disk
// the stores use, in the same run, and reports both and their ratios.
func BenchmarkObjectsVsDisk(b *testing.B) {
	const objSize = 4 << 20
	total := int64(512 << 20)
	if v := os.Getenv("ECFS_BENCH_BYTES"); v != "" {
		fmt.Sscan(v, &total)
	}
	n := int(total / objSize)
	readers := 4
	if v := os.Getenv("ECFS_BENCH_READERS"); v != "" {
		fmt.Sscan(v, &readers)
	}
	c := newStores(b, 6)
	scheme, _ := codec.ParseScheme("4+2")
	objs, err := store.NewObjects(store.ObjectsConfig{Client: c.client})
	if err != nil {
		b.Fatal(err)
	}
	data := objData(7, objSize)
	addrs := c.addrs()
	mkObj := func(j int) store.Object {
		place := make([]string, 6)
		for i := range place {
			place[i] = addrs[(i+j)%6]
		}
		return store.Object{ID: store.ObjectID(1 + j), Scheme: scheme, Length: objSize, Placement: place}
	}
	for range b.N {
		// Local disk: one file written sequentially and fsynced, on the
		// file system that holds the stores' data.
		path := filepath.Join(c.dir, "reference")
		start := time.Now()
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		diskW := time.Since(start)

		start = time.Now()
		var failed atomic.Int64
		parallel(n, 8, func(j int) {
			if _, err := objs.Write(context.Background(), mkObj(j), data, 0); err != nil {
				failed.Add(1)
				b.Error(err)
			}
		})
		objW := time.Since(start)
		if failed.Load() > 0 {
			b.FailNow()
		}

		cold := dropCaches(b)
		start = time.Now()
		f, err = os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, objSize)
		for range n {
			if _, err := f.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
		diskR := time.Since(start)

		// The layout a store must read: the same bytes as 1 MiB files (a 4+2
		// shard of a 4 MiB block), 4 readers at a time.
		files := filepath.Join(c.dir, "files")
		if err := os.MkdirAll(files, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := range 4 * n {
			if err := os.WriteFile(filepath.Join(files, fmt.Sprint(j)), data[:objSize/4], 0o644); err != nil {
				b.Fatal(err)
			}
		}
		dropCaches(b)
		start = time.Now()
		parallel(4*n, 4, func(j int) {
			if _, err := os.ReadFile(filepath.Join(files, fmt.Sprint(j))); err != nil {
				b.Error(err)
			}
		})
		filesR := time.Since(start)
		os.RemoveAll(files)

		dropCaches(b)
		if dir := os.Getenv("ECFS_BENCH_PROFILE"); dir != "" {
			go profileCPU(b, c.stores[0].http, filepath.Join(dir, "store-read.pprof"))
		}
		start = time.Now()
		parallel(n, readers, func(j int) {
			p := make([]byte, objSize)
			if _, _, err := objs.ReadAt(context.Background(), mkObj(j), p, 0); err != nil {
				b.Error(err)
			}
		})
		objR := time.Since(start)
		os.Remove(path)

		mbs := func(d time.Duration) float64 { return float64(total) / d.Seconds() / 1e6 }
		b.ReportMetric(mbs(diskW), "disk-write-MB/s")
		b.ReportMetric(mbs(objW), "object-write-MB/s")
		b.ReportMetric(mbs(objW)/mbs(diskW), "write-ratio")
		b.ReportMetric(mbs(diskR), "disk-read-MB/s")
		b.ReportMetric(mbs(objR), "object-read-MB/s")
		b.ReportMetric(mbs(objR)/mbs(diskR), "read-ratio")
		b.ReportMetric(mbs(filesR), "1MiB-files-read-MB/s")
		b.ReportMetric(mbs(objR)/mbs(filesR), "read-ratio-vs-files")
		b.Logf("%d MiB: disk write %.0f MB/s, object write %.0f MB/s (%.0f%%); disk read %.0f MB/s, object read %.0f MB/s (%.0f%%); 1 MiB files read %.0f MB/s (object read %.0f%% of it); caches dropped: %v",
			total>>20, mbs(diskW), mbs(objW), 100*mbs(objW)/mbs(diskW), mbs(diskR), mbs(objR), 100*mbs(objR)/mbs(diskR), mbs(filesR), 100*mbs(objR)/mbs(filesR), cold)
		for j := range n {
			_ = objs.Delete(context.Background(), mkObj(j))
		}
	}
}

// profileCPU saves a 2 s CPU profile of a daemon (started with
// --pprof), for finding where a benchmark's time goes.
func profileCPU(b *testing.B, httpAddr, path string) {
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/profile?seconds=2")
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}
