package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPackedFilesReadAndCollected: rsync -a of small files (over the
// inline threshold, under 1 MiB) into one mount stores them a few to an
// object; another mount reads every byte (sha256); removing every other
// file on that mount keeps the rest readable by a third, cold mount (the
// objects they share with removed files stay), and removing them all
// deletes every object and every shard file on the stores.
func TestPackedFilesReadAndCollected(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	m1, m2 := fc.mount(), fc.mount()

	src := filepath.Join(t.TempDir(), "src")
	r := rand.New(rand.NewPCG(7, 8))
	var names []string
	for i := range 240 {
		name := filepath.Join(fmt.Sprint("d", i%4), fmt.Sprintf("f%03d", i))
		b := make([]byte, 17<<10+r.IntN(300<<10))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	// Directory times from another second than the copy's: rsync leaves
	// a directory's mtime alone if it is within the same second.
	sh(t, src, "touch -d '2001-02-03 04:05:06.123456789' d0 d1 d2 d3")
	sh(t, ".", fmt.Sprintf("rsync -a %s/ %s/t/", src, m1.dir))
	compareTrees(t, src, filepath.Join(m2.dir, "t"), true)

	// 240 files of 17-317 KiB (about 40 MiB): a dozen or so 4 MiB packs,
	// not an object per file.
	st := fc.g.status()
	if st.Objects.Total == 0 || st.Objects.Total > 40 {
		t.Fatalf("%d objects hold 240 small files copied by rsync, want a few packs (1-40)", st.Objects.Total)
	}
	t.Logf("240 files in %d objects", st.Objects.Total)

	for i, name := range names {
		if i%2 == 0 {
			for _, dir := range []string{src, filepath.Join(m2.dir, "t")} {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitFor(t, "GC after removing half the files", 30*time.Second, func() error {
		if st := fc.g.status(); st.GC.Pending != 0 {
			return fmt.Errorf("%d objects wait for GC", st.GC.Pending)
		}
		return nil
	})
	m3 := fc.mount()
	compareTrees(t, src, filepath.Join(m3.dir, "t"), false) // the directories' mtimes are the removals'

	sh(t, ".", "rm -rf "+filepath.Join(m1.dir, "t"))
	waitFor(t, "every object and shard deleted", 60*time.Second, func() error {
		st := fc.g.status()
		if n := fc.shardFiles(); st.Objects.Total != 0 || st.GC.Pending != 0 || n != 0 {
			return fmt.Errorf("%d objects, %d waiting for GC, %d shard files", st.Objects.Total, st.GC.Pending, n)
		}
		return nil
	})
}
