package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopbackPkg is go-fuse's own example file system: it passes every call
// to a directory of the local file system, with the libfuse defaults of 1 s
// entry and attribute timeouts. It is the practical limit of a FUSE file
// system written with go-fuse, the reference the mount is measured beside.
const loopbackPkg = "github.com/hanwen/go-fuse/v2/example/loopback"

// startLoopback builds go-fuse's loopback example (the version in go.mod)
// and mounts it on a new directory, backed by another one under the
// benchmark's temporary directory (the same file system as the local
// reference). It returns the mount point, the directory behind it and the
// process; the mount is gone when the benchmark ends.
func startLoopback(b *testing.B) (mnt, orig string, pid int) {
	b.Helper()
	tmp := b.TempDir()
	bin := filepath.Join(tmp, "loopback")
	if out, err := exec.Command("go", "build", "-o", bin, loopbackPkg).CombinedOutput(); err != nil {
		b.Fatalf("building %s: %v\n%s", loopbackPkg, err, out)
	}
	mnt, orig = filepath.Join(tmp, "mnt"), filepath.Join(tmp, "orig")
	for _, d := range []string{mnt, orig} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-q", "-directmount", mnt, orig)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		// SIGTERM: it unmounts and exits; a lazy unmount if it cannot.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if isMounted(mnt) {
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(mnt) {
		select {
		case err := <-exited:
			b.Fatalf("%s exited before mounting: %v\n%s", bin, err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not mount %s within 30 s:\n%s", bin, mnt, logs.String())
		}
	}
	// Its first operations (go-fuse's poll probe) are done once a stat of
	// the root answers.
	if _, err := os.Stat(mnt); err != nil {
		b.Fatalf("stat of the loopback mount: %v", err)
	}
	return mnt, orig, cmd.Process.Pid
}
