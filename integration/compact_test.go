package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// countShardFiles counts the shard files on every store's disk.
func countShardFiles(t *testing.T, c *testCluster) int {
	t.Helper()
	n := 0
	for _, s := range c.stores {
		root := filepath.Join(s.dataDir, "disk", "shards")
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".tmp") {
				n++
			}
			return nil
		})
	}
	return n
}

// TestCompactionKeepsBytesAndFreesSpace: a file written as 40 small appends,
// each fsync'd, is spread over 40 objects; once it is closed and idle the
// leader rewrites its block as one object, the old objects' shards are
// deleted after the delay, and both the writing mount (whose cached slices
// name deleted objects) and another mount read the same bytes.
func TestCompactionKeepsBytesAndFreesSpace(t *testing.T) {
	fc := newFSClusterWith(t, 1, 6,
		[]string{"--suspect-after", "1s", "--down-after", "3s", "--gc-interval", "300ms",
			"--compact-interval", "200ms", "--compact-idle", "1s", "--compact-gc-delay", "2s"},
		[]string{"--heartbeat", "250ms"})
	w, r := fc.mount(), fc.mount()
	dir := filepath.Join(w.dir, "d") // w makes it, so w holds its lease and writes behind
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for range 40 {
		b := make([]byte, 64<<10)
		rand.Read(b)
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want)
	read := func(m *mountNode) error {
		got, err := os.ReadFile(filepath.Join(m.dir, "d", "log"))
		if err != nil {
			return err
		}
		if sha256.Sum256(got) != sum {
			return fmt.Errorf("%s: %d bytes, sha256 differs", m.dir, len(got))
		}
		return nil
	}
	// Both mounts read it (and cache its slices) before the compaction.
	for _, m := range []*mountNode{w, r} {
		if err := read(m); err != nil {
			t.Fatal(err)
		}
	}
	before := fc.g.status().Objects.Total
	if before < 16 {
		t.Fatalf("the appends made %d objects; the test needs a fragmented block", before)
	}
	shardsBefore := countShardFiles(t, fc.c)
	waitFor(t, "the block compacted and the old objects' shards deleted", 60*time.Second, func() error {
		st := fc.g.status()
		if n := countShardFiles(t, fc.c); st.Objects.Total != 1 || st.GC.Pending != 0 || n != 6 {
			return fmt.Errorf("%d objects, gc pending %d, %d shard files (%d before)", st.Objects.Total, st.GC.Pending, n, shardsBefore)
		}
		return nil
	})
	for _, m := range []*mountNode{w, r} {
		sh(t, "/", "echo 3 > /proc/sys/vm/drop_caches")
		if err := read(m); err != nil {
			t.Fatalf("after the compaction: %v\n%s", err, m.p.logs.String())
		}
	}
	if logs := w.p.logs.String() + r.p.logs.String(); bytes.Contains([]byte(logs), []byte("read failed")) {
		t.Fatalf("a mount logged a failed read:\n%s", logs)
	}
}
