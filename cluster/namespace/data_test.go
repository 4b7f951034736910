package namespace

import (
	"bytes"
	"syscall"
	"testing"
)

func TestCommitSlices(t *testing.T) {
	const bs = 4 << 20
	w := func(b uint64, off, n uint32, obj uint64) BlockWrite {
		return BlockWrite{Block: b, Slice: Slice{Off: off, Len: n, Object: obj}}
	}
	for _, tc := range []struct {
		name    string
		path    string
		writes  []BlockWrite
		newSize uint64
		errno   syscall.Errno
		size    uint64
		freed   []uint64
		blocks  map[uint64][]Slice
	}{
		{name: "one block", path: "/f", writes: []BlockWrite{w(0, 0, bs, 1)}, newSize: bs, size: bs,
			blocks: map[uint64][]Slice{0: {{Len: bs, Object: 1}}}},
		{name: "size from writes", path: "/f", writes: []BlockWrite{w(2, 10, 5, 1)}, newSize: 0, size: 2*bs + 15,
			blocks: map[uint64][]Slice{2: {{Off: 10, Len: 5, Object: 1}}}},
		{name: "size from newSize", path: "/f", writes: []BlockWrite{w(0, 0, 5, 1)}, newSize: 1000, size: 1000},
		{name: "size never shrinks", path: "/g", writes: []BlockWrite{w(0, 0, 5, 9)}, newSize: 5, size: 3 * bs},
		{name: "no writes", path: "/f", newSize: 7, size: 7},
		{name: "shadowed slice freed", path: "/g", writes: []BlockWrite{w(1, 0, bs, 9)}, size: 3 * bs, freed: []uint64{3},
			blocks: map[uint64][]Slice{
				0: {{Len: bs, Object: 1}},
				1: {{Len: bs, Object: 9}},
				2: {{Len: bs, Object: 4}},
			}},
		{name: "covered by two newer", path: "/g", writes: []BlockWrite{w(1, 0, 50, 9), w(1, 50, bs-50, 10)}, size: 3 * bs,
			freed: []uint64{3}, blocks: map[uint64][]Slice{1: {{Len: 50, Object: 9}, {Off: 50, Len: bs - 50, Object: 10}}}},
		{name: "partly shadowed kept", path: "/g", writes: []BlockWrite{w(1, 1, bs-1, 9)}, size: 3 * bs,
			blocks: map[uint64][]Slice{1: {{Len: bs, Object: 3}, {Off: 1, Len: bs - 1, Object: 9}}}},
		{name: "object still used elsewhere", path: "/g", writes: []BlockWrite{w(0, 0, bs, 4)}, size: 3 * bs, freed: []uint64{1},
			blocks: map[uint64][]Slice{0: {{Len: bs, Object: 4}}, 2: {{Len: bs, Object: 4}}}},
		{name: "empty slice", path: "/f", writes: []BlockWrite{w(0, 0, 0, 1)}, errno: syscall.EINVAL},
		{name: "past block", path: "/f", writes: []BlockWrite{w(0, 1, bs, 1)}, errno: syscall.EINVAL},
		{name: "past max size", path: "/f", writes: []BlockWrite{w(1<<62, 0, 1, 1)}, errno: syscall.EFBIG},
		{name: "newSize too big", path: "/f", newSize: 1 << 63, errno: syscall.EFBIG},
		{name: "dir", path: "/d", writes: []BlockWrite{w(0, 0, 1, 1)}, errno: syscall.EISDIR},
		{name: "symlink", path: "/s", writes: []BlockWrite{w(0, 0, 1, 1)}, errno: syscall.EINVAL},
		{name: "fifo", path: "/p", writes: []BlockWrite{w(0, 0, 1, 1)}, errno: syscall.EINVAL},
		{name: "missing", path: "/nope", writes: []BlockWrite{w(0, 0, 1, 1)}, errno: syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			// /g: three full blocks, block 1 written twice (objects 2 then 3).
			m["/g"] = f.create(RootIno, "g")
			f.commit(m["/g"], 0, 0, bs, 1)
			f.commit(m["/g"], 1, 0, bs, 2)
			if freed := f.commit(m["/g"], 1, 0, bs, 3); !equal(freed, []uint64{2}) {
				t.Fatalf("shadowed object 2 not freed: %v", freed)
			}
			f.commit(m["/g"], 2, 0, bs, 4)
			ino, ok := m[tc.path]
			if !ok {
				ino = 99999
			}
			var before Attr
			if ok {
				before = f.attr(ino)
			}
			digest := f.Digest()
			a, freed, e := f.CommitSlices(ino, tc.writes, tc.newSize, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				if f.Digest() != digest {
					t.Fatal("failed CommitSlices changed the namespace")
				}
				return
			}
			if a.Size != tc.size || a.Mtime != f.clock || a.Ctime != f.clock || a.Version != before.Version+1 {
				t.Fatalf("attr %+v, want size %d", a, tc.size)
			}
			if !equal(freed, tc.freed) {
				t.Fatalf("freed %v, want %v", freed, tc.freed)
			}
			for b, want := range tc.blocks {
				ss, e := f.Slices(ino, b)
				mustOK(t, e)
				if !equal(ss, want) {
					t.Fatalf("block %d = %+v, want %+v", b, ss, want)
				}
			}
			f.roundTrip()
		})
	}
}

func TestSlices(t *testing.T) {
	f, m := tree(t)
	f.commit(m["/f"], 3, 0, 10, 1)
	for _, tc := range []struct {
		name  string
		ino   Ino
		block uint64
		n     int
		errno syscall.Errno
	}{
		{"present", m["/f"], 3, 1, 0},
		{"hole", m["/f"], 2, 0, 0},
		{"no content", m["/d/f"], 0, 0, 0},
		{"dir", m["/d"], 0, 0, syscall.EISDIR},
		{"symlink", m["/s"], 0, 0, syscall.EINVAL},
		{"missing", 99999, 0, 0, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, e := f.Slices(tc.ino, tc.block)
			wantErrno(t, e, tc.errno)
			if len(ss) != tc.n {
				t.Fatalf("Slices = %v", ss)
			}
		})
	}
	t.Run("copy", func(t *testing.T) {
		ss, _ := f.Slices(m["/f"], 3)
		ss[0].Object = 77
		if ss2, _ := f.Slices(m["/f"], 3); ss2[0].Object != 1 {
			t.Fatal("Slices returned internal memory")
		}
	})
}

func TestInline(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		off   uint64
		data  string
		errno syscall.Errno
		want  string // inline data after
		size  uint64
	}{
		{"append", "/i", 5, "world", 0, "helloworld", 10},
		{"overwrite", "/i", 1, "EL", 0, "hELlo", 5},
		{"hole", "/i", 8, "x", 0, "hello\x00\x00\x00x", 9},
		{"at max", "/i", 16383, "x", 0, "", 16384},
		{"past max", "/i", 16383, "xy", syscall.EFBIG, "", 0},
		{"overflow", "/i", 1<<64 - 1, "xy", syscall.EFBIG, "", 0},
		{"empty", "/i", 100, "", 0, "hello", 5},
		{"file with slices", "/f", 0, "x", syscall.EINVAL, "", 0},
		{"dir", "/d", 0, "x", syscall.EISDIR, "", 0},
		{"symlink", "/s", 0, "x", syscall.EINVAL, "", 0},
		{"missing", "/nope", 0, "x", syscall.ENOENT, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			m["/i"] = f.create(RootIno, "i")
			_, e := f.WriteInline(m["/i"], 0, []byte("hello"), f.now())
			mustOK(t, e)
			f.commit(m["/f"], 0, 0, 1, 1)
			ino, ok := m[tc.path]
			if !ok {
				ino = 99999
			}
			digest := f.Digest()
			a, e := f.WriteInline(ino, tc.off, []byte(tc.data), f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				if f.Digest() != digest {
					t.Fatal("failed WriteInline changed the namespace")
				}
				return
			}
			got, e := f.ReadInline(ino)
			mustOK(t, e)
			if tc.want != "" && string(got) != tc.want || a.Size != tc.size || len(got) != int(tc.size) {
				t.Fatalf("inline %q size %d, want %q %d", got, a.Size, tc.want, tc.size)
			}
			f.roundTrip()
		})
	}
	t.Run("truncate", func(t *testing.T) {
		f, _ := tree(t)
		ino := f.create(RootIno, "i")
		_, e := f.WriteInline(ino, 0, []byte("hello"), f.now())
		mustOK(t, e)
		_, _, e = f.SetAttr(ino, SetAttrIn{Valid: SetSize, Size: 2}, f.now())
		mustOK(t, e)
		_, _, e = f.SetAttr(ino, SetAttrIn{Valid: SetSize, Size: 100}, f.now())
		mustOK(t, e)
		got, _ := f.ReadInline(ino)
		if string(got) != "he" {
			t.Fatalf("inline after truncate %q", got)
		}
		_, _, e = f.SetAttr(ino, SetAttrIn{Valid: SetSize, Size: 0}, f.now())
		mustOK(t, e)
		if got, _ := f.ReadInline(ino); len(got) != 0 || f.inodes[ino].ext != nil {
			t.Fatalf("inline after truncate to 0: %q", got)
		}
	})
	t.Run("covered by slices", func(t *testing.T) {
		f, _ := tree(t)
		ino := f.create(RootIno, "i")
		_, e := f.WriteInline(ino, 0, []byte("hello"), f.now())
		mustOK(t, e)
		f.commit(ino, 0, 1, 10, 1)
		if got, _ := f.ReadInline(ino); string(got) != "hello" {
			t.Fatalf("partly covered inline data dropped: %q", got)
		}
		f.commit(ino, 0, 0, 5, 2)
		if got, _ := f.ReadInline(ino); len(got) != 0 {
			t.Fatalf("covered inline data kept: %q", got)
		}
		if a := f.attr(ino); a.Size != 11 {
			t.Fatalf("size %d", a.Size)
		}
	})
	t.Run("read errors and copy", func(t *testing.T) {
		f, m := tree(t)
		_, e := f.ReadInline(m["/d"])
		wantErrno(t, e, syscall.EISDIR)
		_, e = f.ReadInline(m["/p"])
		wantErrno(t, e, syscall.EINVAL)
		_, e = f.ReadInline(99999)
		wantErrno(t, e, syscall.ENOENT)
		data := []byte("abc")
		_, e = f.WriteInline(m["/f"], 0, data, f.now())
		mustOK(t, e)
		data[0] = 'X'
		got, _ := f.ReadInline(m["/f"])
		got[1] = 'Y'
		if got2, _ := f.ReadInline(m["/f"]); !bytes.Equal(got2, []byte("abc")) {
			t.Fatalf("inline data aliased: %q", got2)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		l := DefaultLimits()
		l.InlineMax = 0
		n, err := NewWithLimits(l, 0o755, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, e := n.Create(RootIno, "f", TypeFile, 0o644, 0, 0, 0, 2, 1, true)
		mustOK(t, e)
		_, e = n.WriteInline(2, 0, []byte("x"), 2)
		wantErrno(t, e, syscall.EFBIG)
	})
}
