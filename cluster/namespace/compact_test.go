package namespace

import (
	"slices"
	"syscall"
	"testing"
)

// TestCompactBlock: a block of many slices is replaced by one slice of a
// new object only while its slices are what the compactor read; the old
// objects are freed, the version moves and the times do not.
func TestCompactBlock(t *testing.T) {
	f := newTFS(t)
	ino := f.create(RootIno, "log")
	for i := range uint32(20) {
		f.commit(ino, 1, i*100, 100, uint64(10+i)) // appends: 20 disjoint slices
	}
	f.commit(ino, 1, 0, 50, 40) // shadows the start of object 10
	if n := f.SliceCount(ino, 1); n != 21 {
		t.Fatalf("%d slices", n)
	}
	var frag [][2]uint64
	f.EachFragmented(16, func(i Ino, b uint64) { frag = append(frag, [2]uint64{uint64(i), b}) })
	if len(frag) != 1 || frag[0] != [2]uint64{uint64(ino), 1} {
		t.Fatalf("fragmented blocks %v", frag)
	}
	ss, lo, hi, ok := f.Compactable(ino, 1)
	if !ok || lo != 0 || hi != 2000 || len(ss) != 21 {
		t.Fatalf("compactable: %v %d %d %v", ok, lo, hi, len(ss))
	}
	before := f.attr(ino)
	// A commit in between: the compaction is refused.
	f.commit(ino, 1, 2000, 10, 41)
	if _, e := f.CompactBlock(ino, 1, ss, lo, hi, 99); e != syscall.ESTALE {
		t.Fatalf("compaction over changed slices: %v", e)
	}
	ss, lo, hi, _ = f.Compactable(ino, 1)
	before = f.attr(ino)
	if _, e := f.CompactBlock(ino, 1, ss, lo+1, hi, 99); e != syscall.EINVAL {
		t.Fatalf("a compaction not covering every slice: %v", e)
	}
	freed, e := f.CompactBlock(ino, 1, ss, lo, hi, 99)
	mustOK(t, e)
	want := []uint64{10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 40, 41}
	if !slices.Equal(freed, want) {
		t.Fatalf("freed %v", freed)
	}
	got, _ := f.Slices(ino, 1)
	if len(got) != 1 || got[0] != (Slice{Off: 0, Len: 2010, Object: 99}) {
		t.Fatalf("slices after compaction %v", got)
	}
	after := f.attr(ino)
	if after.Version <= before.Version || after.Mtime != before.Mtime || after.Ctime != before.Ctime || after.Size != before.Size {
		t.Fatalf("attributes %+v -> %+v", before, after)
	}
	// An open file is not compacted; nor is block 0 under inline data.
	if e := f.Open(ino, 7, 1); e != 0 {
		t.Fatal(e)
	}
	if _, _, _, ok := f.Compactable(ino, 1); ok {
		t.Fatal("an open file is compactable")
	}
}
