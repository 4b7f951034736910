package cluster

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

func TestStatfsInlineAndSlices(t *testing.T) {
	f := NewFSM()
	at := func(c *metapb.Command) *metapb.Result { return applyAt(f, 0, c) }
	at(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	for i, st := range []string{StoreUp, StoreUp, StoreUp, StoreDown} {
		id := string(rune('a' + i))
		at(&metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: &metapb.StoreInfo{
			Id: id, Addr: id + ":1", TotalBytes: 600, FreeBytes: 300}}}})
		at(&metapb.Command{Op: &metapb.Command_StoreState{StoreState: &metapb.StoreStateOp{Id: id, State: st}}})
	}
	sf := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Statfs{Statfs: &metapb.StatfsReq{}}})
	if sf.TotalBytes != 1200 || sf.FreeBytes != 600 || sf.Inodes != 1 {
		t.Fatalf("statfs of 3 up stores of 600 bytes (300 free) at 4+2: %v, want 1200 total, 600 free, 1 inode", sf)
	}
	s := at(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e9}}}).SessionId
	ino := at(createCmd(namespace.RootIno, "small", true)).Attr.Ino
	if r := at(&metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: s, Ino: ino, Data: []byte("hello")}}}); r.Errno != 0 || r.Attr.Size != 5 {
		t.Fatalf("inline write: %v", r)
	}
	if r := at(&metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: s + 100, Ino: ino, Data: []byte("x")}}}); r.Errno != uint32(syscall.ESTALE) {
		t.Fatalf("inline write from an unknown session: %v, want ESTALE", r)
	}
	sl := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: ino, Blocks: []uint64{0}}}})
	if sl.Errno != 0 || !bytes.Equal(sl.Inline, []byte("hello")) || len(sl.Blocks) != 1 || len(sl.Blocks[0].Slices) != 0 {
		t.Fatalf("slices of an inline file: %v", sl)
	}
	big := at(createCmd(namespace.RootIno, "big", true)).Attr.Ino
	at(&metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: s, Ino: big, NewSize: 10,
		Writes: []*metapb.BlockWrite{{Block: 1, Off: 5, Len: 5, Object: 9, ObjOff: 0}}}}})
	sl = f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: big, Blocks: []uint64{0, 1}}}})
	if len(sl.Blocks) != 2 || len(sl.Blocks[0].Slices) != 0 || len(sl.Blocks[1].Slices) != 1 || sl.Blocks[1].Slices[0].Object != 9 {
		t.Fatalf("slices after a commit to block 1: %v", sl)
	}

	// Prefetch: the block 0 of other files, with their versions and the
	// records of the objects their slices name; what is not a regular file
	// (or not there) is left out.
	mid := at(createCmd(namespace.RootIno, "mid", true)).Attr.Ino
	rec := &metapb.ObjectRecord{Id: 11, Length: 20, Stores: []string{"a:1", "b:1", "c:1", "d:1", "a:1", "b:1"}}
	if r := at(&metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: s, Ino: mid, NewSize: 20,
		Writes: []*metapb.BlockWrite{{Block: 0, Off: 0, Len: 20, Object: 11}}, Objects: []*metapb.ObjectRecord{rec}}}}); r.Errno != 0 {
		t.Fatalf("commit of mid: %v", r)
	}
	midVer := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: mid}}}).Attr.Version
	dir := at(mkdirCmd(namespace.RootIno, "dir")).Attr.Ino
	sl = f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: big, Blocks: []uint64{0},
		Prefetch: []uint64{ino, dir, mid, 999}, Records: true}}})
	if sl.Errno != 0 || len(sl.Files) != 2 {
		t.Fatalf("prefetch of small, dir, mid and a missing inode: %v", sl)
	}
	if f0 := sl.Files[0]; f0.Ino != ino || !bytes.Equal(f0.Inline, []byte("hello")) || len(f0.Slices) != 0 || f0.Version == 0 {
		t.Fatalf("prefetched inline file: %v", f0)
	}
	if f1 := sl.Files[1]; f1.Ino != mid || f1.Version != midVer || len(f1.Slices) != 1 || f1.Slices[0].Object != 11 {
		t.Fatalf("prefetched file with an object: %v (version %d)", f1, midVer)
	}
	if len(sl.Objects) != 1 || sl.Objects[0].Id != 11 || sl.Objects[0].Length != 20 {
		t.Fatalf("records of the slices' objects: %v", sl.Objects)
	}
}

func TestObjectHealth(t *testing.T) {
	f := NewFSM()
	at := func(c *metapb.Command) *metapb.Result { return applyAt(f, 0, c) }
	at(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	ids := []string{"a", "b", "c", "d", "e", "f"}
	for _, id := range ids {
		at(&metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: &metapb.StoreInfo{Id: id, Addr: id + ":1"}}}})
	}
	s := at(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e9}}}).SessionId
	ino := at(createCmd(namespace.RootIno, "f", true)).Attr.Ino
	at(&metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: s, Ino: ino, NewSize: 10,
		Writes:  []*metapb.BlockWrite{{Len: 10, Object: 1}, {Block: 1, Len: 10, Object: 2}},
		Objects: []*metapb.ObjectRecord{{Id: 1, Length: 10, Stores: ids}, {Id: 2, Length: 10, Stores: []string{"a", "b", "c", "d", "e", ""}}}}}})
	check := func(want ObjectHealth) {
		t.Helper()
		if got := f.ObjectHealth(); got != want {
			t.Fatalf("object health %+v, want %+v", got, want)
		}
	}
	check(ObjectHealth{Total: 2, Degraded: 1, HealPending: 1})
	down := func(id string) {
		at(&metapb.Command{Op: &metapb.Command_StoreState{StoreState: &metapb.StoreStateOp{Id: id, State: StoreDown}}})
	}
	down("a")
	// 5 stores up: object 1 (5 shards) is as whole as it can be, object 2
	// (4) is not.
	check(ObjectHealth{Total: 2, Degraded: 2, HealPending: 1})
	down("b")
	// Object 2 has 3 of 6: nothing to rebuild it from. Object 1 has 4 on
	// the 4 stores up: nowhere to put more.
	check(ObjectHealth{Total: 2, Degraded: 2, Unreadable: 1, HealPending: 0})
	at(&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "f"}}})
	check(ObjectHealth{GCPending: 2})
}

// TestInitSetsInlineThreshold: the inline threshold chosen at bootstrap is
// the namespace's, kept in snapshots; 0 turns inline data off.
func TestInitSetsInlineThreshold(t *testing.T) {
	for _, tc := range []struct {
		max  uint32
		size int
		want syscall.Errno
	}{{0, 1, syscall.EFBIG}, {100, 100, 0}, {100, 101, syscall.EFBIG}, {1 << 20, 1 << 20, 0}} {
		f := NewFSM()
		at := func(c *metapb.Command) *metapb.Result { return applyAt(f, 0, c) }
		m := tc.max
		at(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2, InlineMax: &m}}})
		if f.InlineMax() != int(tc.max) {
			t.Fatalf("inline max %d after init with %d", f.InlineMax(), tc.max)
		}
		s := at(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e9}}}).SessionId
		ino := at(createCmd(namespace.RootIno, "f", true)).Attr.Ino
		r := at(&metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: s, Ino: ino, Data: make([]byte, tc.size)}}})
		if syscall.Errno(r.Errno) != tc.want {
			t.Errorf("inline max %d, %d bytes inline: errno %d, want %d", tc.max, tc.size, r.Errno, tc.want)
		}
		snap, _ := f.Snapshot()
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatal(err)
		}
		g := NewFSM()
		if err := g.Restore(sink); err != nil {
			t.Fatal(err)
		}
		if g.InlineMax() != int(tc.max) {
			t.Fatalf("inline max %d after a snapshot round trip, want %d", g.InlineMax(), tc.max)
		}
	}
}

// TestStatfsSharedDisks: stores whose disks share a file system (ecfs
// dev's six on one disk) count it once; distinct file systems add up; a
// down store's disks do not count.
func TestStatfsSharedDisks(t *testing.T) {
	f := NewFSM()
	at := func(c *metapb.Command) *metapb.Result { return applyAt(f, 0, c) }
	at(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	store := func(id, state string, disks ...*metapb.DiskInfo) {
		at(&metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: &metapb.StoreInfo{
			Id: id, Addr: id + ":1", TotalBytes: 1, FreeBytes: 1, Disks: disks}}}})
		at(&metapb.Command{Op: &metapb.Command_StoreState{StoreState: &metapb.StoreStateOp{Id: id, State: state}}})
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} { // five stores on one disk
		store(id, StoreUp, &metapb.DiskInfo{Fs: "m1:801", TotalBytes: 6000, FreeBytes: 3000})
	}
	store("f", StoreUp, &metapb.DiskInfo{Fs: "m1:801", TotalBytes: 6000, FreeBytes: 2994}, // the same disk, later
		&metapb.DiskInfo{Fs: "m1:802", TotalBytes: 600, FreeBytes: 600}) // and one of its own
	store("g", StoreDown, &metapb.DiskInfo{Fs: "m2:801", TotalBytes: 6000, FreeBytes: 6000})
	sf := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Statfs{Statfs: &metapb.StatfsReq{}}})
	if want := uint64(6600 / 6 * 4); sf.TotalBytes != want || sf.FreeBytes != uint64(3600/6*4) {
		t.Fatalf("statfs: total %d, free %d; want %d, %d (the shared disk once, the down store not)", sf.TotalBytes, sf.FreeBytes, want, 3600/6*4)
	}
}
