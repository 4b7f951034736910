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
