package namespace

import (
	"syscall"
	"testing"
)

func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ino    func(m map[string]Ino) Ino
		handle uint64
		errno  syscall.Errno
	}{
		{"file", func(m map[string]Ino) Ino { return m["/f"] }, 2, 0},
		{"dir", func(m map[string]Ino) Ino { return m["/d"] }, 2, 0},
		{"second handle", func(m map[string]Ino) Ino { return m["/f"] }, 3, 0},
		{"handle in use", func(m map[string]Ino) Ino { return m["/d"] }, 1, syscall.EINVAL},
		{"missing", func(map[string]Ino) Ino { return 99999 }, 2, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m := tree(t)
			mustOK(t, f.Open(m["/f"], 1, 1))
			wantErrno(t, f.Open(tc.ino(m), tc.handle, 1), tc.errno)
		})
	}
}

func TestClose(t *testing.T) {
	t.Run("unknown handle", func(t *testing.T) {
		f, _ := tree(t)
		_, e := f.Close(5)
		wantErrno(t, e, syscall.EBADF)
	})
	t.Run("twice", func(t *testing.T) {
		f, m := tree(t)
		mustOK(t, f.Open(m["/f"], 5, 1))
		res, e := f.Close(5)
		mustOK(t, e)
		if res.Freed {
			t.Fatal("linked file freed")
		}
		_, e = f.Close(5)
		wantErrno(t, e, syscall.EBADF)
	})
	t.Run("orphan freed on last close", func(t *testing.T) {
		f, m := tree(t)
		ino := m["/f"]
		f.commit(ino, 0, 0, 10, 42)
		mustOK(t, f.Open(ino, 5, 1))
		mustOK(t, f.Open(ino, 6, 2))
		_, e := f.Unlink(RootIno, "f", f.now())
		mustOK(t, e)
		// Still usable: attributes, data, xattrs.
		_, _, e = f.CommitSlices(ino, []BlockWrite{{Block: 1, Slice: Slice{Len: 5, Object: 43}}}, 0, f.now())
		mustOK(t, e)
		mustOK(t, f.SetXattr(ino, "user.x", []byte("1"), 0, f.now()))
		if a := f.attr(ino); a.Nlink != 0 || a.Size != 4<<20+5 {
			t.Fatalf("orphan %+v", a)
		}
		if in, _ := f.Counts(); in != 9 {
			t.Fatalf("inodes %d", in)
		}
		res, e := f.Close(5)
		mustOK(t, e)
		if res.Freed {
			t.Fatal("freed with a handle left")
		}
		res, e = f.Close(6)
		mustOK(t, e)
		if !res.Freed || !equal(res.Inos, []Ino{ino}) || !equal(res.Objects, []uint64{42, 43}) {
			t.Fatalf("close %+v", res)
		}
		f.gone(ino)
	})
}

func TestCloseSession(t *testing.T) {
	f, m := tree(t)
	f.commit(m["/f"], 0, 0, 10, 7)
	f.commit(m["/d/sub/x"], 0, 0, 10, 3)
	mustOK(t, f.Open(m["/f"], 10, 1))
	mustOK(t, f.Open(m["/f"], 11, 1))
	mustOK(t, f.Open(m["/d/sub/x"], 12, 1))
	mustOK(t, f.Open(m["/d/sub/x"], 13, 2)) // other session
	mustOK(t, f.Open(m["/p"], 14, 1))
	mustOK(t, f.Open(m["/e"], 15, 1))
	for _, p := range []struct {
		dir  Ino
		name string
	}{{RootIno, "f"}, {m["/d/sub"], "x"}, {RootIno, "p"}} {
		_, e := f.Unlink(p.dir, p.name, f.now())
		mustOK(t, e)
	}
	mustOK(t, f.Rmdir(RootIno, "e", f.now()))
	f.roundTrip()

	res := f.CloseSession(1)
	want := []Ino{m["/f"], m["/e"], m["/p"]}
	if !res.Freed || !equal(res.Inos, sorted(want)) || !equal(res.Objects, []uint64{7}) {
		t.Fatalf("CloseSession(1) = %+v, want inos %v", res, sorted(want))
	}
	if a := f.attr(m["/d/sub/x"]); a.Nlink != 0 {
		t.Fatalf("x %+v", a)
	}
	if _, e := f.Close(10); e != syscall.EBADF {
		t.Fatal("handle of closed session still open")
	}
	if res := f.CloseSession(1); res.Freed || res.Inos != nil {
		t.Fatalf("second CloseSession(1) = %+v", res)
	}
	res = f.CloseSession(2)
	if !equal(res.Inos, []Ino{m["/d/sub/x"]}) || !equal(res.Objects, []uint64{3}) {
		t.Fatalf("CloseSession(2) = %+v", res)
	}
	if len(f.handles) != 0 || len(f.sessions) != 0 || len(f.opens) != 0 {
		t.Fatal("open tracking not empty")
	}
}

func sorted(s []Ino) []Ino {
	out := append([]Ino{}, s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
