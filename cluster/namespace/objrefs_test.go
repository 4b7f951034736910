package namespace

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// sharedObj is the object the tests below pack into several files.
const sharedObj = 500

// twoSharing makes /a and /b, each with a 100-byte slice of sharedObj in
// block 0 (at different offsets in the object, as a packed object holds
// them), and checks the count.
func twoSharing(t *testing.T) (f *tfs, a, b Ino) {
	t.Helper()
	f = newTFS(t)
	a, b = f.create(RootIno, "a"), f.create(RootIno, "b")
	for k, ino := range []Ino{a, b} {
		ws := []BlockWrite{{Block: 0, Slice: Slice{Len: 100, Object: sharedObj, ObjOff: uint32(k) * 100}}}
		if _, freed, e := f.CommitSlices(ino, ws, 100, f.now()); e != 0 || freed != nil {
			t.Fatalf("commit to %d: errno %v, freed %v", ino, e, freed)
		}
	}
	wantRefs(t, f, sharedObj, 2)
	return f, a, b
}

func wantRefs(t *testing.T, f *tfs, obj uint64, want uint32) {
	t.Helper()
	if got := f.ObjectRefs(obj); got != want {
		t.Fatalf("ObjectRefs(%d) = %d, want %d", obj, got, want)
	}
	if err := f.checkRefs(); err != nil {
		t.Fatal(err)
	}
}

// TestSharedObjectFreedWithItsLastFile: an object two files reference goes
// to GC (is reported freed) only when the second file lets it go, whichever
// way each file does.
func TestSharedObjectFreedWithItsLastFile(t *testing.T) {
	setSize := func(f *tfs, ino Ino, size uint64) []uint64 {
		_, freed, e := f.SetAttr(ino, SetAttrIn{Valid: SetSize, Size: size}, f.now())
		mustOK(f.t, e)
		return freed
	}
	unlink := func(f *tfs, name string) []uint64 {
		r, e := f.Unlink(RootIno, name, f.now())
		mustOK(f.t, e)
		if !r.Freed {
			f.t.Fatalf("unlink of %s did not free it", name)
		}
		return r.Objects
	}
	overwrite := func(f *tfs, ino Ino, obj uint64) []uint64 {
		return f.commit(ino, 0, 0, 100, obj)
	}
	for _, tc := range []struct {
		name         string
		first, other func(f *tfs, a, b Ino) []uint64
	}{
		{"unlink", func(f *tfs, a, b Ino) []uint64 { return unlink(f, "a") }, func(f *tfs, a, b Ino) []uint64 { return unlink(f, "b") }},
		{"truncate", func(f *tfs, a, b Ino) []uint64 { return setSize(f, a, 0) }, func(f *tfs, a, b Ino) []uint64 { return setSize(f, b, 0) }},
		{"overwrite", func(f *tfs, a, b Ino) []uint64 { return overwrite(f, a, 601) }, func(f *tfs, a, b Ino) []uint64 { return overwrite(f, b, 602) }},
		{"truncate then unlink", func(f *tfs, a, b Ino) []uint64 { return setSize(f, b, 0) }, func(f *tfs, a, b Ino) []uint64 { return unlink(f, "a") }},
		{"rename over", func(f *tfs, a, b Ino) []uint64 {
			f.create(RootIno, "c")
			r, e := f.Rename(RootIno, "c", RootIno, "a", 0, f.now())
			mustOK(f.t, e)
			return r.Objects
		}, func(f *tfs, a, b Ino) []uint64 {
			f.create(RootIno, "c")
			r, e := f.Rename(RootIno, "c", RootIno, "b", 0, f.now())
			mustOK(f.t, e)
			return r.Objects
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, a, b := twoSharing(t)
			if freed := tc.first(f, a, b); len(freed) != 0 {
				t.Fatalf("the first file letting go freed %v: the other still references object %d", freed, sharedObj)
			}
			wantRefs(t, f, sharedObj, 1)
			f.roundTrip()
			if freed := tc.other(f, a, b); !slices.Equal(freed, []uint64{sharedObj}) {
				t.Fatalf("the last file letting go freed %v, want [%d]", freed, sharedObj)
			}
			wantRefs(t, f, sharedObj, 0)
			f.roundTrip()
		})
	}
}

// TestSharedObjectOrphans: open unlinked files keep their objects; the
// close (or session close) of the last one frees them, once.
func TestSharedObjectOrphans(t *testing.T) {
	f, a, b := twoSharing(t)
	mustOK(t, f.Open(a, 1, 7))
	mustOK(t, f.Open(b, 2, 7))
	for _, name := range []string{"a", "b"} {
		if r, e := f.Unlink(RootIno, name, f.now()); e != 0 || r.Freed || r.Objects != nil {
			t.Fatalf("unlink of open %s: %+v %v", name, r, e)
		}
	}
	wantRefs(t, f, sharedObj, 2)
	if r, e := f.Close(1); e != 0 || !r.Freed || len(r.Objects) != 0 {
		t.Fatalf("close of the first orphan: %+v %v, want it freed without objects", r, e)
	}
	wantRefs(t, f, sharedObj, 1)
	f.roundTrip()
	if r := f.CloseSession(7); !r.Freed || !slices.Equal(r.Objects, []uint64{sharedObj}) {
		t.Fatalf("session close freeing the last orphan: %+v, want object %d", r, sharedObj)
	}
	wantRefs(t, f, sharedObj, 0)

	// Both freed by one session close: the object is reported once.
	f, a, b = twoSharing(t)
	mustOK(t, f.Open(a, 1, 8))
	mustOK(t, f.Open(b, 2, 8))
	f.Unlink(RootIno, "a", f.now())
	f.Unlink(RootIno, "b", f.now())
	if r := f.CloseSession(8); !slices.Equal(r.Inos, []Ino{a, b}) || !slices.Equal(r.Objects, []uint64{sharedObj}) {
		t.Fatalf("session close freeing both: %+v", r)
	}
	wantRefs(t, f, sharedObj, 0)
}

// TestSharedObjectCountsFilesNotSlices: a file counts once however many of
// its slices name the object, and hard links are one file.
func TestSharedObjectCountsFilesNotSlices(t *testing.T) {
	f, a, b := twoSharing(t)
	f.commit(a, 3, 0, 10, sharedObj)
	f.commit(a, 0, 50, 10, sharedObj)
	wantRefs(t, f, sharedObj, 2)
	f.Link(b, RootIno, "b2", f.now())
	wantRefs(t, f, sharedObj, 2)
	if freed := f.commit(b, 0, 0, 100, 700); freed != nil {
		t.Fatalf("overwrite of b freed %v: a still references %d", freed, sharedObj)
	}
	wantRefs(t, f, sharedObj, 1)
	if freed := f.commit(a, 0, 0, 100, 701); freed != nil {
		t.Fatalf("a still has a slice of %d in block 3, freed %v", sharedObj, freed)
	}
	wantRefs(t, f, sharedObj, 1)
	if _, freed, _ := f.SetAttr(a, SetAttrIn{Valid: SetSize, Size: 100}, f.now()); !slices.Equal(freed, []uint64{sharedObj}) {
		t.Fatalf("truncating a's last slice of %d freed %v", sharedObj, freed)
	}
	wantRefs(t, f, sharedObj, 0)
	wantRefs(t, f, 700, 1)
}

// TestSharedObjectCompaction: compacting one file's block frees only the
// objects no other file references.
func TestSharedObjectCompaction(t *testing.T) {
	f, a, b := twoSharing(t)
	for _, ino := range []Ino{a, b} {
		f.commit(ino, 0, 100, 50, uint64(800+ino)) // an object of its own
	}
	ss, lo, hi, ok := f.Compactable(a, 0)
	if !ok {
		t.Fatal("not compactable")
	}
	freed, e := f.CompactBlock(a, 0, ss, lo, hi, 900)
	if mustOK(t, e); !slices.Equal(freed, []uint64{uint64(800 + a)}) {
		t.Fatalf("compaction of a freed %v, want only its own object %d", freed, 800+a)
	}
	wantRefs(t, f, sharedObj, 1)
	wantRefs(t, f, 900, 1)
	ss, lo, hi, _ = f.Compactable(b, 0)
	freed, e = f.CompactBlock(b, 0, ss, lo, hi, 901)
	if mustOK(t, e); !slices.Equal(freed, []uint64{sharedObj, uint64(800 + b)}) {
		t.Fatalf("compaction of b freed %v, want %d and %d", freed, sharedObj, 800+b)
	}
	wantRefs(t, f, sharedObj, 0)
	f.roundTrip()
}

// TestObjectRefsSnapshot: the counts are rebuilt from a snapshot (they are
// not in it), and a snapshot whose counts would be wrong cannot exist; the
// checker catches counts that drift from the files.
func TestObjectRefsSnapshot(t *testing.T) {
	f, a, _ := twoSharing(t)
	f.commit(a, 1, 0, 10, 42)
	c := &tfs{Namespace: f.roundTrip(), t: t, clock: f.clock}
	wantRefs(t, c, sharedObj, 2)
	wantRefs(t, c, 42, 1)
	if r, _ := c.Unlink(RootIno, "a", c.now()); !slices.Equal(r.Objects, []uint64{42}) {
		t.Fatalf("unlink of a in the restored copy freed %v, want [42]", r.Objects)
	}
	if r, _ := c.Unlink(RootIno, "b", c.now()); !slices.Equal(r.Objects, []uint64{sharedObj}) {
		t.Fatalf("unlink of b in the restored copy freed %v, want [%d]", r.Objects, sharedObj)
	}

	f.objRefs[sharedObj] = 1
	if err := f.checkRefs(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("checkRefs with a wrong count: %v", err)
	}
	f.objRefs[sharedObj] = 2
	f.objRefs[12345] = 1
	if err := f.checkRefs(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("checkRefs with a count of an object no file references: %v", err)
	}
	delete(f.objRefs, 12345)
	f.inodes[a].file().refs[42] = 2
	if err := f.check(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("check with a file's refs not matching its slices: %v", err)
	}
	f.inodes[a].file().refs[42] = 1
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(&buf); err != nil {
		t.Fatalf("a namespace of shared objects restores: %v", err)
	}
}
