package namespace

import (
	"bytes"
	"errors"
	"testing"
)

// rich builds a namespace using every feature the snapshot must keep.
func rich(t testing.TB) *tfs {
	l := DefaultLimits()
	l.BlockSize = 1 << 16
	l.InlineMax = 100
	n, err := NewWithLimits(l, 0o2775, 3, 4, t0)
	if err != nil {
		t.Fatal(err)
	}
	f := &tfs{Namespace: n, t: t, next: 100, clock: t0}
	d := f.mkdir(RootIno, "dir")
	sub := f.mkdir(d, "sub")
	for k := range 20 { // past smallDir: indexed
		f.create(sub, string(rune('a'+k)))
	}
	for k := range 5 { // tombstones
		_, e := f.Unlink(sub, string(rune('a'+2*k)), f.now())
		mustOK(t, e)
	}
	file := f.create(d, "file")
	f.commit(file, 0, 0, 1<<16, 10)
	f.commit(file, 0, 100, 50, 11)
	f.commit(file, 7, 5, 5, 12)
	inl := f.create(RootIno, "inline")
	_, e := f.WriteInline(inl, 3, []byte("data"), f.now())
	mustOK(t, e)
	mustOK(t, f.SetXattr(inl, "user.b", []byte("2"), 0, f.now()))
	mustOK(t, f.SetXattr(inl, "user.a", nil, 0, f.now()))
	_, e = f.Link(inl, sub, "inl2", f.now())
	mustOK(t, e)
	_, e = f.Symlink(d, "link", "../inline", 5, 6, f.alloc(), f.now())
	mustOK(t, e)
	_, e = f.Create(RootIno, "tty", TypeChar, 0o620, 0, 5, 0x0501, f.alloc(), f.now(), true)
	mustOK(t, e)
	_, e = f.Create(RootIno, "sock", TypeSocket, 0o600, 0, 5, 0, f.alloc(), f.now(), true)
	mustOK(t, e)
	// An orphan file with content and an orphan directory.
	orphan := f.create(RootIno, "orphan")
	f.commit(orphan, 1, 0, 10, 20)
	mustOK(t, f.Open(orphan, 100, 1))
	mustOK(t, f.Open(orphan, 101, 2))
	_, e = f.Unlink(RootIno, "orphan", f.now())
	mustOK(t, e)
	od := f.mkdir(RootIno, "odir")
	mustOK(t, f.Open(od, 200, 2))
	mustOK(t, f.Rmdir(RootIno, "odir", f.now()))
	mustOK(t, f.Open(file, 300, 3))
	_, _, e = f.SetAttr(file, SetAttrIn{Valid: SetAtime, Atime: -5}, f.now())
	mustOK(t, e)
	return f
}

func TestSnapshotRoundTrip(t *testing.T) {
	f := rich(t)
	c := f.roundTrip()
	if c.Limits() != f.Limits() {
		t.Fatalf("limits %+v, want %+v", c.Limits(), f.Limits())
	}
	ci, cd := c.Counts()
	fi, fd := f.Counts()
	if ci != fi || cd != fd {
		t.Fatalf("Counts %d %d, want %d %d", ci, cd, fi, fd)
	}
	// The copy behaves the same: apply the same operations to both.
	g := &tfs{Namespace: c, t: t, next: f.next, clock: f.clock}
	for _, x := range []*tfs{f, g} {
		sub := x.lookup(x.lookup(RootIno, "dir"), "sub")
		x.create(sub, "new")
		_, e := x.Unlink(sub, "b", x.now())
		mustOK(t, e)
		res := x.CloseSession(2)
		if !res.Freed || len(res.Inos) != 1 {
			t.Fatalf("CloseSession(2) = %+v", res)
		}
		cr, e := x.Close(100)
		mustOK(t, e)
		if !cr.Freed || !equal(cr.Objects, []uint64{20}) {
			t.Fatalf("Close(100) = %+v", cr)
		}
		_, e = x.Rename(RootIno, "inline", sub, "c", 0, x.now())
		mustOK(t, e)
	}
	if f.Digest() != g.Digest() {
		t.Fatal("restored namespace diverged")
	}
	if names := g.names(g.lookup(g.lookup(RootIno, "dir"), "sub")); len(names) != 17 {
		t.Fatalf("sub = %q", names)
	}
}

func snapshot(t testing.TB, n *Namespace) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := n.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReadTruncatedAndGarbage(t *testing.T) {
	snap := snapshot(t, rich(t).Namespace)
	for k := range len(snap) {
		if _, err := Read(bytes.NewReader(snap[:k])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d/%d bytes: err %v", k, len(snap), err)
		}
	}
	if _, err := Read(bytes.NewReader(append(snap, 0))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	// Flipping any byte gives an error or a consistent namespace.
	for k := range snap {
		for _, x := range []byte{1, 0x80, 0xff} {
			c := bytes.Clone(snap)
			c[k] ^= x
			if n, err := Read(bytes.NewReader(c)); err == nil {
				if err := n.check(); err != nil {
					t.Fatalf("byte %d ^ %#x: accepted an inconsistent namespace: %v", k, x, err)
				}
			}
		}
	}
}

// TestReadInconsistent breaks an invariant in memory, writes the snapshot
// and checks that Read refuses it.
func TestReadInconsistent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(f *tfs, m map[string]Ino)
	}{
		{"nlink of file", func(f *tfs, m map[string]Ino) { f.inodes[m["/f"]].nlink = 2 }},
		{"nlink of dir", func(f *tfs, m map[string]Ino) { f.inodes[m["/d"]].nlink = 2 }},
		{"dangling entry", func(f *tfs, m map[string]Ino) { delete(f.inodes, m["/f"]) }},
		{"orphan without handle", func(f *tfs, m map[string]Ino) {
			f.inodes[m["/f"]].nlink = 0
			f.inodes[RootIno].ext.dir.remove("f")
		}},
		{"no root", func(f *tfs, m map[string]Ino) {
			f.inodes[99] = f.inodes[RootIno]
			delete(f.inodes, RootIno)
		}},
		{"root is a file", func(f *tfs, m map[string]Ino) { f.inodes[RootIno] = f.inodes[m["/f"]] }},
		{"wrong parent", func(f *tfs, m map[string]Ino) { f.inodes[m["/d/sub"]].ext.dir.parent = RootIno }},
		{"dir linked twice", func(f *tfs, m map[string]Ino) { f.inodes[m["/e"]].ext.dir.add("again", m["/d"]) }},
		{"entry to root", func(f *tfs, m map[string]Ino) { f.inodes[m["/e"]].ext.dir.add("root", RootIno) }},
		{"cycle", func(f *tfs, m map[string]Ino) {
			// Detach /d/sub and /e and link them to each other.
			f.inodes[m["/d"]].ext.dir.remove("sub")
			f.inodes[m["/d"]].nlink--
			f.inodes[RootIno].ext.dir.remove("e")
			f.inodes[RootIno].nlink--
			f.inodes[m["/d/sub"]].ext.dir.add("e", m["/e"])
			f.inodes[m["/d/sub"]].nlink++
			f.inodes[m["/e"]].ext.dir.add("sub", m["/d/sub"])
			f.inodes[m["/e"]].nlink++
			f.inodes[m["/e"]].ext.dir.parent = m["/d/sub"]
			f.inodes[m["/d/sub"]].ext.dir.parent = m["/e"]
		}},
		{"duplicate name", func(f *tfs, m map[string]Ino) {
			d := f.inodes[RootIno].ext.dir
			d.ents = append(d.ents, dentry{name: "f", ino: m["/f"], cookie: d.next})
			d.next++
			f.inodes[m["/f"]].nlink++
		}},
		{"bad name", func(f *tfs, m map[string]Ino) {
			f.inodes[RootIno].ext.dir.add("a/b", m["/f"])
			f.inodes[m["/f"]].nlink++
		}},
		{"cookie past counter", func(f *tfs, m map[string]Ino) { f.inodes[RootIno].ext.dir.next = 4 }},
		{"slice past size", func(f *tfs, m map[string]Ino) { f.inodes[m["/g"]].size = 5 }},
		{"inline past size", func(f *tfs, m map[string]Ino) { f.inodes[m["/i"]].size = 1 }},
		{"xattrs unsorted", func(f *tfs, m map[string]Ino) {
			x := f.inodes[m["/f"]].ext.xattrs
			x[0], x[1] = x[1], x[0]
		}},
		{"symlink size", func(f *tfs, m map[string]Ino) { f.inodes[m["/s"]].size = 1 }},
		{"rdev on file", func(f *tfs, m map[string]Ino) { f.inodes[m["/f"]].getExt().rdev = 1 }},
		{"content on fifo", func(f *tfs, m map[string]Ino) { f.inodes[m["/p"]].getFile().inline = []byte("x") }},
		{"removed dir with parent", func(f *tfs, m map[string]Ino) {
			g := removedOpenDir(f.t.(*testing.T), f)
			f.inodes[g].ext.dir.parent = RootIno
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			mustOK(t, f.SetXattr(m["/f"], "user.a", nil, 0, f.now()))
			mustOK(t, f.SetXattr(m["/f"], "user.b", nil, 0, f.now()))
			m["/g"] = f.create(RootIno, "g")
			f.commit(m["/g"], 0, 0, 10, 1)
			m["/i"] = f.create(RootIno, "i")
			_, e := f.WriteInline(m["/i"], 0, []byte("abc"), f.now())
			mustOK(t, e)
			f.roundTrip()
			tc.mutate(f, m)
			if _, err := Read(bytes.NewReader(snapshot(t, f.Namespace))); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Read = %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte{})
	f.Add(snapMagic)
	f.Add(snapshot(f, New(0o755, 0, 0, 0)))
	f.Add(snapshot(f, rich(f).Namespace))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Read(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		// Whatever was accepted is consistent, re-encodes canonically and
		// survives some operations.
		if err := n.check(); err != nil {
			t.Fatal(err)
		}
		snap := snapshot(t, n)
		m, err := Read(bytes.NewReader(snap))
		if err != nil || !bytes.Equal(snapshot(t, m), snap) {
			t.Fatalf("re-encoding: %v", err)
		}
		n.CloseSession(1)
		n.Create(RootIno, "fuzz", TypeFile, 0o644, 0, 0, 0, 1<<60, 1, true)
		n.Rename(RootIno, "fuzz", RootIno, "a", 0, 2)
		n.ReadDir(RootIno, 0, 100)
	})
}
