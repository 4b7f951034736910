package fs

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// POSIX details of the mount's own view of the directories it leases
// (issue 8, hole 5): what this mount shows must be what another mount sees.

func mustAttr(t *testing.T, f *FS, ino uint64) *metapb.Attr {
	t.Helper()
	a, errno := f.GetAttr(testCtx(t), ino)
	mustErrno(t, "getattr", errno, 0)
	return a
}

// leased checks that the mount holds dir's lease (so what the test checks
// is the mount's own view).
func leased(t *testing.T, f *FS, dir uint64) {
	t.Helper()
	if l := f.leases.held(dir); l == nil {
		t.Fatalf("directory %d is not leased", dir)
	} else {
		l.mu.RUnlock()
	}
}

// newer fails unless a's mtime and ctime are after before's.
func newer(t *testing.T, what string, a, before *metapb.Attr) {
	t.Helper()
	if a.Mtime <= before.Mtime || a.Ctime <= before.Ctime {
		t.Fatalf("%s: mtime %d ctime %d, want after %d %d", what, a.Mtime, a.Ctime, before.Mtime, before.Ctime)
	}
}

func TestLeasedParentTimesAfterMknodAndLink(t *testing.T) {
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	d := mustMkdir(t, f, RootIno, "d").Ino
	e := mustMkdir(t, f, RootIno, "e").Ino
	leased(t, f, d)
	leased(t, f, e)

	for _, typ := range []namespace.FileType{namespace.TypeFifo, namespace.TypeSocket, namespace.TypeFile} {
		before := mustAttr(t, f, d)
		_, errno := f.Create(ctx, d, "node-"+typ.String(), typ, 0o644, 0, 1000, 1000, true)
		mustErrno(t, "mknod "+typ.String(), errno, 0)
		after := mustAttr(t, f, d)
		newer(t, "parent after mknod of a "+typ.String(), after, before)
		if after.Nlink != before.Nlink {
			t.Fatalf("parent's nlink %d after mknod, was %d", after.Nlink, before.Nlink)
		}
	}

	file, errno := writeSmall(t, f, d, "file", []byte("x"), true)
	mustErrno(t, "create file", errno, 0)
	for _, tc := range []struct {
		name string
		dir  uint64
	}{{"same directory", d}, {"other directory", e}} {
		before, target := mustAttr(t, f, tc.dir), mustAttr(t, f, file)
		_, errno := f.Link(ctx, file, tc.dir, "link")
		mustErrno(t, "link", errno, 0)
		newer(t, "parent after link in the "+tc.name, mustAttr(t, f, tc.dir), before)
		after := mustAttr(t, f, file)
		if after.Nlink != target.Nlink+1 || after.Ctime <= target.Ctime {
			t.Fatalf("link target after link in the %s: nlink %d ctime %d, was %d %d", tc.name, after.Nlink, after.Ctime, target.Nlink, target.Ctime)
		}
	}
}

func TestLeasedNlinkAfterMovingDirectories(t *testing.T) {
	e := newEnv(t)
	f := e.mount("one", nil, nil)
	ctx := testCtx(t)
	a := mustMkdir(t, f, RootIno, "a").Ino
	b := mustMkdir(t, f, RootIno, "b").Ino
	mustMkdir(t, f, a, "sub")
	mustMkdir(t, f, b, "x")
	mustMkdir(t, f, b, "y")
	_, errno := writeSmall(t, f, a, "file", []byte("x"), true)
	mustErrno(t, "create a/file", errno, 0)
	leased(t, f, a)
	leased(t, f, b)
	nlinks := func(what string, wantA, wantB uint32, beforeA, beforeB *metapb.Attr) (*metapb.Attr, *metapb.Attr) {
		t.Helper()
		aa, ab := mustAttr(t, f, a), mustAttr(t, f, b)
		if aa.Nlink != wantA || ab.Nlink != wantB {
			t.Fatalf("%s: nlink of a %d, of b %d; want %d, %d", what, aa.Nlink, ab.Nlink, wantA, wantB)
		}
		if beforeA != nil {
			newer(t, what+": a", aa, beforeA)
		}
		if beforeB != nil {
			newer(t, what+": b", ab, beforeB)
		}
		return aa, ab
	}
	aa, ab := nlinks("at the start", 3, 4, nil, nil)

	// A directory moved to another parent (the service does it).
	mustErrno(t, "rename a/sub b/sub", f.Rename(ctx, a, "sub", b, "sub", 0), 0)
	aa, ab = nlinks("after moving a/sub to b", 2, 5, aa, ab)

	// A directory renamed over an empty one in the same parent.
	mustErrno(t, "rename b/x b/y", f.Rename(ctx, b, "x", b, "y", 0), 0)
	_, ab = nlinks("after renaming b/x over b/y", 2, 4, nil, ab)

	// A file exchanged with a directory across parents.
	mustErrno(t, "exchange a/file b/sub", f.Rename(ctx, a, "file", b, "sub", namespace.RenameExchange), 0)
	aa, _ = nlinks("after exchanging a/file with b/sub", 3, 3, aa, ab)

	// A directory removed through the service: another mount looked into
	// it, so this mount no longer leases it (but still leases its parent).
	// The exchange left it at a/file.
	sub := lookupIno(t, f, a, "file")
	_, errno = e.mount("two", nil, nil).Lookup(ctx, sub, "nothing")
	mustErrno(t, "lookup on mount two", errno, syscall.ENOENT)
	waitUntil(t, "the lease of a/sub to be given back", 10*time.Second, func() bool {
		l := f.leases.held(sub)
		if l != nil {
			l.mu.RUnlock()
		}
		return l == nil
	})
	mustErrno(t, "rmdir a/file", f.Rmdir(ctx, a, "file"), 0)
	leased(t, f, a)
	nlinks("after rmdir a/file through the service", 2, 3, aa, nil)
}

func TestModeZero(t *testing.T) {
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	d := mustMkdir(t, f, RootIno, "d").Ino
	leased(t, f, d)
	for _, parent := range []struct {
		name string
		ino  uint64
	}{{"root", RootIno}, {"leased", d}} {
		t.Run(parent.name, func(t *testing.T) {
			p := parent.ino
			a, h, errno := f.CreateOpen(ctx, p, "file", 0, 1000, 1000, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY)
			mustErrno(t, "create mode 0", errno, 0)
			mustErrno(t, "release", f.Release(ctx, h), 0)
			dir, errno := f.Mkdir(ctx, p, "dir", 0, 1000, 1000)
			mustErrno(t, "mkdir mode 0", errno, 0)
			fifo, errno := f.Create(ctx, p, "fifo", namespace.TypeFifo, 0, 0, 1000, 1000, true)
			mustErrno(t, "mkfifo mode 0", errno, 0)
			other, h, errno := f.CreateOpen(ctx, p, "chmod", 0o644, 1000, 1000, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY)
			mustErrno(t, "create", errno, 0)
			mustErrno(t, "release", f.Release(ctx, h), 0)
			_, errno = f.SetAttr(ctx, other.Ino, SetAttrIn{Valid: namespace.SetMode, Mode: 0})
			mustErrno(t, "chmod 0", errno, 0)
			for _, ino := range []uint64{a.Ino, dir.Ino, fifo.Ino, other.Ino} {
				if m := mustAttr(t, f, ino).Mode; m != 0 {
					t.Fatalf("inode %d has mode %o, want 0", ino, m)
				}
			}
		})
	}
}

// The go-fuse adapter shows a mode of 0 as 0 (go-fuse makes it 0644 or 0755
// unless told not to).
func TestNameTooLong(t *testing.T) {
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	d := mustMkdir(t, f, RootIno, "d").Ino
	leased(t, f, d)
	long := strings.Repeat("n", maxNameLen+1)
	for _, dir := range []struct {
		name string
		ino  uint64
	}{{"root", RootIno}, {"leased", d}} {
		p := dir.ino
		file := mustCreate(t, f, p, "file").Ino
		for _, tc := range []struct {
			name string
			op   func() syscall.Errno
		}{
			{"lookup", func() syscall.Errno { _, e := f.Lookup(ctx, p, long); return e }},
			{"create", func() syscall.Errno {
				_, _, e := f.CreateOpen(ctx, p, long, 0o644, 1000, 1000, syscall.O_CREAT|syscall.O_WRONLY)
				return e
			}},
			{"mknod", func() syscall.Errno {
				_, e := f.Create(ctx, p, long, namespace.TypeFifo, 0o644, 0, 1000, 1000, true)
				return e
			}},
			{"mkdir", func() syscall.Errno { _, e := f.Mkdir(ctx, p, long, 0o755, 1000, 1000); return e }},
			{"symlink", func() syscall.Errno { _, e := f.Symlink(ctx, p, long, "target", 1000, 1000); return e }},
			{"link", func() syscall.Errno { _, e := f.Link(ctx, file, p, long); return e }},
			{"unlink", func() syscall.Errno { return f.Unlink(ctx, p, long) }},
			{"rmdir", func() syscall.Errno { return f.Rmdir(ctx, p, long) }},
			{"rename from", func() syscall.Errno { return f.Rename(ctx, p, long, p, "x", 0) }},
			{"rename to", func() syscall.Errno { return f.Rename(ctx, p, "file", p, long, 0) }},
		} {
			t.Run(dir.name+"/"+tc.name, func(t *testing.T) {
				mustErrno(t, tc.name, tc.op(), syscall.ENAMETOOLONG)
			})
		}
	}
}

// A new filesystem's root has the time it was made, not 1970.
func TestRootTimes(t *testing.T) {
	start := time.Now().UnixNano()
	f, _ := newTestFS(t)
	a := mustAttr(t, f, RootIno)
	if end := time.Now().UnixNano(); a.Mtime < start || a.Mtime > end || a.Ctime < start || a.Atime < start {
		t.Fatalf("root times atime %d mtime %d ctime %d, want the bootstrap time in [%d, %d]", a.Atime, a.Mtime, a.Ctime, start, end)
	}
}

// TestFileRenamedThroughServiceLeavesItsLease: a file made under a lease
// and renamed through the service into a directory this mount does not
// lease stops being the mount's own: its name is no longer under that
// lease, so an unlink through the service and a chmod are not ordered by
// it. Before, the chmod was written behind after the close that freed the
// unlinked file, and the service refused it (EIO at the next fsync).
func TestFileRenamedThroughServiceLeavesItsLease(t *testing.T) {
	e := newEnv(t)
	m := e.mount("m", nil, nil)
	other := e.mount("other", nil, nil)
	ctx := testCtx(t)
	a := mustMkdir(t, m, RootIno, "a").Ino // leased to m
	u := mustMkdir(t, other, RootIno, "u").Ino
	f, h, errno := m.CreateOpen(ctx, a, "f", 0o644, 0, 0, syscall.O_CREAT|syscall.O_RDWR)
	mustErrno(t, "create under the lease", errno, 0)
	mustErrno(t, "rename into a directory not leased here", m.Rename(ctx, a, "f", u, "f", 0), 0)
	mustErrno(t, "unlink", m.Unlink(ctx, u, "f"), 0)
	mustErrno(t, "close (frees it)", m.Release(ctx, h), 0)
	if _, errno := m.SetAttr(ctx, f.Ino, SetAttrIn{Valid: namespace.SetMode, Mode: 0o600}); errno != syscall.ENOENT {
		t.Fatalf("chmod of the freed file: %v, want ENOENT", errno)
	}
	mustErrno(t, "fsync of the directory", m.Fsync(ctx, a), 0)
	mustErrno(t, "fsync of the root", m.Fsync(ctx, RootIno), 0)
}
