package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMountWriteBehindCrash: files created in a directory the mount made
// are written behind; after an fsync of the directory, SIGKILL of the
// mount loses none of them, and another mount reads every one once the
// dead mount's session (and its lease) expires.
func TestMountWriteBehindCrash(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	a, b := fc.mount(), fc.mount()
	dir := filepath.Join(a.dir, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	content := func(i int) []byte {
		if i%50 == 0 {
			return bytes.Repeat([]byte(fmt.Sprint(i)), 300_000) // past the inline threshold
		}
		return []byte(fmt.Sprintf("file %d\n", i))
	}
	const files = 300
	for i := range files {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint("f", i)), content(i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil { // fsyncdir: the journal is applied
		t.Fatalf("fsync of the directory: %v", err)
	}
	d.Close()
	a.p.kill()
	<-a.p.exited

	start := time.Now()
	ents, err := os.ReadDir(filepath.Join(b.dir, "d"))
	if err != nil {
		t.Fatalf("the other mount lists the directory: %v", err)
	}
	t.Logf("the other mount listed the dead mount's directory after %v (its session TTL is 5 s)", time.Since(start).Round(time.Millisecond))
	if len(ents) != files {
		t.Fatalf("the other mount lists %d files, want %d", len(ents), files)
	}
	for i := range files {
		got, err := os.ReadFile(filepath.Join(b.dir, "d", fmt.Sprint("f", i)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content(i)) {
			t.Fatalf("f%d reads %d bytes, not the %d written", i, len(got), len(content(i)))
		}
	}
}

// TestDataWrittenBehindSeenByOtherMount: rsync -a of a tree (Go sources,
// and files from just past the inline threshold to several MiB) into a
// directory one mount made: the data of those files is written behind
// (close returns before it is stored). The other mount, reading right after
// rsync returns, sees every byte, mode and mtime; so does the first.
func TestDataWrittenBehindSeenByOtherMount(t *testing.T) {
	src := makeTree(t, 9)
	for i, size := range []int{16<<10 + 1, 40 << 10, 300 << 10, 1 << 20, 3<<20 + 5} {
		b := bytes.Repeat([]byte(fmt.Sprintf("%07d ", i)), size/8+1)[:size]
		if err := os.WriteFile(filepath.Join(src, "extra", fmt.Sprint("medium", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fc := newFSCluster(t, 1, 6)
	a, b := fc.mount(), fc.mount()
	if err := os.Mkdir(filepath.Join(a.dir, "copy"), 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, ".", "rsync -a "+src+"/ "+filepath.Join(a.dir, "copy")+"/")
	n := compareTrees(t, src, filepath.Join(b.dir, "copy"), true)
	compareTrees(t, src, filepath.Join(a.dir, "copy"), true)
	t.Logf("%d paths equal through both mounts", n)
}
