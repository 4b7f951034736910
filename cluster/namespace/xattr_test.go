package namespace

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
)

func TestSetXattr(t *testing.T) {
	big := make([]byte, 65536)
	for _, tc := range []struct {
		name  string
		path  string
		attr  string
		value []byte
		flags uint32
		errno syscall.Errno
	}{
		{"new", "/f", "user.b", []byte("v"), 0, 0},
		{"replace existing", "/f", "user.a", []byte("new"), 0, 0},
		{"create new", "/f", "user.b", []byte("v"), XattrCreate, 0},
		{"create existing", "/f", "user.a", []byte("v"), XattrCreate, syscall.EEXIST},
		{"replace flag existing", "/f", "user.a", []byte("v"), XattrReplace, 0},
		{"replace flag missing", "/f", "user.b", []byte("v"), XattrReplace, syscall.ENODATA},
		{"both flags existing", "/f", "user.a", []byte("v"), XattrCreate | XattrReplace, syscall.EEXIST},
		{"both flags missing", "/f", "user.b", []byte("v"), XattrCreate | XattrReplace, syscall.ENODATA},
		{"unknown flag", "/f", "user.b", nil, 4, syscall.EINVAL},
		{"empty value", "/f", "user.b", []byte{}, 0, 0},
		{"on dir", "/d", "user.b", []byte("v"), 0, 0},
		{"on symlink", "/s", "trusted.b", []byte("v"), 0, 0},
		{"empty name", "/f", "", []byte("v"), 0, syscall.ERANGE},
		{"name too long", "/f", strings.Repeat("n", 256), []byte("v"), 0, syscall.ERANGE},
		{"max name", "/f", strings.Repeat("n", 255), []byte("v"), 0, 0},
		{"max value", "/f", "user.b", big, 0, 0},
		{"value too big", "/f", "user.b", append(big, 0), 0, syscall.E2BIG},
		{"missing inode", "/nope", "user.b", nil, 0, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			mustOK(t, f.SetXattr(m["/f"], "user.a", []byte("old"), 0, f.now()))
			ino, ok := m[tc.path]
			if !ok {
				ino = 99999
			}
			var before Attr
			if ok {
				before = f.attr(ino)
			}
			digest := f.Digest()
			e := f.SetXattr(ino, tc.attr, tc.value, tc.flags, f.now())
			wantErrno(t, e, tc.errno)
			if e != 0 {
				if f.Digest() != digest {
					t.Fatal("failed SetXattr changed the namespace")
				}
				return
			}
			a := f.attr(ino)
			if a.Ctime != f.clock || a.Mtime != before.Mtime || a.Version != before.Version+1 {
				t.Fatalf("attr %+v, before %+v", a, before)
			}
			got, e := f.GetXattr(ino, tc.attr)
			mustOK(t, e)
			if !bytes.Equal(got, tc.value) {
				t.Fatalf("GetXattr = %q, want %q", got, tc.value)
			}
			f.roundTrip()
		})
	}
}

func TestXattrTotal(t *testing.T) {
	f, m := tree(t)
	ino := m["/f"]
	v := make([]byte, 65536-6) // 6 = len("user.N")
	for k := range 16 {
		mustOK(t, f.SetXattr(ino, "user."+string(rune('a'+k)), v, 0, f.now()))
	}
	// 16 * 64 KiB = 1 MiB: full.
	wantErrno(t, f.SetXattr(ino, "user.z", nil, 0, f.now()), syscall.ENOSPC)
	// Replacing a value by one of the same size fits; one byte more does not.
	mustOK(t, f.SetXattr(ino, "user.a", v, 0, f.now()))
	wantErrno(t, f.SetXattr(ino, "user.a", append(v, 1), 0, f.now()), syscall.ENOSPC)
	mustOK(t, f.RemoveXattr(ino, "user.a", f.now()))
	mustOK(t, f.SetXattr(ino, "user.z", v, 0, f.now()))
	f.roundTrip()
}

func TestGetListRemoveXattr(t *testing.T) {
	f, m := tree(t)
	ino := m["/f"]
	for _, name := range []string{"user.c", "user.a", "security.x", "user.b"} {
		mustOK(t, f.SetXattr(ino, name, []byte(name), 0, f.now()))
	}
	t.Run("list sorted", func(t *testing.T) {
		names, e := f.ListXattr(ino)
		mustOK(t, e)
		if !equal(names, []string{"security.x", "user.a", "user.b", "user.c"}) {
			t.Fatalf("ListXattr = %q", names)
		}
	})
	t.Run("list empty", func(t *testing.T) {
		names, e := f.ListXattr(m["/d"])
		mustOK(t, e)
		if len(names) != 0 {
			t.Fatalf("ListXattr = %q", names)
		}
	})
	t.Run("get copy", func(t *testing.T) {
		v, e := f.GetXattr(ino, "user.a")
		mustOK(t, e)
		v[0] = 'X'
		if v2, _ := f.GetXattr(ino, "user.a"); string(v2) != "user.a" {
			t.Fatalf("GetXattr returned internal memory: %q", v2)
		}
	})
	t.Run("set copies value", func(t *testing.T) {
		v := []byte("abc")
		mustOK(t, f.SetXattr(ino, "user.v", v, 0, f.now()))
		v[0] = 'X'
		if v2, _ := f.GetXattr(ino, "user.v"); string(v2) != "abc" {
			t.Fatalf("SetXattr kept the caller's slice: %q", v2)
		}
		mustOK(t, f.RemoveXattr(ino, "user.v", f.now()))
	})
	for _, tc := range []struct {
		name  string
		ino   Ino
		attr  string
		errno syscall.Errno
	}{
		{"get missing attr", ino, "user.z", syscall.ENODATA},
		{"get missing inode", 99999, "user.a", syscall.ENOENT},
		{"get on no xattrs", m["/d"], "user.a", syscall.ENODATA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := f.GetXattr(tc.ino, tc.attr)
			wantErrno(t, e, tc.errno)
		})
	}
	t.Run("list missing inode", func(t *testing.T) {
		_, e := f.ListXattr(99999)
		wantErrno(t, e, syscall.ENOENT)
	})
	for _, tc := range []struct {
		name  string
		ino   Ino
		attr  string
		errno syscall.Errno
	}{
		{"remove", ino, "user.b", 0},
		{"remove again", ino, "user.b", syscall.ENODATA},
		{"remove missing inode", 99999, "user.a", syscall.ENOENT},
		{"remove on no xattrs", m["/d"], "user.a", syscall.ENODATA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before Attr
			if tc.errno == 0 {
				before = f.attr(tc.ino)
			}
			e := f.RemoveXattr(tc.ino, tc.attr, f.now())
			wantErrno(t, e, tc.errno)
			if e == 0 {
				if a := f.attr(tc.ino); a.Ctime != f.clock || a.Version != before.Version+1 {
					t.Fatalf("attr %+v", a)
				}
				if _, e := f.GetXattr(tc.ino, tc.attr); e != syscall.ENODATA {
					t.Fatalf("GetXattr after remove: %v", e)
				}
			}
		})
	}
	t.Run("remove all drops ext", func(t *testing.T) {
		for _, name := range []string{"user.a", "user.c", "security.x"} {
			mustOK(t, f.RemoveXattr(ino, name, f.now()))
		}
		if f.inodes[ino].ext != nil {
			t.Fatal("ext kept for an inode with nothing in it")
		}
	})
}
