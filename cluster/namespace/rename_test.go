package namespace

import (
	"strings"
	"syscall"
	"testing"
)

func TestRename(t *testing.T) {
	type check func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult)
	// nlinks checks the link counts of the given paths (as they were in m).
	nlinks := func(want map[string]uint32) check {
		return func(t *testing.T, f *tfs, m map[string]Ino, _ RenameResult) {
			t.Helper()
			for p, n := range want {
				if a := f.attr(m[p]); a.Nlink != n {
					t.Errorf("nlink of %s = %d, want %d", p, a.Nlink, n)
				}
			}
		}
	}
	for _, tc := range []struct {
		name            string
		setup           func(t *testing.T, f *tfs, m map[string]Ino)
		oldDir, oldName string
		newDir, newName string
		flags           uint32
		errno           syscall.Errno
		moved           string // path (in m) now found at newDir/newName
		check           check
	}{
		{name: "file same dir", oldDir: "/", oldName: "f", newDir: "/", newName: "g", moved: "/f",
			check: nlinks(map[string]uint32{"/": 4, "/f": 1})},
		{name: "file other dir", oldDir: "/", oldName: "f", newDir: "/d/sub", newName: "f", moved: "/f",
			check: nlinks(map[string]uint32{"/": 4, "/d/sub": 2})},
		{name: "file over file", oldDir: "/", oldName: "f", newDir: "/d/sub", newName: "x", moved: "/f",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if res.Replaced != m["/d/sub/x"] || !res.Freed || !equal(res.Objects, []uint64{5}) {
					t.Fatalf("result %+v", res)
				}
				f.gone(m["/d/sub/x"])
			}},
		{name: "file over open file", oldDir: "/", oldName: "f", newDir: "/d/sub", newName: "x", moved: "/f",
			setup: func(t *testing.T, f *tfs, m map[string]Ino) { mustOK(t, f.Open(m["/d/sub/x"], 9, 1)) },
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if res.Replaced != m["/d/sub/x"] || res.Freed || res.Objects != nil {
					t.Fatalf("result %+v", res)
				}
				if a := f.attr(m["/d/sub/x"]); a.Nlink != 0 || a.Ctime != f.clock {
					t.Fatalf("orphan %+v", a)
				}
			}},
		{name: "file over hard-linked file", oldDir: "/", oldName: "f", newDir: "/", newName: "h", moved: "/f",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if res.Replaced != m["/h"] || res.Freed {
					t.Fatalf("result %+v", res)
				}
				if a := f.attr(m["/d/f"]); a.Nlink != 1 || a.Ctime != f.clock {
					t.Fatalf("other link %+v", a)
				}
			}},
		{name: "symlink over fifo", oldDir: "/", oldName: "s", newDir: "/", newName: "p", moved: "/s"},
		{name: "dir same dir", oldDir: "/", oldName: "d", newDir: "/", newName: "dd", moved: "/d",
			check: nlinks(map[string]uint32{"/": 4, "/d": 3})},
		{name: "dir other dir", oldDir: "/d", oldName: "sub", newDir: "/e", newName: "sub", moved: "/d/sub",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				nlinks(map[string]uint32{"/d": 2, "/e": 3, "/d/sub": 2})(t, f, m, res)
				if up := f.lookup(m["/d/sub"], ".."); up != m["/e"] {
					t.Fatalf(".. = %d", up)
				}
			}},
		{name: "dir up", oldDir: "/d", oldName: "sub", newDir: "/", newName: "top", moved: "/d/sub",
			check: nlinks(map[string]uint32{"/": 5, "/d": 2})},
		{name: "dir over empty dir", oldDir: "/d", oldName: "sub", newDir: "/", newName: "e", moved: "/d/sub",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if res.Replaced != m["/e"] || !res.Freed {
					t.Fatalf("result %+v", res)
				}
				f.gone(m["/e"])
				nlinks(map[string]uint32{"/": 4, "/d": 2})(t, f, m, res)
				if _, d := f.Counts(); d != 3 {
					t.Fatalf("dirs = %d", d)
				}
			}},
		{name: "dir over empty sibling", oldDir: "/", oldName: "d", newDir: "/", newName: "e", moved: "/d",
			check: nlinks(map[string]uint32{"/": 3})},
		{name: "dir over open empty dir", oldDir: "/d", oldName: "sub", newDir: "/", newName: "e", moved: "/d/sub",
			setup: func(t *testing.T, f *tfs, m map[string]Ino) { mustOK(t, f.Open(m["/e"], 9, 1)) },
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if res.Freed {
					t.Fatalf("result %+v", res)
				}
				if a := f.attr(m["/e"]); a.Nlink != 0 {
					t.Fatalf("orphan dir %+v", a)
				}
				if _, e := f.Lookup(m["/e"], ".."); e != syscall.ENOENT {
					t.Fatalf("Lookup(..) in removed dir: %v", e)
				}
			}},
		{name: "dir over non-empty dir", oldDir: "/", oldName: "e", newDir: "/", newName: "d", errno: syscall.ENOTEMPTY},
		{name: "dir over file", oldDir: "/", oldName: "e", newDir: "/", newName: "f", errno: syscall.ENOTDIR},
		{name: "file over dir", oldDir: "/", oldName: "f", newDir: "/", newName: "e", errno: syscall.EISDIR},
		{name: "symlink over dir", oldDir: "/", oldName: "s", newDir: "/", newName: "e", errno: syscall.EISDIR},
		{name: "dir into itself", oldDir: "/", oldName: "d", newDir: "/d", newName: "x", errno: syscall.EINVAL},
		{name: "dir into own subtree", oldDir: "/", oldName: "d", newDir: "/d/sub", newName: "x", errno: syscall.EINVAL},
		{name: "dir over own child", oldDir: "/", oldName: "d", newDir: "/d", newName: "sub", errno: syscall.EINVAL},
		{name: "over ancestor of source", oldDir: "/d/sub", oldName: "x", newDir: "/", newName: "d", errno: syscall.ENOTEMPTY},
		{name: "dir over ancestor of source", oldDir: "/d", oldName: "sub", newDir: "/", newName: "d", errno: syscall.ENOTEMPTY},
		{name: "hard links of one inode", oldDir: "/", oldName: "h", newDir: "/d", newName: "f",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if f.lookup(RootIno, "h") != m["/h"] || f.lookup(m["/d"], "f") != m["/h"] {
					t.Fatal("names changed")
				}
				nlinks(map[string]uint32{"/h": 2})(t, f, m, res)
			}},
		{name: "same name", oldDir: "/", oldName: "d", newDir: "/", newName: "d"},
		{name: "noreplace free", oldDir: "/", oldName: "f", newDir: "/", newName: "g", flags: RenameNoReplace, moved: "/f"},
		{name: "noreplace exists", oldDir: "/", oldName: "f", newDir: "/", newName: "p", flags: RenameNoReplace, errno: syscall.EEXIST},
		{name: "noreplace same inode", oldDir: "/", oldName: "h", newDir: "/d", newName: "f", flags: RenameNoReplace, errno: syscall.EEXIST},
		{name: "exchange files", oldDir: "/", oldName: "f", newDir: "/d", newName: "f", flags: RenameExchange, moved: "/f",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if f.lookup(RootIno, "f") != m["/d/f"] {
					t.Fatal("old name not exchanged")
				}
				for _, p := range []string{"/f", "/d/f"} {
					if a := f.attr(m[p]); a.Ctime != f.clock {
						t.Fatalf("%s ctime %d", p, a.Ctime)
					}
				}
			}},
		{name: "exchange file and dir", oldDir: "/d", oldName: "f", newDir: "/", newName: "e", flags: RenameExchange, moved: "/d/f",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if f.lookup(m["/d"], "f") != m["/e"] || f.lookup(m["/e"], "..") != m["/d"] {
					t.Fatal("dir not moved to /d/f")
				}
				nlinks(map[string]uint32{"/": 3, "/d": 4, "/e": 2, "/d/f": 2})(t, f, m, res)
			}},
		{name: "exchange dirs", oldDir: "/d", oldName: "sub", newDir: "/", newName: "e", flags: RenameExchange, moved: "/d/sub",
			check: func(t *testing.T, f *tfs, m map[string]Ino, res RenameResult) {
				if f.lookup(m["/d/sub"], "..") != RootIno || f.lookup(m["/e"], "..") != m["/d"] {
					t.Fatal("parents not exchanged")
				}
				nlinks(map[string]uint32{"/": 4, "/d": 3})(t, f, m, res)
			}},
		{name: "exchange missing target", oldDir: "/", oldName: "f", newDir: "/", newName: "nope", flags: RenameExchange, errno: syscall.ENOENT},
		{name: "exchange with ancestor", oldDir: "/d", oldName: "sub", newDir: "/", newName: "d", flags: RenameExchange, errno: syscall.EINVAL},
		{name: "exchange into own subtree", oldDir: "/", oldName: "d", newDir: "/d/sub", newName: "x", flags: RenameExchange, errno: syscall.EINVAL},
		{name: "exchange same inode", oldDir: "/", oldName: "h", newDir: "/d", newName: "f", flags: RenameExchange},
		{name: "both flags", oldDir: "/", oldName: "f", newDir: "/", newName: "g", flags: RenameNoReplace | RenameExchange, errno: syscall.EINVAL},
		{name: "unknown flag", oldDir: "/", oldName: "f", newDir: "/", newName: "g", flags: 4, errno: syscall.EINVAL},
		{name: "source missing", oldDir: "/", oldName: "nope", newDir: "/", newName: "g", errno: syscall.ENOENT},
		{name: "old parent missing", oldDir: "/nope", oldName: "f", newDir: "/", newName: "g", errno: syscall.ENOENT},
		{name: "new parent missing", oldDir: "/", oldName: "f", newDir: "/nope", newName: "g", errno: syscall.ENOENT},
		{name: "old parent is file", oldDir: "/f", oldName: "x", newDir: "/", newName: "g", errno: syscall.ENOTDIR},
		{name: "new parent is file", oldDir: "/", oldName: "p", newDir: "/f", newName: "g", errno: syscall.ENOTDIR},
		{name: "old dot", oldDir: "/d", oldName: ".", newDir: "/", newName: "g", errno: syscall.EBUSY},
		{name: "old dotdot", oldDir: "/d", oldName: "..", newDir: "/", newName: "g", errno: syscall.EBUSY},
		{name: "new dot", oldDir: "/", oldName: "f", newDir: "/d", newName: ".", errno: syscall.EBUSY},
		{name: "new dotdot noreplace", oldDir: "/", oldName: "f", newDir: "/d", newName: "..", flags: RenameNoReplace, errno: syscall.EEXIST},
		{name: "old bad name", oldDir: "/", oldName: "a/b", newDir: "/", newName: "g", errno: syscall.EINVAL},
		{name: "new empty name", oldDir: "/", oldName: "f", newDir: "/", newName: "", errno: syscall.EINVAL},
		{name: "new too long", oldDir: "/", oldName: "f", newDir: "/", newName: strings.Repeat("x", 256), errno: syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			f.commit(m["/d/sub/x"], 0, 0, 100, 5)
			if tc.setup != nil {
				tc.setup(t, f, m)
			}
			dir := func(p string) Ino {
				if ino, ok := m[p]; ok {
					return ino
				}
				return 99999
			}
			od, nd := dir(tc.oldDir), dir(tc.newDir)
			var odBefore, ndBefore, movedBefore Attr
			if tc.errno == 0 {
				odBefore, ndBefore = f.attr(od), f.attr(nd)
				if tc.moved != "" {
					movedBefore = f.attr(m[tc.moved])
				}
			}
			before := f.Digest()
			res, e := f.Rename(od, tc.oldName, nd, tc.newName, tc.flags, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 || tc.moved == "" {
				if f.Digest() != before {
					t.Fatal("failed or no-op Rename changed the namespace")
				}
				if tc.check != nil {
					tc.check(t, f, m, res)
				}
				return
			}
			if got := f.lookup(nd, tc.newName); got != m[tc.moved] {
				t.Fatalf("%s/%s = %d, want %d", tc.newDir, tc.newName, got, m[tc.moved])
			}
			if tc.oldName != tc.newName || od != nd {
				if _, e := f.Lookup(od, tc.oldName); e != syscall.ENOENT && tc.flags&RenameExchange == 0 {
					t.Fatalf("old name still there: %v", e)
				}
			}
			same := od == nd && tc.oldName == tc.newName
			if !same {
				a := f.attr(m[tc.moved])
				if a.Ctime != f.clock || a.Mtime != movedBefore.Mtime || a.Version <= movedBefore.Version {
					t.Fatalf("moved %+v, before %+v", a, movedBefore)
				}
				for _, p := range []struct {
					ino    Ino
					before Attr
				}{{od, odBefore}, {nd, ndBefore}} {
					a := f.attr(p.ino)
					if a.Mtime != f.clock || a.Ctime != f.clock || a.Version <= p.before.Version {
						t.Fatalf("parent %+v, before %+v", a, p.before)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, f, m, res)
			}
			f.roundTrip()
		})
	}
	t.Run("into removed dir", func(t *testing.T) {
		f, _ := tree(t)
		g := removedOpenDir(t, f)
		_, e := f.Rename(RootIno, "f", g, "f", 0, f.now())
		wantErrno(t, e, syscall.ENOENT)
	})
}
