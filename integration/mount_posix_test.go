package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMountPOSIX: what applications rely on beyond copying files:
// permissions for other users, offsets past 4 GiB and holes, shared
// writable mmap, O_APPEND, fallocate, renameat2 flags, UTIME_OMIT/NOW,
// an unlinked file used through its descriptor, xattrs, special files;
// then a mount SIGKILLed leaves a dead mount point that the next
// `ecfs mount` recovers, and `ecfs umount` ends a mount cleanly.
func TestMountPOSIX(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	m := fc.mount("--allow-other")
	d := m.dir
	path := func(n string) string { return filepath.Join(d, n) }

	t.Run("permissions", func(t *testing.T) {
		asNobody := func(cmdline string) (string, error) {
			out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmdline).CombinedOutput()
			return string(out), err
		}
		// Let other users reach the mount point (t.TempDir is 0700).
		for p := filepath.Dir(d); p != filepath.Dir(p) && strings.HasPrefix(p, os.TempDir()+"/"); p = filepath.Dir(p) {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		sh(t, d, "mkdir -m 0755 closed && mkdir -m 0777 open && mkdir -m 2777 sgid && chgrp 4242 sgid && echo secret > closed/f && chmod 0600 closed/f")
		if out, err := asNobody("touch " + path("closed/new")); err == nil || !strings.Contains(out, "Permission denied") {
			t.Fatalf("nobody created a file in a 0755 root directory: %v %s", err, out)
		}
		if out, err := asNobody("cat " + path("closed/f")); err == nil || !strings.Contains(out, "Permission denied") {
			t.Fatalf("nobody read a 0600 root file: %v %s", err, out)
		}
		if out, err := asNobody("echo mine > " + path("open/n") + " && cat " + path("open/n")); err != nil || out != "mine\n" {
			t.Fatalf("nobody writing in a 0777 directory: %v %s", err, out)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path("open/n"), &st); err != nil || st.Uid != 65534 || st.Gid != 65534 {
			t.Fatalf("a new file does not take the caller's uid/gid: %+v %v", st, err)
		}
		if _, err := asNobody("touch " + path("sgid/g")); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(path("sgid/g"), &st); err != nil || st.Gid != 4242 {
			t.Fatalf("a file in a setgid directory does not take its group: gid %d %v", st.Gid, err)
		}
		if out, err := asNobody("chmod 0777 " + path("closed/f")); err == nil {
			t.Fatalf("nobody chmodded root's file: %s", out)
		}
	})

	t.Run("large offsets and holes", func(t *testing.T) {
		f, err := os.Create(path("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		offs := []int64{0, 4<<30 - 3, 5 << 30, 5<<30 + 4<<20 + 1}
		for _, off := range offs {
			if _, err := f.WriteAt([]byte("ecfs!"), off); err != nil {
				t.Fatalf("write at %d: %v", off, err)
			}
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		g, err := os.Open(path("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		for _, off := range offs {
			buf := make([]byte, 5)
			if _, err := g.ReadAt(buf, off); err != nil || string(buf) != "ecfs!" {
				t.Fatalf("read at %d: %q %v", off, buf, err)
			}
		}
		hole := make([]byte, 1<<20)
		if _, err := g.ReadAt(hole, 3<<30); err != nil || !bytes.Equal(hole, make([]byte, len(hole))) {
			t.Fatalf("a hole does not read as zeros: %v", err)
		}
		if fi, _ := g.Stat(); fi.Size() != 5<<30+4<<20+6 {
			t.Fatalf("size %d", fi.Size())
		}
	})

	t.Run("shared writable mmap", func(t *testing.T) {
		if err := os.WriteFile(path("mm"), make([]byte, 3<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path("mm"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := unix.Mmap(int(f.Fd()), 0, 3<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		copy(b[100:], "through mmap")
		copy(b[2<<20+7:], "second page run")
		if err := unix.Msync(b, unix.MS_SYNC); err != nil {
			t.Fatal(err)
		}
		_ = unix.Munmap(b)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path("mm"))
		if err != nil || string(got[100:112]) != "through mmap" || string(got[2<<20+7:2<<20+22]) != "second page run" {
			t.Fatalf("mmap writes not in the file: %v", err)
		}
	})

	t.Run("append, fallocate, renameat2, utimensat", func(t *testing.T) {
		sh(t, d, "echo one >> app && echo two >> app")
		if b, _ := os.ReadFile(path("app")); string(b) != "one\ntwo\n" {
			t.Fatalf("O_APPEND: %q", b)
		}
		sh(t, d, "fallocate -l 10MiB falloc")
		if fi, err := os.Stat(path("falloc")); err != nil || fi.Size() != 10<<20 {
			t.Fatalf("fallocate: %v %v", fi, err)
		}
		if out, err := exec.Command("fallocate", "-p", "-o", "0", "-l", "4096", path("falloc")).CombinedOutput(); err == nil {
			t.Fatalf("punching a hole succeeded, want EOPNOTSUPP: %s", out)
		}
		sh(t, d, "echo a > ra && echo b > rb")
		if err := unix.Renameat2(unix.AT_FDCWD, path("ra"), unix.AT_FDCWD, path("rb"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
			t.Fatalf("RENAME_NOREPLACE over a file: %v", err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, path("ra"), unix.AT_FDCWD, path("rb"), unix.RENAME_EXCHANGE); err != nil {
			t.Fatal(err)
		}
		if a, _ := os.ReadFile(path("ra")); string(a) != "b\n" {
			t.Fatalf("RENAME_EXCHANGE: ra holds %q", a)
		}
		mt := time.Date(2010, 1, 2, 3, 4, 5, 6, time.UTC)
		if err := os.Chtimes(path("ra"), mt, mt); err != nil {
			t.Fatal(err)
		}
		ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, path("ra"), ts, 0); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(path("ra"), &st); err != nil {
			t.Fatal(err)
		}
		if time.Unix(st.Mtim.Unix()).UTC() != mt || time.Since(time.Unix(st.Atim.Unix())) > time.Minute {
			t.Fatalf("UTIME_NOW atime, UTIME_OMIT mtime: atime %v mtime %v", time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))
		}
	})

	t.Run("unlinked open file, xattrs, special files", func(t *testing.T) {
		f, err := os.OpenFile(path("ghost"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte("0123456789"), 600000)
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path("ghost")); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("after unlink"), 10); err != nil {
			t.Fatal(err)
		}
		copy(data[10:], "after unlink")
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("reading an unlinked file through its descriptor: %v", err)
		}
		f.Close()
		if _, err := os.Stat(path("ghost")); !os.IsNotExist(err) {
			t.Fatalf("the unlinked file has a name again: %v", err)
		}

		if err := unix.Setxattr(path("app"), "user.color", []byte("blue"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(path("app"), "user.color", []byte("red"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
			t.Fatalf("XATTR_CREATE over an existing xattr: %v", err)
		}
		buf := make([]byte, 64)
		if n, err := unix.Getxattr(path("app"), "user.color", buf); err != nil || string(buf[:n]) != "blue" {
			t.Fatalf("getxattr: %q %v", buf[:n], err)
		}
		if _, err := unix.Getxattr(path("app"), "user.none", buf); !errors.Is(err, unix.ENODATA) {
			t.Fatalf("a missing xattr: %v", err)
		}
		sh(t, d, "mkfifo fifo && mknod chr c 1 3 && ln -s app sl && ln app hl")
		var st unix.Stat_t
		if err := unix.Lstat(path("chr"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
			t.Fatalf("mknod c 1 3: %+v %v", st, err)
		}
		if err := unix.Lstat(path("fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Fatalf("mkfifo: %v", err)
		}
		if err := unix.Stat(path("hl"), &st); err != nil || st.Nlink != 2 {
			t.Fatalf("hard link count %d %v", st.Nlink, err)
		}
		if out := sh(t, d, "ls -a open"); out != ".\n..\nn\n" {
			t.Fatalf("ls -a of a directory: %q, want ., .. and its file", out)
		}
		if err := os.Remove(path("closed")); !errors.Is(err, unix.ENOTEMPTY) {
			t.Fatalf("rmdir of a non-empty directory: %v", err)
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		bad, _ := writeSecret(t, t.TempDir())
		dir := t.TempDir()
		code, _, errs := runEcfs(t, "mount", "--meta", strings.Join(fc.g.addrs(), ","), "--secret-file", bad, dir)
		if code != 1 || !strings.Contains(errs, "secret") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Fatalf("mount with a wrong secret: exit %d, stderr %q; want 1 and one line about the secret", code, errs)
		}
		if isMounted(dir) {
			t.Fatal("mounted with a wrong secret")
		}
	})

	t.Run("dead mount point recovered, umount", func(t *testing.T) {
		m.p.kill()
		// The kernel answers from its attribute cache until it expires.
		waitFor(t, "the dead mount point to answer ENOTCONN", 10*time.Second, func() error {
			if _, err := os.Stat(d); !errors.Is(err, syscall.ENOTCONN) {
				return fmt.Errorf("stat: %v", err)
			}
			return nil
		})
		fc.start(m)
		if b, err := os.ReadFile(path("app")); err != nil || string(b) != "one\ntwo\n" {
			t.Fatalf("after recovering the mount point: %q %v", b, err)
		}
		if !strings.Contains(m.p.logs.String(), "left behind by an ecfs mount that died") {
			t.Errorf("the recovery was not reported:\n%s", m.p.logs.String())
		}
		if code, out, errs := runEcfs(t, "umount", d); code != 0 {
			t.Fatalf("ecfs umount: %d %s %s", code, out, errs)
		}
		select {
		case <-m.p.exited:
			if m.p.err != nil {
				t.Fatalf("the mount exited with %v after ecfs umount", m.p.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the mount did not exit after ecfs umount")
		}
		if isMounted(d) {
			t.Fatal("still mounted after ecfs umount")
		}
	})
}
