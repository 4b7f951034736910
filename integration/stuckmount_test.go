package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountPointOfAStoppedMount: a mount whose process is stopped (or
// stuck in the kernel after a kill) answers nothing, so a stat of its
// mount point waits for ever. A new `ecfs mount` there fails within
// seconds, saying to run `ecfs umount --abort`; that aborts the FUSE
// connection and detaches the mount point, the stopped process exits when
// it goes on, and the next mount serves what was written before.
func TestMountPointOfAStoppedMount(t *testing.T) {
	t.Parallel()
	fc := newFSCluster(t, 1, 6)
	m := fc.mount()
	f, err := os.Create(filepath.Join(m.dir, "kept"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("written before"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	old := m.p
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.cmd.Process.Signal(syscall.SIGCONT) }) // before the mount's own cleanup

	// Never stat the mount point here: that would wait for ever too.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ecfsBin, "mount", "--meta", strings.Join(fc.g.addrs(), ","), "--secret-file", fc.g.secretFile, m.dir)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	var ee *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("mount on a stopped mount's mount point: %v after %v (want a failure within seconds)\n%s", err, took, errb.String())
	}
	if !strings.Contains(errb.String(), "ecfs umount --abort "+m.dir) {
		t.Fatalf("the failure does not say how to recover:\n%s", errb.String())
	}
	t.Logf("mount failed after %v: %s", took.Round(100*time.Millisecond), strings.TrimSpace(errb.String()))

	if code, out, errs := runEcfs(t, "umount", "--abort", m.dir); code != 0 {
		t.Fatalf("ecfs umount --abort: exit %d: %s%s", code, out, errs)
	}
	if isMounted(m.dir) {
		t.Fatal("still mounted after ecfs umount --abort")
	}
	_ = old.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-old.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the aborted mount's process did not exit once it went on")
	}
	fc.start(m)
	if b, err := os.ReadFile(filepath.Join(m.dir, "kept")); err != nil || string(b) != "written before" {
		t.Fatalf("after mounting again: %q %v", b, err)
	}
	if code, _, errs := runEcfs(t, "umount", "--abort", t.TempDir()); code == 0 || !strings.Contains(errs, "nothing is mounted") {
		t.Fatalf("umount --abort of a directory with nothing mounted: exit %d, %q", code, errs)
	}
}
