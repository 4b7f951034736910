package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// counters reads the counter (or gauge) name from the /metrics of the
// process at httpAddr: its value by label set (the text between the
// braces; "" for a metric without labels).
func counters(t *testing.T, httpAddr, name string) map[string]float64 {
	t.Helper()
	out := scrape(t, httpAddr, name)
	if len(out) == 0 {
		t.Fatalf("%s exports no %s", httpAddr, name)
	}
	return out
}

// scrape is counters for a metric that may not be exported yet (a
// histogram or counter vector before its first observation): none is an
// empty map.
func scrape(t *testing.T, httpAddr, name string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		labels, val := "", ""
		if rest, ok := strings.CutPrefix(line, name+"{"); ok {
			if labels, val, ok = strings.Cut(rest, "} "); !ok {
				t.Fatalf("metric line %q", line)
			}
		} else if val, ok = strings.CutPrefix(line, name+" "); !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[labels] = v
	}
	return out
}

// namespaceCalls sums a mount's ecfs_mount_meta_requests_total over every
// kind but the long poll for revocations and the session's renewals: the
// calls it made to answer or change the namespace.
func namespaceCalls(t *testing.T, httpAddr string) (int64, map[string]int64) {
	t.Helper()
	by := map[string]int64{}
	var sum int64
	for labels, v := range counters(t, httpAddr, "ecfs_mount_meta_requests_total") {
		op := strings.TrimSuffix(strings.TrimPrefix(labels, `op="`), `"`)
		by[op] = int64(v)
		if op != "read_revokes" && op != "renew" {
			sum += int64(v)
		}
	}
	return sum, by
}

// walk stats every name under root (as ls -lR does) and returns how many.
func walk(t testing.TB, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReadLeasesAcrossMounts: a tree one mount walks is served again with
// no call to the metadata service (counted by the mount's metric), while
// every change another mount makes in it (mode, new file, unlink, rename,
// data) is seen by the first as soon as the change returned; and a mount
// killed while it holds read leases holds others' changes up only until
// its session expires.
func TestReadLeasesAcrossMounts(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	metrics := freeAddr(t, "127.0.0.41")
	m1 := fc.mount("--http-addr", metrics)
	m2 := fc.mount()
	src := t.TempDir()
	for d := range 5 {
		for f := range 20 {
			p := filepath.Join(src, fmt.Sprintf("d%d", d), fmt.Sprintf("f%d", f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, bytes.Repeat([]byte{byte(d), byte(f)}, 100*f+1), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	sh(t, m2.dir, "cp -a "+src+" t")
	tree1 := filepath.Join(m1.dir, "t")
	tree2 := filepath.Join(m2.dir, "t")

	// The first walks revoke the writer's leases and take read leases;
	// then a walk costs nothing.
	var calls int64
	for i := 0; ; i++ {
		before, _ := namespaceCalls(t, metrics)
		if n := walk(t, tree1); n != 1+5+100 {
			t.Fatalf("walk %d found %d names, want 106", i, n)
		}
		after, by := namespaceCalls(t, metrics)
		calls = after - before
		t.Logf("walk %d: %d calls to the metadata service (%v)", i, calls, by)
		if calls == 0 {
			break
		}
		if i == 3 {
			t.Fatalf("the 4th walk of an unchanged tree still made %d calls to the metadata service", calls)
		}
	}
	compareTrees(t, src, tree1, true)

	// Each change on m2 is seen on m1 once it returned. Before each, m1
	// walks the directory again, so that it holds the read lease and its
	// kernel the names.
	holdOn := func(metrics, tree, dir string) {
		t.Helper()
		waitFor(t, "a mount to serve "+dir+" without the service", 10*time.Second, func() error {
			before, _ := namespaceCalls(t, metrics)
			walk(t, filepath.Join(tree, dir))
			if after, _ := namespaceCalls(t, metrics); after != before {
				return fmt.Errorf("%d calls", after-before)
			}
			return nil
		})
	}
	hold := func(dir string) { t.Helper(); holdOn(metrics, tree1, dir) }
	hold("d0")
	if err := os.Chmod(filepath.Join(tree2, "d0", "f0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(tree1, "d0", "f0")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("m1 after m2's chmod: %v %v", st.Mode(), err)
	}

	hold("d0")
	data := []byte("a new file, written on m2\n")
	if err := os.WriteFile(filepath.Join(tree2, "d0", "new"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(tree1, "d0", "new")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("m1 reads the file m2 just wrote: %q, %v", got, err)
	}
	names, err := os.ReadDir(filepath.Join(tree1, "d0"))
	if err != nil || len(names) != 21 {
		t.Fatalf("m1 lists %d names in d0 after m2's create (%v), want 21", len(names), err)
	}

	hold("d1")
	if err := os.Remove(filepath.Join(tree2, "d1", "f1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(tree1, "d1", "f1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("m1 after m2's unlink: %v", err)
	}

	hold("d2")
	if err := os.Rename(filepath.Join(tree2, "d2", "f2"), filepath.Join(tree2, "d2", "g2")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(tree1, "d2", "f2")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("m1 finds f2 after m2 renamed it: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(tree1, "d2", "g2")); err != nil {
		t.Fatalf("m1 after m2's rename: %v", err)
	}

	hold("d3")
	f, err := os.OpenFile(filepath.Join(tree2, "d3", "f3"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(tree2, "d3", "f3"))
	if st, err := os.Lstat(filepath.Join(tree1, "d3", "f3")); err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("m1's size of f3 after m2 appended: %v, %v; want %d", st.Size(), err, len(want))
	}
	if got, err := os.ReadFile(filepath.Join(tree1, "d3", "f3")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("m1 reads f3 after m2 appended: %d bytes, %v; want %d", len(got), err, len(want))
	}

	// A mount killed while it holds read leases: m2's change waits for its
	// session to expire (--session-ttl 5s), not longer.
	metrics3 := freeAddr(t, "127.0.0.42")
	m3 := fc.mount("--http-addr", metrics3)
	holdOn(metrics3, filepath.Join(m3.dir, "t"), "d4") // it holds d4's read lease
	m3.p.kill()
	start := time.Now()
	if err := os.Chmod(filepath.Join(tree2, "d4", "f4"), 0o600); err != nil {
		t.Fatalf("chmod while a dead mount held the directory: %v", err)
	}
	took := time.Since(start)
	t.Logf("a change waited %v for the killed mount's read lease (session TTL 5 s)", took)
	if took > 15*time.Second {
		t.Fatalf("a change waited %v for a killed mount; its session TTL is 5 s", took)
	}
	if took < 2*time.Second {
		// Its session lives 5 s after its last renewal, sent at most
		// 1.7 s before the kill: the change had to wait for it.
		t.Fatalf("a change waited only %v for a killed mount's read lease (session TTL 5 s): the lease held nothing up", took)
	}
	if st, err := os.Lstat(filepath.Join(tree1, "d4", "f4")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("m1 after m2's chmod: %v %v", st.Mode(), err)
	}
	if isMounted(m3.dir) {
		if err := syscall.Unmount(m3.dir, syscall.MNT_DETACH); err != nil {
			t.Fatalf("unmounting the killed mount: %v", err)
		}
	}
}

// TestKernelKeepsReadLeasedTree: what a mount answered from read leases'
// copies the kernel keeps past --attr-timeout (0 here: outside read leases
// it asks every time), so that a tree walked again costs the mount no
// request at all; and it is told to drop it whenever a lease ends, so that
// another mount's change is seen at once, after a change of the mount's
// own in the directory too (which gives its lease up).
func TestKernelKeepsReadLeasedTree(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	metrics := freeAddr(t, "127.0.0.43")
	m1 := fc.mount("--http-addr", metrics, "--attr-timeout", "0s")
	m2 := fc.mount()
	tree1, tree2 := filepath.Join(m1.dir, "t"), filepath.Join(m2.dir, "t")
	for d := range 3 {
		for f := range 10 {
			p := filepath.Join(tree2, fmt.Sprintf("d%d", d), fmt.Sprintf("f%d", f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	asked := func() [2]int64 {
		return [2]int64{fuseRequests(t, metrics, "lookup"), fuseRequests(t, metrics, "getattr")}
	}
	// kernelServes walks dir on m1 until a walk costs no lookup (the
	// first walks take the read leases), and at most a getattr per
	// directory it lists: the kernel forgets a directory's atime when it
	// lists it (fuse_invalidate_atime), and asks for it at the next stat.
	kernelServes := func(dir string, names, dirs int) {
		t.Helper()
		waitFor(t, "the kernel to serve "+dir+" alone", 20*time.Second, func() error {
			if _, err := os.ReadDir(m1.dir); err != nil { // the mount's root too
				return err
			}
			before := asked()
			if n := walk(t, dir); n != names {
				t.Fatalf("walk of %s found %d names, want %d", dir, n, names)
			}
			if after := asked(); after[0] != before[0] || after[1]-before[1] > int64(dirs) {
				return fmt.Errorf("%d lookups and %d getattrs", after[0]-before[0], after[1]-before[1])
			}
			return nil
		})
	}
	kernelServes(tree1, 1+3+30, 4)

	// Another mount's changes are seen at once.
	if err := os.Chmod(filepath.Join(tree2, "d0", "f0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(tree1, "d0", "f0")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("m1 after m2's chmod: %v %v", st.Mode(), err)
	}
	kernelServes(filepath.Join(tree1, "d1"), 11, 1)
	if err := os.Rename(filepath.Join(tree2, "d1", "f1"), filepath.Join(tree2, "d1", "g1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(tree1, "d1", "f1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("m1 finds f1 after m2 renamed it: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(tree1, "d1", "g1")); err != nil {
		t.Fatalf("m1 after m2's rename: %v", err)
	}

	// A change of m1's own in a directory it read-leases gives the lease
	// up: what the kernel kept from it is dropped all the same.
	kernelServes(filepath.Join(tree1, "d2"), 11, 1)
	if err := os.WriteFile(filepath.Join(tree1, "d2", "mine"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tree2, "d2", "f2"), filepath.Join(tree2, "d2", "g2")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(tree1, "d2", "f2")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("m1 finds f2 after its own create and m2's rename: %v", err)
	}
	if err := os.Chmod(filepath.Join(tree2, "d2", "f3"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(tree1, "d2", "f3")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("m1 after its own create and m2's chmod: %v %v", st.Mode(), err)
	}
}

// TestWalkAheadSeesAnotherMountsChanges: a mount reading through a tree
// another mount wrote takes the read leases of the directories ahead of
// its walk, several in one call (read_readdirs in its metric), and
// prefetches the data locations of the files ahead, across directories;
// files the other mount then changes, renames, removes and adds in the
// part it has not read yet are read as they are now, once each change
// returned.
func TestWalkAheadSeesAnotherMountsChanges(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	metrics := freeAddr(t, "127.0.0.44")
	m1 := fc.mount("--http-addr", metrics)
	m2 := fc.mount()
	src := t.TempDir()
	content := func(a, b, f int, gen string) []byte {
		line := fmt.Sprintf("%s a%d/b%d/f%d\n", gen, a, b, f)
		return bytes.Repeat([]byte(line), 1+(a*31+b*7+f*3)%40*(1+f%2*20))
	}
	for a := range 4 {
		for b := range 4 {
			for f := range 8 {
				p := filepath.Join(src, fmt.Sprintf("a%d/b%d/f%d", a, b, f))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, content(a, b, f, "one"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	sh(t, m2.dir, "cp -a "+src+" t")
	tree1, tree2 := filepath.Join(m1.dir, "t"), filepath.Join(m2.dir, "t")
	readAll := func(root string, under ...string) {
		t.Helper()
		for _, u := range under {
			err := filepath.WalkDir(filepath.Join(root, u), func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(root, p)
				got, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if want, err := os.ReadFile(filepath.Join(src, rel)); err != nil || !bytes.Equal(got, want) {
					return fmt.Errorf("%s: read %d bytes through the mount, not the %d expected (%v)", rel, len(got), len(want), err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// As diff -r does: the top's listing, then a0 and a1.
	if _, err := os.ReadDir(tree1); err != nil {
		t.Fatal(err)
	}
	readAll(tree1, "a0", "a1")
	if _, by := namespaceCalls(t, metrics); by["read_readdirs"] == 0 {
		t.Fatalf("the walk listed no directories ahead of it (%v)", by)
	}
	// The half it has not read yet is read-leased ahead of it: all 21
	// directories.
	waitFor(t, "the walk's next directories read-leased", 10*time.Second, func() error {
		if n := counters(t, metrics, "ecfs_mount_leases")[`kind="read"`]; n < 21 {
			return fmt.Errorf("%v read leases", n)
		}
		return nil
	})
	// m2 changes the half m1 has not read, and so does the reference.
	change := func(rel string, data []byte) {
		t.Helper()
		for _, root := range []string{tree2, src} {
			if err := os.WriteFile(filepath.Join(root, rel), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for a := 2; a < 4; a++ {
		for b := range 4 {
			for f := 0; f < 8; f += 3 {
				change(fmt.Sprintf("a%d/b%d/f%d", a, b, f), content(a, b, f+1, "two"))
			}
		}
	}
	change("a2/b1/new", []byte("added by the other mount\n"))
	for _, root := range []string{tree2, src} {
		if err := os.Rename(filepath.Join(root, "a3/b0/f1"), filepath.Join(root, "a3/b0/g1")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(root, "a2/b3/f2")); err != nil {
			t.Fatal(err)
		}
	}
	readAll(tree1, "a2", "a3")
	compareTrees(t, src, tree1, false)
}
