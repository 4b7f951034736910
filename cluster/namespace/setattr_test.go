package namespace

import (
	"syscall"
	"testing"
)

func TestSetAttr(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		in    SetAttrIn
		errno syscall.Errno
		check func(t *testing.T, f *tfs, a, before Attr, freed []uint64)
	}{
		{"chmod", "/f", SetAttrIn{Valid: SetMode, Mode: syscall.S_IFDIR | 0o4711}, 0, func(t *testing.T, f *tfs, a, before Attr, _ []uint64) {
			if a.Mode != 0o4711 || a.Type != TypeFile || a.FullMode() != syscall.S_IFREG|0o4711 {
				t.Fatalf("attr %+v", a)
			}
			if a.Ctime != f.clock || a.Mtime != before.Mtime {
				t.Fatalf("times %+v", a)
			}
		}},
		{"chmod dir", "/d", SetAttrIn{Valid: SetMode, Mode: 0o1777}, 0, func(t *testing.T, f *tfs, a, _ Attr, _ []uint64) {
			if a.Mode != 0o1777 || a.Type != TypeDir {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"chown", "/f", SetAttrIn{Valid: SetUid | SetGid, Uid: 10, Gid: 20}, 0, func(t *testing.T, f *tfs, a, _ Attr, _ []uint64) {
			if a.Uid != 10 || a.Gid != 20 || a.Ctime != f.clock {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"chgrp only", "/f", SetAttrIn{Valid: SetGid, Gid: 20}, 0, func(t *testing.T, f *tfs, a, before Attr, _ []uint64) {
			if a.Uid != before.Uid || a.Gid != 20 {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"truncate grow", "/f", SetAttrIn{Valid: SetSize, Size: 1 << 40}, 0, func(t *testing.T, f *tfs, a, _ Attr, freed []uint64) {
			if a.Size != 1<<40 || a.Mtime != f.clock || a.Ctime != f.clock || freed != nil {
				t.Fatalf("attr %+v freed %v", a, freed)
			}
		}},
		{"truncate same size sets times", "/f", SetAttrIn{Valid: SetSize, Size: 0}, 0, func(t *testing.T, f *tfs, a, _ Attr, _ []uint64) {
			if a.Mtime != f.clock || a.Ctime != f.clock {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"truncate dir", "/d", SetAttrIn{Valid: SetSize}, syscall.EISDIR, nil},
		{"truncate symlink", "/s", SetAttrIn{Valid: SetSize}, syscall.EINVAL, nil},
		{"truncate fifo", "/p", SetAttrIn{Valid: SetSize}, syscall.EINVAL, nil},
		{"truncate too big", "/f", SetAttrIn{Valid: SetSize, Size: 1 << 63}, syscall.EFBIG, nil},
		{"explicit times", "/f", SetAttrIn{Valid: SetAtime | SetMtime, Atime: 5, Mtime: 6}, 0, func(t *testing.T, f *tfs, a, _ Attr, _ []uint64) {
			if a.Atime != 5 || a.Mtime != 6 || a.Ctime != f.clock {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"times now", "/f", SetAttrIn{Valid: SetAtime | SetAtimeNow | SetMtimeNow, Atime: 5}, 0, func(t *testing.T, f *tfs, a, _ Attr, _ []uint64) {
			if a.Atime != f.clock || a.Mtime != f.clock {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"explicit ctime", "/f", SetAttrIn{Valid: SetCtime | SetMode, Ctime: 77, Mode: 0o600}, 0, func(t *testing.T, f *tfs, a, _ Attr, _ []uint64) {
			if a.Ctime != 77 {
				t.Fatalf("attr %+v", a)
			}
		}},
		{"nothing", "/f", SetAttrIn{}, 0, func(t *testing.T, f *tfs, a, before Attr, _ []uint64) {
			if a != before {
				t.Fatalf("attr %+v, before %+v", a, before)
			}
		}},
		{"unknown bit", "/f", SetAttrIn{Valid: 1 << 20}, syscall.EINVAL, nil},
		{"missing", "/nope", SetAttrIn{Valid: SetMode}, syscall.ENOENT, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			ino, ok := m[tc.path]
			if !ok {
				ino = 99999
			}
			var before Attr
			if ok {
				before = f.attr(ino)
			}
			digest := f.Digest()
			a, freed, e := f.SetAttr(ino, tc.in, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				if f.Digest() != digest {
					t.Fatal("failed SetAttr changed the namespace")
				}
				return
			}
			if got := f.attr(ino); got != a {
				t.Fatalf("returned %+v, GetAttr %+v", a, got)
			}
			if tc.in.Valid != 0 && a.Version != before.Version+1 {
				t.Fatalf("version %d, before %d", a.Version, before.Version)
			}
			tc.check(t, f, a, before, freed)
			f.roundTrip()
		})
	}
}

func TestSetAttrKillSuid(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string
		mode uint32
		in   SetAttrIn
		want uint32
	}{
		{"chown clears setuid", "/f", 0o4755, SetAttrIn{Valid: SetUid, Uid: 9}, 0o755},
		{"chown clears setgid with group exec", "/f", 0o6755, SetAttrIn{Valid: SetGid, Gid: 9}, 0o755},
		{"chown keeps setgid without group exec", "/f", 0o2745, SetAttrIn{Valid: SetUid, Uid: 9}, 0o2745},
		{"chown with mode keeps the mode", "/f", 0o4755, SetAttrIn{Valid: SetUid | SetMode, Uid: 9, Mode: 0o4711}, 0o4711},
		{"chown dir keeps setgid", "/d", 0o2775, SetAttrIn{Valid: SetUid | SetGid, Uid: 9}, 0o2775},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			_, _, e := f.SetAttr(m[tc.path], SetAttrIn{Valid: SetMode, Mode: tc.mode}, f.now())
			mustOK(t, e)
			a, _, e := f.SetAttr(m[tc.path], tc.in, f.now())
			mustOK(t, e)
			if a.Mode != tc.want {
				t.Fatalf("mode %o, want %o", a.Mode, tc.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	const bs = 4 << 20
	// setup: block 0 has [0,100) obj 1 and [50,150) obj 2; block 1 has
	// [0,10) obj 3; block 2 has [0,bs) obj 4 and [10,20) obj 1 (one object
	// referenced from two blocks).
	setup := func(t *testing.T) (*tfs, Ino) {
		f, m := tree(t)
		ino := m["/f"]
		f.commit(ino, 0, 0, 100, 1)
		f.commit(ino, 0, 50, 100, 2)
		f.commit(ino, 1, 0, 10, 3)
		f.commit(ino, 2, 0, bs, 4)
		f.commit(ino, 2, 10, 10, 1)
		return f, ino
	}
	for _, tc := range []struct {
		name   string
		size   uint64
		freed  []uint64
		blocks map[uint64][]Slice
	}{
		{"to zero", 0, []uint64{1, 2, 3, 4}, map[uint64][]Slice{}},
		{"inside block 0", 60, []uint64{3, 4}, map[uint64][]Slice{
			0: {{Off: 0, Len: 60, Object: 1}, {Off: 50, Len: 10, Object: 2}},
		}},
		{"before slice 2", 50, []uint64{2, 3, 4}, map[uint64][]Slice{0: {{Off: 0, Len: 50, Object: 1}}}},
		{"at block boundary", bs, []uint64{3, 4}, map[uint64][]Slice{
			0: {{Off: 0, Len: 100, Object: 1}, {Off: 50, Len: 100, Object: 2}},
		}},
		{"inside block 2 keeps shared object", 2*bs + 15, nil, map[uint64][]Slice{
			0: {{Off: 0, Len: 100, Object: 1}, {Off: 50, Len: 100, Object: 2}},
			1: {{Off: 0, Len: 10, Object: 3}},
			2: {{Off: 0, Len: 15, Object: 4}, {Off: 10, Len: 5, Object: 1}},
		}},
		{"grow", 1 << 40, nil, map[uint64][]Slice{
			0: {{Off: 0, Len: 100, Object: 1}, {Off: 50, Len: 100, Object: 2}},
			1: {{Off: 0, Len: 10, Object: 3}},
			2: {{Off: 0, Len: bs, Object: 4}, {Off: 10, Len: 10, Object: 1}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ino := setup(t)
			a, freed, e := f.SetAttr(ino, SetAttrIn{Valid: SetSize, Size: tc.size}, f.now())
			mustOK(t, e)
			if a.Size != tc.size || !equal(freed, tc.freed) {
				t.Fatalf("size %d freed %v, want %v", a.Size, freed, tc.freed)
			}
			for b := uint64(0); b < 4; b++ {
				ss, e := f.Slices(ino, b)
				mustOK(t, e)
				if !equal(ss, tc.blocks[b]) {
					t.Fatalf("block %d = %v, want %v", b, ss, tc.blocks[b])
				}
			}
			f.roundTrip()
			// What is left is freed with the inode.
			res, e := f.Unlink(RootIno, "f", f.now())
			mustOK(t, e)
			all := append(append([]uint64{}, tc.freed...), res.Objects...)
			if len(all) != 4 {
				t.Fatalf("freed %v then %v", tc.freed, res.Objects)
			}
		})
	}
}
