package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPOSIXLeasedDir: POSIX details in a directory the mount leases (it
// made it, so it answers lookups and attributes from its own view): mode
// 0000, ENAMETOOLONG, the parent's times after mkfifo and link, the link
// counts of both parents after moving a directory, and F_GETLK's pid.
func TestPOSIXLeasedDir(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	m := fc.mount()
	d := filepath.Join(m.dir, "leased")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	path := func(n string) string { return filepath.Join(d, n) }
	stat := func(t *testing.T, p string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		return st
	}
	newer := func(t *testing.T, what string, a, b unix.Stat_t) {
		t.Helper()
		if a.Mtim.Nano() <= b.Mtim.Nano() || a.Ctim.Nano() <= b.Ctim.Nano() {
			t.Fatalf("%s: mtime %d ctime %d, want after %d %d", what, a.Mtim.Nano(), a.Ctim.Nano(), b.Mtim.Nano(), b.Ctim.Nano())
		}
	}

	t.Run("mode 0000", func(t *testing.T) {
		fd, err := unix.Open(path("f0"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		if err := unix.Mkdir(path("d0"), 0); err != nil {
			t.Fatal(err)
		}
		sh(t, d, "touch f1 && chmod 0 f1 && mkdir -m 0 d1 && mkfifo -m 0 p0")
		for _, n := range []string{"f0", "d0", "f1", "d1", "p0"} {
			if m := stat(t, path(n)).Mode & 0o7777; m != 0 {
				t.Errorf("%s has mode %o, want 0", n, m)
			}
		}
	})

	t.Run("ENAMETOOLONG", func(t *testing.T) {
		sh(t, d, "touch exists && mkdir existsdir")
		long := path(strings.Repeat("n", 256))
		for _, tc := range []struct {
			name string
			op   func() error
		}{
			{"lookup", func() error { var st unix.Stat_t; return unix.Lstat(long, &st) }},
			{"create", func() error {
				fd, err := unix.Open(long, unix.O_CREAT|unix.O_WRONLY, 0o644)
				if err == nil {
					unix.Close(fd)
				}
				return err
			}},
			{"mkdir", func() error { return unix.Mkdir(long, 0o755) }},
			{"mknod", func() error { return unix.Mkfifo(long, 0o644) }},
			{"symlink", func() error { return unix.Symlink("target", long) }},
			{"link", func() error { return unix.Link(path("exists"), long) }},
			{"unlink", func() error { return unix.Unlink(long) }},
			{"rmdir", func() error { return unix.Rmdir(long) }},
			{"rename from", func() error { return unix.Rename(long, path("x")) }},
			{"rename to", func() error { return unix.Rename(path("exists"), long) }},
		} {
			if err := tc.op(); !errors.Is(err, unix.ENAMETOOLONG) {
				t.Errorf("%s of a 256-byte name: %v, want ENAMETOOLONG", tc.name, err)
			}
		}
	})

	t.Run("parent times after mkfifo and link", func(t *testing.T) {
		before := stat(t, d)
		if err := unix.Mkfifo(path("fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		newer(t, "the directory after mkfifo", stat(t, d), before)
		sh(t, d, "echo data > target")
		before, target := stat(t, d), stat(t, path("target"))
		if err := unix.Link(path("target"), path("hard")); err != nil {
			t.Fatal(err)
		}
		newer(t, "the directory after link", stat(t, d), before)
		if st := stat(t, path("target")); st.Nlink != 2 || st.Ctim.Nano() <= target.Ctim.Nano() {
			t.Fatalf("the link target: nlink %d ctime %d, want 2 and after %d", st.Nlink, st.Ctim.Nano(), target.Ctim.Nano())
		}
	})

	t.Run("nlink after moving a directory", func(t *testing.T) {
		sh(t, d, "mkdir -p a/sub b")
		a, b := stat(t, path("a")), stat(t, path("b"))
		if a.Nlink != 3 || b.Nlink != 2 {
			t.Fatalf("before: nlink of a %d, of b %d; want 3, 2", a.Nlink, b.Nlink)
		}
		if err := unix.Rename(path("a/sub"), path("b/sub")); err != nil {
			t.Fatal(err)
		}
		a2, b2 := stat(t, path("a")), stat(t, path("b"))
		if a2.Nlink != 2 || b2.Nlink != 3 {
			t.Fatalf("after moving a/sub to b: nlink of a %d, of b %d; want 2, 3", a2.Nlink, b2.Nlink)
		}
		newer(t, "a", a2, a)
		newer(t, "b", b2, b)
	})

	t.Run("F_GETLK pid", func(t *testing.T) {
		// The mount passes the pid (LockIn.Pid), the service records it
		// (LockOp.pid) and answers it (ReadResp.conflict_pid).
		sh(t, d, "echo data > locked")
		// Another process holds a POSIX write lock on the file.
		holder := exec.Command("python3", "-c", `import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()`, path("locked"))
		stdin, err := holder.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := holder.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		holder.Stderr = os.Stderr
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); _ = holder.Wait() })
		if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "locked\n" {
			t.Fatalf("the lock holder: %q, %v", line, err)
		}
		f, err := os.OpenFile(path("locked"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if lk.Type != unix.F_WRLCK || lk.Pid != int32(holder.Process.Pid) {
			t.Fatalf("F_GETLK: type %d pid %d, want a write lock (%d) held by pid %d", lk.Type, lk.Pid, unix.F_WRLCK, holder.Process.Pid)
		}
	})

	// The directory is listed whole from the mount's lease: the offsets
	// the kernel is given number that listing, and a seek lands in it
	// (the kernel seeks between its calls too: 4 KiB at a time here).
	t.Run("seekdir in a listing of the lease", func(t *testing.T) {
		sh(t, d, "mkdir many && cd many && touch $(seq -f f%04g 1200)")
		fd, err := unix.Open(path("many"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		all := readDirents(t, fd)
		if len(all) != 1202 {
			t.Fatalf("%d entries, want 1202", len(all))
		}
		seen := map[string]bool{}
		for _, e := range all {
			if seen[e.name] {
				t.Fatalf("%s listed twice", e.name)
			}
			seen[e.name] = true
		}
		for _, k := range []int{700, 1, 0, 1199, 1201} {
			if _, err := unix.Seek(fd, all[k].off, 0); err != nil {
				t.Fatal(err)
			}
			rest := readDirents(t, fd)
			if len(rest) != len(all)-k-1 || len(rest) > 0 && rest[0] != all[k+1] {
				t.Fatalf("after seeking to entry %d's offset: %d entries, want %d from %v", k, len(rest), len(all)-k-1, all[min(k+1, len(all)-1)])
			}
		}
		// A rewind lists again: a file made since is there.
		sh(t, path("many"), "touch new && rm f0001")
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			t.Fatal(err)
		}
		again := map[string]bool{}
		for _, e := range readDirents(t, fd) {
			again[e.name] = true
		}
		if len(again) != 1202 || !again["new"] || again["f0001"] {
			t.Fatalf("after a rewind: %d entries, new %v, f0001 %v; want 1202, new and not f0001", len(again), again["new"], again["f0001"])
		}
	})
}

type dirent struct {
	name string
	off  int64
}

// readDirents reads fd's entries from where it is to the end, 4 KiB at a
// time.
func readDirents(t *testing.T, fd int) []dirent {
	t.Helper()
	var out []dirent
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino, off, reclen, type, name.
			off := int64(binary.NativeEndian.Uint64(b[8:16]))
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name, _, _ := bytes.Cut(b[19:reclen], []byte{0})
			out = append(out, dirent{string(name), off})
			b = b[reclen:]
		}
	}
}
