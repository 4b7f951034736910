package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountHelper: mount.ecfs (the binary under that name, as mount(8)
// and fstab run it) returns once the file system is mounted, with the
// mount running on detached; umount ends it. A wrong secret fails with
// mount(8)'s status 32 and the reason.
func TestMountHelper(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	bin := t.TempDir()
	helper := filepath.Join(bin, "mount.ecfs")
	if err := os.Symlink(ecfsBin, helper); err != nil {
		t.Fatal(err)
	}
	// The detached mount is re-parented to this test process, which reaps it.
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", e)
	}
	t.Cleanup(func() { _, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })

	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "mount.log")
	addrs := strings.Join(fc.g.addrs(), ",")
	out, err := exec.Command(helper, addrs, dir, "-v", "-o",
		"secret-file="+fc.g.secretFile+",log_file="+logFile+",session_ttl=5s,_netdev,noatime,x-systemd.automount").CombinedOutput()
	if err != nil {
		t.Fatalf("mount.ecfs: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`mounted by pid (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("mount.ecfs did not say which process mounts:\n%s", out)
	}
	pid, _ := strconv.Atoi(string(m[1]))
	reaped := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		reaped <- ws
	}()
	t.Cleanup(func() {
		if isMounted(dir) {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		select {
		case <-reaped:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-reaped
		}
	})
	if !isMounted(dir) {
		t.Fatal("mount.ecfs returned before the mount point was mounted")
	}
	data := bytes.Repeat([]byte("fstab "), 10000)
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if out, err := exec.Command(ecfsBin, "umount", dir).CombinedOutput(); err != nil {
		t.Fatalf("ecfs umount: %v\n%s", err, out)
	}
	select {
	case ws := <-reaped:
		if ws.ExitStatus() != 0 {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("the detached mount exited with %d after umount:\n%s", ws.ExitStatus(), b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the detached mount did not exit 20 s after umount")
	}
	reaped <- 0 // for the cleanup

	// A wrong secret: status 32, and the reason on stderr.
	wrong := filepath.Join(t.TempDir(), "wrong")
	key, _ := exec.Command(ecfsBin, "keygen").Output()
	if err := os.WriteFile(wrong, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helper, addrs, dir, "-o", "secret-file="+wrong+",log_file="+logFile)
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 32 || !strings.Contains(string(out), "secret") {
		t.Fatalf("with a wrong secret: %v (want exit status 32 and the reason)\n%s", err, out)
	}
	if isMounted(dir) {
		t.Fatal("a mount with a wrong secret left a mount point")
	}
}
