package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevRoundTrip: `ecfs dev` creates its mount point, starts the
// embedded cluster and mounts it; files written there survive Ctrl-C (exit
// 0, unmounted) and a second start from the same data dir.
func TestDevRoundTrip(t *testing.T) {
	requireFUSE(t)
	root := t.TempDir()
	data, mp := filepath.Join(root, "data"), filepath.Join(root, "mnt")
	src := makeTree(t, 6)
	start := func() *proc {
		p := startProc(t, "dev", "--data-dir", data, mp)
		t.Cleanup(func() {
			if isMounted(mp) {
				_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			}
		})
		waitFor(t, "ecfs dev to mount", 60*time.Second, func() error {
			if !p.running() {
				t.Fatalf("ecfs dev exited: %v\n%s", p.err, p.logs.String())
			}
			if !isMounted(mp) {
				return os.ErrNotExist
			}
			_, err := os.Stat(mp)
			return err
		})
		return p
	}
	stop := func(p *proc) {
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("ecfs dev did not exit 30 s after SIGINT:\n%s", p.logs.String())
		}
		if p.err != nil {
			t.Fatalf("ecfs dev exited with %v after SIGINT:\n%s", p.err, p.logs.String())
		}
		if isMounted(mp) {
			t.Fatal("still mounted after ecfs dev stopped")
		}
	}

	p := start()
	for _, want := range []string{"created the mount point", "secret file:", "ecfs status --meta"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("ecfs dev did not print %q:\n%s", want, p.logs.String())
		}
	}
	// The status command it prints works as shown.
	status := func(p *proc) string {
		t.Helper()
		for _, l := range strings.Split(p.logs.String(), "\n") {
			if cmd, ok := strings.CutPrefix(strings.TrimSpace(l), "status:"); ok {
				return strings.TrimSpace(cmd)
			}
		}
		t.Fatalf("no status command printed:\n%s", p.logs.String())
		return ""
	}
	first := status(p)
	if out := sh(t, ".", first); !strings.Contains(out, "leader:") || !strings.Contains(out, "up") {
		t.Errorf("%s printed:\n%s", first, out)
	}
	sh(t, ".", "cp -a "+src+" "+mp+"/tree")
	compareTrees(t, src, filepath.Join(mp, "tree"), true)
	// df counts the one disk the six stores share once: at most its size.
	var disk, fs syscall.Statfs_t
	if err := syscall.Statfs(data, &disk); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Statfs(mp, &fs); err != nil {
		t.Fatal(err)
	}
	if size := fs.Blocks * uint64(fs.Bsize); size > disk.Blocks*uint64(disk.Bsize) {
		t.Errorf("df shows %d bytes on a disk of %d", size, disk.Blocks*uint64(disk.Bsize))
	}
	stop(p)

	p = start()
	compareTrees(t, src, filepath.Join(mp, "tree"), true)
	if again := status(p); again != first {
		t.Errorf("the status command changed across a restart:\n  %s\n  %s", first, again)
	}
	stop(p)
}
