package namespace

import (
	"strings"
	"syscall"
	"testing"
)

func TestStampRoot(t *testing.T) {
	n := New(0o755, 0, 0, 0)
	before, _ := n.GetAttr(RootIno)
	if !n.StampRoot(5e9) {
		t.Fatal("StampRoot of a root made at time 0 changed nothing")
	}
	a, _ := n.GetAttr(RootIno)
	if a.Atime != 5e9 || a.Mtime != 5e9 || a.Ctime != 5e9 || a.Version <= before.Version {
		t.Fatalf("root after StampRoot(5e9): %+v, want every time 5e9 and a new version", a)
	}
	if n.StampRoot(7e9) {
		t.Fatal("a second StampRoot changed the root again")
	}
	if b, _ := n.GetAttr(RootIno); b != a {
		t.Fatalf("root after a second StampRoot: %+v, want %+v", b, a)
	}
	// A root that changed before the bootstrap time arrived keeps what changed.
	m := New(0o755, 0, 0, 0)
	_, e := m.Mkdir(RootIno, "d", 0o755, 0, 0, 2, 3e9)
	mustOK(t, e)
	m.StampRoot(5e9)
	if c, _ := m.GetAttr(RootIno); c.Atime != 5e9 || c.Mtime != 3e9 || c.Ctime != 3e9 {
		t.Fatalf("root changed at 3e9, then stamped at 5e9: %+v", c)
	}
}

// Mode 0000 is a mode: the namespace keeps it on every path that sets one.
func TestModeZero(t *testing.T) {
	f := newTFS(t)
	a, e := f.Create(RootIno, "f", TypeFile, 0, 1, 1, 0, f.alloc(), f.now(), true)
	mustOK(t, e)
	d, e := f.Mkdir(RootIno, "d", 0, 1, 1, f.alloc(), f.now())
	mustOK(t, e)
	p, e := f.Create(RootIno, "p", TypeFifo, 0, 1, 1, 0, f.alloc(), f.now(), true)
	mustOK(t, e)
	g := f.create(RootIno, "g")
	s, _, e := f.SetAttr(g, SetAttrIn{Valid: SetMode, Mode: 0}, f.now())
	mustOK(t, e)
	for _, x := range []Attr{a, d, p, s} {
		got, _ := f.GetAttr(x.Ino)
		if x.Mode != 0 || got.Mode != 0 {
			t.Fatalf("%v inode %d: mode %o (answered %o), want 0", x.Type, x.Ino, got.Mode, x.Mode)
		}
	}
}

// A name over MaxNameLen is ENAMETOOLONG wherever a name comes in, whether
// it exists or not.
func TestNameTooLong(t *testing.T) {
	f := newTFS(t)
	long := strings.Repeat("x", 256)
	file := f.create(RootIno, "file")
	dir := f.mkdir(RootIno, "dir")
	for _, tc := range []struct {
		name string
		op   func() syscall.Errno
	}{
		{"lookup", func() syscall.Errno { _, e := f.Lookup(RootIno, long); return e }},
		{"create", func() syscall.Errno {
			_, e := f.Create(RootIno, long, TypeFile, 0o644, 1, 1, 0, f.alloc(), f.now(), true)
			return e
		}},
		{"mknod", func() syscall.Errno {
			_, e := f.Create(RootIno, long, TypeFifo, 0o644, 1, 1, 0, f.alloc(), f.now(), true)
			return e
		}},
		{"mkdir", func() syscall.Errno { _, e := f.Mkdir(RootIno, long, 0o755, 1, 1, f.alloc(), f.now()); return e }},
		{"symlink", func() syscall.Errno { _, e := f.Symlink(RootIno, long, "t", 1, 1, f.alloc(), f.now()); return e }},
		{"link", func() syscall.Errno { _, e := f.Link(file, dir, long, f.now()); return e }},
		{"unlink", func() syscall.Errno { _, e := f.Unlink(RootIno, long, f.now()); return e }},
		{"rmdir", func() syscall.Errno { return f.Rmdir(RootIno, long, f.now()) }},
		{"rename from", func() syscall.Errno { _, e := f.Rename(RootIno, long, dir, "x", 0, f.now()); return e }},
		{"rename to", func() syscall.Errno { _, e := f.Rename(RootIno, "file", dir, long, 0, f.now()); return e }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := tc.op(); e != syscall.ENAMETOOLONG {
				t.Fatalf("errno %v, want ENAMETOOLONG", e)
			}
		})
	}
}
