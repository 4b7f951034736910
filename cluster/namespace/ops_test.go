package namespace

import (
	"strings"
	"syscall"
	"testing"
)

// tree builds a small namespace used by most table tests:
//
//	/d/  /d/sub/  /d/sub/x  /d/f (also /h)  /e/ (empty)  /f  /s -> target  /p (fifo)
func tree(t *testing.T) (*tfs, map[string]Ino) {
	t.Helper()
	f := newTFS(t)
	m := map[string]Ino{"/": RootIno}
	m["/d"] = f.mkdir(RootIno, "d")
	m["/d/sub"] = f.mkdir(m["/d"], "sub")
	m["/d/sub/x"] = f.create(m["/d/sub"], "x")
	m["/d/f"] = f.create(m["/d"], "f")
	m["/e"] = f.mkdir(RootIno, "e")
	m["/f"] = f.create(RootIno, "f")
	_, e := f.Link(m["/d/f"], RootIno, "h", f.now())
	mustOK(t, e)
	m["/h"] = m["/d/f"]
	a, e := f.Symlink(RootIno, "s", "target", 1, 1, f.alloc(), f.now())
	mustOK(t, e)
	m["/s"] = a.Ino
	a, e = f.Create(RootIno, "p", TypeFifo, 0o600, 1, 1, 0, f.alloc(), f.now(), true)
	mustOK(t, e)
	m["/p"] = a.Ino
	return f, m
}

// removedOpenDir makes /gone, opens it with handle 7 and removes it.
func removedOpenDir(t *testing.T, f *tfs) Ino {
	t.Helper()
	ino := f.mkdir(RootIno, "gone")
	mustOK(t, f.Open(ino, 7, 1))
	mustOK(t, f.Rmdir(RootIno, "gone", f.now()))
	return ino
}

func TestNew(t *testing.T) {
	n := New(0o1777, 5, 6, 42)
	a, e := n.GetAttr(RootIno)
	mustOK(t, e)
	want := Attr{Ino: RootIno, Type: TypeDir, Mode: 0o1777, Uid: 5, Gid: 6, Nlink: 2, Atime: 42, Mtime: 42, Ctime: 42, Version: 1}
	if a != want {
		t.Fatalf("root = %+v, want %+v", a, want)
	}
	if a.FullMode() != syscall.S_IFDIR|0o1777 {
		t.Fatalf("FullMode = %o", a.FullMode())
	}
	if in, d := n.Counts(); in != 1 || d != 1 {
		t.Fatalf("Counts = %d, %d", in, d)
	}
	if _, err := NewWithLimits(Limits{}, 0o755, 0, 0, 0); err == nil {
		t.Fatal("NewWithLimits accepted zero limits")
	}
}

func TestFileTypeIFMT(t *testing.T) {
	for typ, want := range map[FileType]uint32{
		TypeFile: syscall.S_IFREG, TypeDir: syscall.S_IFDIR, TypeSymlink: syscall.S_IFLNK,
		TypeFifo: syscall.S_IFIFO, TypeSocket: syscall.S_IFSOCK, TypeChar: syscall.S_IFCHR,
		TypeBlock: syscall.S_IFBLK, 0: 0, 8: 0,
	} {
		if got := typ.IFMT(); got != want {
			t.Errorf("%v.IFMT() = %o, want %o", typ, got, want)
		}
	}
}

func TestLookup(t *testing.T) {
	long := strings.Repeat("n", 256)
	for _, tc := range []struct {
		name   string
		parent string
		arg    string
		want   string // path of the expected inode
		errno  syscall.Errno
	}{
		{"file", "/d", "f", "/d/f", 0},
		{"dir", "/", "d", "/d", 0},
		{"hard link", "/", "h", "/d/f", 0},
		{"dot", "/d", ".", "/d", 0},
		{"dotdot", "/d/sub", "..", "/d", 0},
		{"root dotdot", "/", "..", "/", 0},
		{"missing", "/d", "nope", "", syscall.ENOENT},
		{"parent is file", "/f", "x", "", syscall.ENOTDIR},
		{"parent is symlink", "/s", "x", "", syscall.ENOTDIR},
		{"empty name", "/", "", "", syscall.EINVAL},
		{"slash", "/", "d/f", "", syscall.EINVAL},
		{"nul", "/", "d\x00", "", syscall.EINVAL},
		{"too long", "/", long, "", syscall.ENAMETOOLONG},
		{"max length", "/", long[:255], "", syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			a, e := f.Lookup(m[tc.parent], tc.arg)
			wantErrno(t, e, tc.errno)
			if e == 0 && a.Ino != m[tc.want] {
				t.Fatalf("Lookup = ino %d, want %d", a.Ino, m[tc.want])
			}
		})
	}
	t.Run("missing parent", func(t *testing.T) {
		f, _ := tree(t)
		_, e := f.Lookup(99999, "x")
		wantErrno(t, e, syscall.ENOENT)
	})
	t.Run("in removed dir", func(t *testing.T) {
		f, _ := tree(t)
		g := removedOpenDir(t, f)
		_, e := f.Lookup(g, "..")
		wantErrno(t, e, syscall.ENOENT)
		a, e := f.Lookup(g, ".")
		mustOK(t, e)
		if a.Ino != g || a.Nlink != 0 {
			t.Fatalf("Lookup(.) = %+v", a)
		}
	})
}

func TestGetAttr(t *testing.T) {
	f, m := tree(t)
	for _, tc := range []struct {
		name  string
		ino   Ino
		errno syscall.Errno
		typ   FileType
		nlink uint32
	}{
		{"root", RootIno, 0, TypeDir, 4},
		{"dir", m["/d"], 0, TypeDir, 3},
		{"empty dir", m["/e"], 0, TypeDir, 2},
		{"linked file", m["/d/f"], 0, TypeFile, 2},
		{"symlink", m["/s"], 0, TypeSymlink, 1},
		{"fifo", m["/p"], 0, TypeFifo, 1},
		{"zero", 0, syscall.ENOENT, 0, 0},
		{"unknown", 12345, syscall.ENOENT, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, e := f.GetAttr(tc.ino)
			wantErrno(t, e, tc.errno)
			if e == 0 && (a.Type != tc.typ || a.Nlink != tc.nlink || a.Ino != tc.ino) {
				t.Fatalf("GetAttr = %+v, want type %v nlink %d", a, tc.typ, tc.nlink)
			}
		})
	}
	t.Run("freed", func(t *testing.T) {
		_, e := f.Unlink(RootIno, "f", f.now())
		mustOK(t, e)
		f.gone(m["/f"])
	})
}

func TestCreate(t *testing.T) {
	type args struct {
		parent string
		name   string
		typ    FileType
		mode   uint32
		rdev   uint32
		ino    Ino // 0: a fresh one; 1..: that number
		excl   bool
	}
	for _, tc := range []struct {
		name  string
		args  args
		errno syscall.Errno
		check func(t *testing.T, f *tfs, m map[string]Ino, a Attr)
	}{
		{"regular", args{"/d", "new", TypeFile, 0o640, 0, 0, true}, 0, func(t *testing.T, f *tfs, m map[string]Ino, a Attr) {
			want := Attr{Ino: a.Ino, Type: TypeFile, Mode: 0o640, Uid: 7, Gid: 8, Nlink: 1, Atime: f.clock, Mtime: f.clock, Ctime: f.clock, Version: 1}
			if a != want {
				t.Fatalf("attr = %+v, want %+v", a, want)
			}
			p := f.attr(m["/d"])
			if p.Mtime != f.clock || p.Ctime != f.clock || p.Nlink != 3 {
				t.Fatalf("parent = %+v", p)
			}
			if got := f.lookup(m["/d"], "new"); got != a.Ino {
				t.Fatalf("lookup = %d", got)
			}
		}},
		{"mode keeps only permission bits", args{"/", "m", TypeFile, syscall.S_IFREG | 0o4755, 0, 0, true}, 0, func(t *testing.T, f *tfs, m map[string]Ino, a Attr) {
			if a.Mode != 0o4755 || a.FullMode() != syscall.S_IFREG|0o4755 {
				t.Fatalf("mode = %o", a.Mode)
			}
		}},
		{"fifo", args{"/", "q", TypeFifo, 0o600, 0, 0, true}, 0, nil},
		{"socket", args{"/", "sock", TypeSocket, 0o600, 0, 0, false}, 0, nil},
		{"char device", args{"/", "null", TypeChar, 0o666, 0x0103, 0, true}, 0, func(t *testing.T, f *tfs, m map[string]Ino, a Attr) {
			if a.Rdev != 0x0103 || a.Type != TypeChar {
				t.Fatalf("attr = %+v", a)
			}
		}},
		{"block device", args{"/", "sda", TypeBlock, 0o660, 0x0800, 0, true}, 0, nil},
		{"rdev ignored for fifo", args{"/", "q", TypeFifo, 0o600, 5, 0, true}, 0, func(t *testing.T, f *tfs, m map[string]Ino, a Attr) {
			if a.Rdev != 0 {
				t.Fatalf("rdev = %d", a.Rdev)
			}
		}},
		{"excl over file", args{"/", "f", TypeFile, 0o644, 0, 0, true}, syscall.EEXIST, nil},
		{"open existing file", args{"/", "f", TypeFile, 0o600, 0, 0, false}, 0, func(t *testing.T, f *tfs, m map[string]Ino, a Attr) {
			if a.Ino != m["/f"] || a.Mode != 0o644 {
				t.Fatalf("attr = %+v, want the existing /f", a)
			}
			if _, e := f.GetAttr(f.next); e != syscall.ENOENT {
				t.Fatal("the new inode number was used")
			}
		}},
		{"open existing dir", args{"/", "d", TypeFile, 0o644, 0, 0, false}, syscall.EEXIST, nil},
		{"open existing symlink", args{"/", "s", TypeFile, 0o644, 0, 0, false}, syscall.EEXIST, nil},
		{"mknod over fifo", args{"/", "p", TypeFifo, 0o644, 0, 0, false}, syscall.EEXIST, nil},
		{"mknod over file", args{"/", "f", TypeSocket, 0o644, 0, 0, false}, syscall.EEXIST, nil},
		{"type dir", args{"/", "x", TypeDir, 0o755, 0, 0, true}, syscall.EINVAL, nil},
		{"type symlink", args{"/", "x", TypeSymlink, 0o777, 0, 0, true}, syscall.EINVAL, nil},
		{"type invalid", args{"/", "x", 0, 0o644, 0, 0, true}, syscall.EINVAL, nil},
		{"ino in use", args{"/", "x", TypeFile, 0o644, 0, RootIno, true}, syscall.EINVAL, nil},
		{"large ino", args{"/", "x", TypeFile, 0o644, 0, 1 << 62, true}, 0, nil},
		{"parent missing", args{"/nope", "x", TypeFile, 0o644, 0, 0, true}, syscall.ENOENT, nil},
		{"parent is file", args{"/f", "x", TypeFile, 0o644, 0, 0, true}, syscall.ENOTDIR, nil},
		{"dot", args{"/", ".", TypeFile, 0o644, 0, 0, true}, syscall.EEXIST, nil},
		{"dotdot", args{"/", "..", TypeFile, 0o644, 0, 0, false}, syscall.EEXIST, nil},
		{"empty name", args{"/", "", TypeFile, 0o644, 0, 0, true}, syscall.EINVAL, nil},
		{"slash", args{"/", "a/b", TypeFile, 0o644, 0, 0, true}, syscall.EINVAL, nil},
		{"nul", args{"/", "a\x00", TypeFile, 0o644, 0, 0, true}, syscall.EINVAL, nil},
		{"too long", args{"/", strings.Repeat("x", 256), TypeFile, 0o644, 0, 0, true}, syscall.ENAMETOOLONG, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			ino := f.alloc()
			if tc.args.ino != 0 {
				ino = tc.args.ino
			}
			parent, ok := m[tc.args.parent]
			if !ok {
				parent = 99999
			}
			before := f.Digest()
			a, e := f.Create(parent, tc.args.name, tc.args.typ, tc.args.mode, 7, 8, tc.args.rdev, ino, f.now(), tc.args.excl)
			wantErrno(t, e, tc.errno)
			if e != 0 && f.Digest() != before {
				t.Fatal("failed Create changed the namespace")
			}
			if e == 0 && tc.check != nil {
				tc.check(t, f, m, a)
			}
			f.roundTrip()
		})
	}
	t.Run("ino zero", func(t *testing.T) {
		f, _ := tree(t)
		_, e := f.Create(RootIno, "z", TypeFile, 0o644, 0, 0, 0, 0, f.now(), true)
		wantErrno(t, e, syscall.EINVAL)
	})
	t.Run("setgid parent", func(t *testing.T) {
		f, m := tree(t)
		_, _, e := f.SetAttr(m["/d"], SetAttrIn{Valid: SetMode | SetGid, Mode: 0o2775, Gid: 50}, f.now())
		mustOK(t, e)
		a, e := f.Create(m["/d"], "g", TypeFile, 0o644, 7, 8, 0, f.alloc(), f.now(), true)
		mustOK(t, e)
		if a.Gid != 50 || a.Mode != 0o644 {
			t.Fatalf("file in setgid dir: %+v", a)
		}
	})
	t.Run("removed parent", func(t *testing.T) {
		f, _ := tree(t)
		g := removedOpenDir(t, f)
		_, e := f.Create(g, "x", TypeFile, 0o644, 0, 0, 0, f.alloc(), f.now(), true)
		wantErrno(t, e, syscall.ENOENT)
	})
}

func TestMkdir(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
		arg    string
		ino    Ino
		errno  syscall.Errno
	}{
		{"ok", "/d", "new", 0, 0},
		{"exists dir", "/", "d", 0, syscall.EEXIST},
		{"exists file", "/", "f", 0, syscall.EEXIST},
		{"exists symlink", "/", "s", 0, syscall.EEXIST},
		{"dot", "/d", ".", 0, syscall.EEXIST},
		{"dotdot", "/d", "..", 0, syscall.EEXIST},
		{"parent missing", "/nope", "x", 0, syscall.ENOENT},
		{"parent is file", "/f", "x", 0, syscall.ENOTDIR},
		{"ino in use", "/", "x", RootIno, syscall.EINVAL},
		{"empty name", "/", "", 0, syscall.EINVAL},
		{"too long", "/", strings.Repeat("x", 256), 0, syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			ino := tc.ino
			if ino == 0 {
				ino = f.alloc()
			}
			parent, ok := m[tc.parent]
			if !ok {
				parent = 99999
			}
			var pBefore Attr
			if ok {
				pBefore, _ = f.GetAttr(parent)
			}
			a, e := f.Mkdir(parent, tc.arg, 0o750, 3, 4, ino, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				return
			}
			if a.Type != TypeDir || a.Nlink != 2 || a.Mode != 0o750 || a.Uid != 3 || a.Gid != 4 || a.Version != 1 {
				t.Fatalf("attr = %+v", a)
			}
			p := f.attr(parent)
			if p.Nlink != pBefore.Nlink+1 || p.Mtime != f.clock || p.Ctime != f.clock || p.Version <= pBefore.Version {
				t.Fatalf("parent %+v, before %+v", p, pBefore)
			}
			if up := f.lookup(ino, ".."); up != parent {
				t.Fatalf(".. = %d", up)
			}
			if in, d := f.Counts(); in != 10 || d != 5 {
				t.Fatalf("Counts = %d, %d", in, d)
			}
			f.roundTrip()
		})
	}
	t.Run("setgid parent", func(t *testing.T) {
		f, m := tree(t)
		_, _, e := f.SetAttr(m["/d"], SetAttrIn{Valid: SetMode | SetGid, Mode: 0o2775, Gid: 50}, f.now())
		mustOK(t, e)
		a, e := f.Mkdir(m["/d"], "g", 0o755, 7, 8, f.alloc(), f.now())
		mustOK(t, e)
		if a.Gid != 50 || a.Mode != 0o2755 {
			t.Fatalf("dir in setgid dir: %+v", a)
		}
	})
	t.Run("removed parent", func(t *testing.T) {
		f, _ := tree(t)
		g := removedOpenDir(t, f)
		_, e := f.Mkdir(g, "x", 0o755, 0, 0, f.alloc(), f.now())
		wantErrno(t, e, syscall.ENOENT)
	})
}

func TestSymlink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
		arg    string
		target string
		errno  syscall.Errno
	}{
		{"ok", "/d", "l", "../f", 0},
		{"max target", "/", "l", strings.Repeat("t", 4095), 0},
		{"target too long", "/", "l", strings.Repeat("t", 4096), syscall.ENAMETOOLONG},
		{"empty target", "/", "l", "", syscall.ENOENT},
		{"nul target", "/", "l", "a\x00", syscall.EINVAL},
		{"exists", "/", "f", "x", syscall.EEXIST},
		{"dot", "/", ".", "x", syscall.EEXIST},
		{"parent missing", "/nope", "l", "x", syscall.ENOENT},
		{"parent is file", "/f", "l", "x", syscall.ENOTDIR},
		{"name too long", "/", strings.Repeat("x", 256), "x", syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			parent, ok := m[tc.parent]
			if !ok {
				parent = 99999
			}
			a, e := f.Symlink(parent, tc.arg, tc.target, 2, 3, f.alloc(), f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				return
			}
			if a.Type != TypeSymlink || a.Mode != 0o777 || a.Size != uint64(len(tc.target)) || a.Nlink != 1 || a.Uid != 2 {
				t.Fatalf("attr = %+v", a)
			}
			got, e := f.Readlink(a.Ino)
			mustOK(t, e)
			if got != tc.target {
				t.Fatalf("Readlink = %q", got)
			}
			f.roundTrip()
		})
	}
}

func TestReadlink(t *testing.T) {
	f, m := tree(t)
	for _, tc := range []struct {
		name  string
		ino   Ino
		want  string
		errno syscall.Errno
	}{
		{"symlink", m["/s"], "target", 0},
		{"file", m["/f"], "", syscall.EINVAL},
		{"dir", m["/d"], "", syscall.EINVAL},
		{"missing", 99999, "", syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, e := f.Readlink(tc.ino)
			wantErrno(t, e, tc.errno)
			if got != tc.want {
				t.Fatalf("Readlink = %q", got)
			}
		})
	}
}

func TestLink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		src    string
		parent string
		arg    string
		errno  syscall.Errno
	}{
		{"file", "/f", "/d", "f2", 0},
		{"symlink", "/s", "/e", "s2", 0},
		{"fifo", "/p", "/", "p2", 0},
		{"third link", "/d/f", "/e", "f3", 0},
		{"dir", "/d", "/e", "d2", syscall.EPERM},
		{"exists", "/f", "/d", "f", syscall.EEXIST},
		{"exists dir is EEXIST before EPERM", "/d", "/", "e", syscall.EEXIST},
		{"dot", "/f", "/d", ".", syscall.EEXIST},
		{"dotdot", "/f", "/d", "..", syscall.EEXIST},
		{"source missing", "/nope", "/d", "x", syscall.ENOENT},
		{"parent missing", "/f", "/nope", "x", syscall.ENOENT},
		{"parent is file", "/f", "/f", "x", syscall.ENOTDIR},
		{"bad name", "/f", "/d", "a/b", syscall.EINVAL},
		{"too long", "/f", "/d", strings.Repeat("x", 256), syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			src, ok := m[tc.src]
			if !ok {
				src = 99999
			}
			parent, ok := m[tc.parent]
			if !ok {
				parent = 99998
			}
			var before Attr
			if src != 99999 {
				before = f.attr(src)
			}
			a, e := f.Link(src, parent, tc.arg, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				return
			}
			if a.Nlink != before.Nlink+1 || a.Ctime != f.clock || a.Mtime != before.Mtime || a.Version <= before.Version {
				t.Fatalf("attr %+v, before %+v", a, before)
			}
			if p := f.attr(parent); p.Mtime != f.clock || p.Ctime != f.clock {
				t.Fatalf("parent %+v", p)
			}
			if got := f.lookup(parent, tc.arg); got != src {
				t.Fatalf("lookup = %d", got)
			}
			f.roundTrip()
		})
	}
	t.Run("orphan", func(t *testing.T) {
		f, m := tree(t)
		mustOK(t, f.Open(m["/f"], 1, 1))
		_, e := f.Unlink(RootIno, "f", f.now())
		mustOK(t, e)
		_, e = f.Link(m["/f"], RootIno, "back", f.now())
		wantErrno(t, e, syscall.ENOENT)
	})
	t.Run("removed parent", func(t *testing.T) {
		f, m := tree(t)
		g := removedOpenDir(t, f)
		_, e := f.Link(m["/f"], g, "x", f.now())
		wantErrno(t, e, syscall.ENOENT)
	})
}

func TestUnlink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
		arg    string
		errno  syscall.Errno
		freed  bool
	}{
		{"file", "/", "f", 0, true},
		{"one of two links", "/", "h", 0, false},
		{"symlink", "/", "s", 0, true},
		{"fifo", "/", "p", 0, true},
		{"dir", "/", "d", syscall.EISDIR, false},
		{"dot", "/d", ".", syscall.EISDIR, false},
		{"dotdot", "/d", "..", syscall.EISDIR, false},
		{"missing", "/", "nope", syscall.ENOENT, false},
		{"parent missing", "/nope", "f", syscall.ENOENT, false},
		{"parent is file", "/f", "x", syscall.ENOTDIR, false},
		{"empty name", "/", "", syscall.EINVAL, false},
		{"too long", "/", strings.Repeat("x", 256), syscall.ENAMETOOLONG, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			parent, ok := m[tc.parent]
			if !ok {
				parent = 99999
			}
			path := strings.TrimSuffix(tc.parent, "/") + "/" + tc.arg
			ino := m[path]
			before := f.Digest()
			res, e := f.Unlink(parent, tc.arg, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				if f.Digest() != before {
					t.Fatal("failed Unlink changed the namespace")
				}
				return
			}
			if res.Ino != ino || res.Freed != tc.freed || res.Objects != nil {
				t.Fatalf("result %+v", res)
			}
			if _, e := f.Lookup(parent, tc.arg); e != syscall.ENOENT {
				t.Fatalf("Lookup after Unlink: %v", e)
			}
			if p := f.attr(parent); p.Mtime != f.clock || p.Ctime != f.clock {
				t.Fatalf("parent %+v", p)
			}
			if tc.freed {
				f.gone(ino)
			} else if a := f.attr(ino); a.Nlink != 1 || a.Ctime != f.clock {
				t.Fatalf("attr %+v", a)
			}
			f.roundTrip()
		})
	}
	t.Run("frees objects", func(t *testing.T) {
		f, m := tree(t)
		f.commit(m["/f"], 0, 0, 10, 30)
		f.commit(m["/f"], 0, 10, 10, 20)
		f.commit(m["/f"], 3, 0, 10, 10)
		res, e := f.Unlink(RootIno, "f", f.now())
		mustOK(t, e)
		if !res.Freed || !equal(res.Objects, []uint64{10, 20, 30}) {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("open file becomes orphan", func(t *testing.T) {
		f, m := tree(t)
		ino := m["/f"]
		f.commit(ino, 0, 0, 10, 30)
		mustOK(t, f.Open(ino, 1, 1))
		res, e := f.Unlink(RootIno, "f", f.now())
		mustOK(t, e)
		if res.Freed || res.Objects != nil {
			t.Fatalf("result %+v", res)
		}
		if a := f.attr(ino); a.Nlink != 0 || a.Size != 10 {
			t.Fatalf("orphan attr %+v", a)
		}
		if ss, e := f.Slices(ino, 0); e != 0 || len(ss) != 1 {
			t.Fatalf("orphan slices %v %v", ss, e)
		}
		f.roundTrip()
		cr, e := f.Close(1)
		mustOK(t, e)
		if !cr.Freed || !equal(cr.Inos, []Ino{ino}) || !equal(cr.Objects, []uint64{30}) {
			t.Fatalf("close %+v", cr)
		}
		f.gone(ino)
	})
}

func TestRmdir(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
		arg    string
		errno  syscall.Errno
	}{
		{"empty", "/", "e", 0},
		{"nested empty", "/d/sub", "", 0}, // filled in below
		{"not empty", "/", "d", syscall.ENOTEMPTY},
		{"file", "/", "f", syscall.ENOTDIR},
		{"symlink", "/", "s", syscall.ENOTDIR},
		{"dot", "/d", ".", syscall.EINVAL},
		{"dotdot", "/d", "..", syscall.ENOTEMPTY},
		{"root dot", "/", ".", syscall.EINVAL},
		{"missing", "/", "nope", syscall.ENOENT},
		{"parent missing", "/nope", "x", syscall.ENOENT},
		{"parent is file", "/f", "x", syscall.ENOTDIR},
		{"bad name", "/", "a/b", syscall.EINVAL},
		{"too long", "/", strings.Repeat("x", 256), syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			parent, ok := m[tc.parent]
			if !ok {
				parent = 99999
			}
			name := tc.arg
			if tc.name == "nested empty" {
				m["/d/sub/y"] = f.mkdir(parent, "y")
				name = "y"
			}
			child := m[strings.TrimSuffix(tc.parent, "/")+"/"+name]
			var pBefore Attr
			if ok {
				pBefore = f.attr(parent)
			}
			before := f.Digest()
			_, dirsBefore := f.Counts()
			e := f.Rmdir(parent, name, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				if f.Digest() != before {
					t.Fatal("failed Rmdir changed the namespace")
				}
				return
			}
			f.gone(child)
			p := f.attr(parent)
			if p.Nlink != pBefore.Nlink-1 || p.Mtime != f.clock || p.Ctime != f.clock {
				t.Fatalf("parent %+v, before %+v", p, pBefore)
			}
			if _, d := f.Counts(); d != dirsBefore-1 {
				t.Fatalf("dirs = %d", d)
			}
			f.roundTrip()
		})
	}
	t.Run("open dir stays until closed", func(t *testing.T) {
		f, _ := tree(t)
		g := removedOpenDir(t, f)
		if a := f.attr(g); a.Nlink != 0 || a.Type != TypeDir {
			t.Fatalf("attr %+v", a)
		}
		if ents, e := f.ReadDir(g, 0, 10); e != 0 || len(ents) != 0 {
			t.Fatalf("ReadDir = %v %v", ents, e)
		}
		f.roundTrip()
		res, e := f.Close(7)
		mustOK(t, e)
		if !res.Freed || !equal(res.Inos, []Ino{g}) {
			t.Fatalf("close %+v", res)
		}
		f.gone(g)
	})
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}
