package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fsCluster is a whole filesystem: meta members, store daemons and mounts.
type fsCluster struct {
	t      testing.TB
	g      *metaGroup
	c      *testCluster
	mounts []*mountNode
}

// mountNode is one `ecfs mount` process.
type mountNode struct {
	dir   string
	extra []string
	p     *proc
}

// requireFUSE fails (never skips) when FUSE cannot be used: CI must run
// these tests.
func requireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE is required for this test and /dev/fuse is missing: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Fatalf("not root and no fusermount3: install fuse3")
		}
	}
}

// newFSCluster starts metas meta members, stores store daemons (fast
// health timeouts) and no mount.
func newFSCluster(t testing.TB, metas, stores int) *fsCluster {
	t.Helper()
	return newFSClusterWith(t, metas, stores,
		[]string{"--suspect-after", "1s", "--down-after", "3s", "--heal-interval", "500ms", "--gc-interval", "500ms",
			"--orphan-interval", "5s", "--orphan-grace", "30s"},
		[]string{"--heartbeat", "250ms"})
}

// newFSClusterWith starts a cluster with these extra meta and store flags
// (none: the production defaults).
func newFSClusterWith(t testing.TB, metas, stores int, metaFlags, storeFlags []string) *fsCluster {
	t.Helper()
	requireFUSE(t)
	g := newMetaGroup(t, metas, metaFlags...)
	c := newStoresWith(t, t.TempDir(), g.secretFile, g.secret, stores,
		append([]string{"--meta", strings.Join(g.addrs(), ",")}, storeFlags...)...)
	waitStoresUp(t, g, stores)
	return &fsCluster{t: t, g: g, c: c}
}

// mount starts a mount on a new directory and waits until it serves.
func (fc *fsCluster) mount(extra ...string) *mountNode {
	fc.t.Helper()
	m := &mountNode{dir: filepath.Join(fc.t.TempDir(), "mnt"), extra: extra}
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		fc.t.Fatal(err)
	}
	fc.start(m)
	fc.mounts = append(fc.mounts, m)
	return m
}

// start (re)starts mount m and waits until its mount point is live.
func (fc *fsCluster) start(m *mountNode) {
	fc.t.Helper()
	args := append([]string{"mount", "--meta", strings.Join(fc.g.addrs(), ","), "--secret-file", fc.g.secretFile,
		"--log-level", "warn", "--session-ttl", "5s"}, append(tlsArgsOf(fc.g.extra), m.extra...)...)
	ready := newReadyNotifier(fc.t)
	m.p = startProcEnv(fc.t, ready.env(), append(args, m.dir)...)
	fc.t.Cleanup(func() { m.stop(fc.t) }) // runs before startProc's SIGKILL
	waitFor(fc.t, "mount "+m.dir, 30*time.Second, func() error {
		if !m.p.running() {
			return fmt.Errorf("exited: %v\n%s", m.p.err, m.p.logs.String())
		}
		return ready.check()
	})
}

// readyNotifier receives a daemon's systemd notifications (NOTIFY_SOCKET).
// A mount is ready once it says READY=1: the mount point is in the table
// before that, while go-fuse still opens a file in it (its poll probe), and
// an unmount then would find the mount point busy.
type readyNotifier struct {
	path  string
	conn  *net.UnixConn
	ready chan struct{}
}

func newReadyNotifier(t testing.TB) *readyNotifier {
	t.Helper()
	dir, err := os.MkdirTemp("", "ecfs-notify") // short: socket paths hold 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	n := &readyNotifier{path: filepath.Join(dir, "notify"), ready: make(chan struct{})}
	n.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.conn.Close(); os.RemoveAll(dir) })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				if line == "READY=1" {
					close(n.ready)
					return
				}
			}
		}
	}()
	return n
}

func (n *readyNotifier) env() []string { return []string{"NOTIFY_SOCKET=" + n.path} }

// check is nil once READY=1 came.
func (n *readyNotifier) check() error {
	select {
	case <-n.ready:
		return nil
	default:
		return fmt.Errorf("no READY=1 yet")
	}
}

// stop unmounts with SIGTERM (flush, unmount, exit 0), then makes sure:
// SIGKILL and a lazy unmount if it did not go.
func (m *mountNode) stop(t testing.TB) {
	if m.p == nil {
		return
	}
	if m.p.running() {
		_ = m.p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.p.exited:
		case <-time.After(20 * time.Second):
			t.Errorf("mount %s did not exit 20 s after SIGTERM", m.dir)
			m.p.kill()
		}
	}
	if isMounted(m.dir) {
		_ = syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
}

// isMounted reports whether dir is a mount point in /proc/self/mountinfo.
func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// sh runs a shell command line and fails the test on error.
func sh(t testing.TB, dir, cmdline string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s (in %s): %v\n%s", cmdline, dir, err, out)
	}
	return string(out)
}

// entry is what compareTrees checks of one path.
type entry struct {
	mode   fs.FileMode
	size   int64
	mtime  int64
	sum    string
	target string
}

// scanTree describes every path under root (relative names).
func scanTree(t *testing.T, root string, mtimes bool) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entry{mode: info.Mode()}
		if mtimes && info.Mode()&fs.ModeSymlink == 0 {
			e.mtime = info.ModTime().UnixNano()
		}
		switch {
		case info.Mode().IsRegular():
			e.size = info.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			e.sum = hex.EncodeToString(h.Sum(nil))
		case info.Mode()&fs.ModeSymlink != 0:
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if rel == "." {
			e.mtime = 0 // the root itself is not copied by cp -a src dst/...
			e.mode = 0
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("scanning %s: %v", root, err)
	}
	return out
}

// compareTrees fails unless b holds exactly a's paths with the same types,
// modes, sizes, sha256 and symlink targets (and mtimes, if asked).
func compareTrees(t *testing.T, a, b string, mtimes bool) int {
	t.Helper()
	ea, eb := scanTree(t, a, mtimes), scanTree(t, b, mtimes)
	bad := 0
	for name, x := range ea {
		y, ok := eb[name]
		switch {
		case !ok:
			t.Errorf("%s: missing from %s", name, b)
		case x != y:
			t.Errorf("%s differs:\n  %s: %+v\n  %s: %+v", name, a, x, b, y)
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatalf("too many differences")
		}
	}
	for name := range eb {
		if _, ok := ea[name]; !ok {
			t.Errorf("%s: in %s only", name, b)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return len(ea)
}

// makeTree builds a source tree: part of the Go source tree (real files)
// and files that exercise blocks, holes, modes, symlinks and empties.
func makeTree(t *testing.T, bigMiB int) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	goroot := strings.TrimSpace(sh(t, ".", "go env GOROOT"))
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, root, fmt.Sprintf("cp -a %s/src/encoding %s/src/net/http . && mkdir -p extra/empty-dir extra/deep/a/b/c", goroot, goroot))
	r := rand.New(rand.NewPCG(1, 2))
	write := func(name string, size int, mode os.FileMode) {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(root, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("extra/big.bin", bigMiB<<20+12345, 0o644)
	write("extra/block.bin", 4<<20, 0o600)
	write("extra/deep/a/b/c/script.sh", 100, 0o755)
	write("extra/small-inline", 1000, 0o640)
	write("extra/empty", 0, 0o644)
	// A sparse file: data, a hole past several blocks, data at the end.
	sh(t, root, "dd if=/dev/urandom of=extra/sparse bs=1k count=10 status=none && dd if=/dev/urandom of=extra/sparse bs=1k count=3 seek=20000 conv=notrunc status=none")
	sh(t, root, "ln -s ../encoding/json extra/link-dir && ln -s big.bin extra/link-file && ln -s /nonexistent extra/dangling && ln extra/small-inline extra/hardlink")
	sh(t, root, "touch -d '2001-02-03 04:05:06.123456789' extra/small-inline extra/deep")
	return root
}
