package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fuseRequests is how many FUSE requests of kind op a mount answered, by
// its ecfs_mount_fuse_requests_total (every result).
func fuseRequests(t *testing.T, httpAddr, op string) int64 {
	t.Helper()
	var sum int64
	for labels, v := range counters(t, httpAddr, "ecfs_mount_fuse_requests_total") {
		if strings.HasPrefix(labels, `op="`+op+`",`) {
			sum += int64(v)
		}
	}
	return sum
}

// lstatMissing lstats p, which must not exist, n times, and returns how
// many lookups the mount at httpAddr answered meanwhile.
func lstatMissing(t *testing.T, httpAddr, p string, n int) int64 {
	t.Helper()
	before := fuseRequests(t, httpAddr, "lookup")
	for range n {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("lstat %s: %v, want no such file", p, err)
		}
	}
	return fuseRequests(t, httpAddr, "lookup") - before
}

// TestNegativeEntries: the kernel keeps a name the mount said is missing
// from a directory it write-leases (rsync and compilers look up many), as
// it keeps the names it was given; outside its write leases it keeps no
// missing name, so another mount's new file is seen at once. When another
// mount makes a name the kernel kept as missing, O_EXCL still fails and
// the name shows within the attribute timeout.
func TestNegativeEntries(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	metrics := freeAddr(t, "127.0.0.41")
	m1 := fc.mount("--http-addr", metrics, "--attr-timeout", "5s")
	m2 := fc.mount()

	// d is made by m1, which write-leases it.
	mine := filepath.Join(m1.dir, "d")
	if err := os.Mkdir(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mine, "f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := lstatMissing(t, metrics, filepath.Join(mine, "x"), 20); n > 2 {
		t.Fatalf("20 lstats of a missing name in a directory the mount write-leases made %d lookups, want 1", n)
	}
	// The attributes a setattr answered are kept as a getattr's are: rsync
	// writes a file, lstats it, sets its times and lstats it again.
	g := filepath.Join(mine, "g")
	if err := os.WriteFile(g, []byte("g"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(g); err != nil {
		t.Fatal(err)
	}
	before := fuseRequests(t, metrics, "getattr")
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(g, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if st, err := os.Lstat(g); err != nil || !st.ModTime().Equal(mtime) {
			t.Fatalf("lstat after utimes: %v, %v", st, err)
		}
	}
	if n := fuseRequests(t, metrics, "getattr") - before; n > 0 {
		t.Fatalf("utimes and 5 lstats made %d getattrs, want none", n)
	}

	// m2 makes that name: its change waits for m1's lease; m1's kernel may
	// still hold the name as missing, but an exclusive create there fails.
	if err := os.WriteFile(filepath.Join(m2.dir, "d", "x"), []byte("made on m2"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(filepath.Join(mine, "x"), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o644)
	if err == nil {
		syscall.Close(fd)
		t.Fatal("O_EXCL create on m1 of a name m2 made succeeded")
	}
	if !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("O_EXCL create on m1 of a name m2 made: %v, want EEXIST", err)
	}
	waitFor(t, "m1 to see the name m2 made", 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(mine, "x"))
		if err == nil && string(b) != "made on m2" {
			t.Fatalf("m1 reads %q, want %q", b, "made on m2")
		}
		return err
	})

	// e is made by m2: m1 holds no write lease of it, and its kernel
	// keeps no missing name there.
	if err := os.Mkdir(filepath.Join(m2.dir, "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m2.dir, "e", "f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(m1.dir, "e")
	if n := lstatMissing(t, metrics, filepath.Join(theirs, "y"), 20); n < 20 {
		t.Fatalf("20 lstats of a missing name in a directory another mount made made %d lookups, want 20", n)
	}
	if err := os.WriteFile(filepath.Join(m2.dir, "e", "y"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(theirs, "y")); err != nil {
		t.Fatalf("m1 does not see at once the name m2 made where m1 leases nothing: %v", err)
	}
}
