package fs

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// TestWriteLeaseOpensAreNotSent: opens and closes of files in a directory
// the mount write-leases send nothing to the service (diff -r of a tree
// the mount wrote made a Raft write per file). A file open that way is
// registered before its last name goes: before this mount's own unlink is
// applied, and before the lease is given back to another mount that
// unlinks it. So it stays whole for the descriptor, and is freed at the
// close.
func TestWriteLeaseOpensAreNotSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, a, RootIno, "d").Ino
	var files []uint64
	for i := range 4 {
		ino, errno := writeSmall(t, a, d, fmt.Sprint("f", i), []byte(fmt.Sprint("content of f", i)), true)
		mustErrno(t, "write f"+fmt.Sprint(i), errno, 0)
		files = append(files, ino)
	}
	a.pipe.drain()
	before := cm.applies.Load()
	for range 3 {
		var hs []*Handle
		for _, ino := range files {
			h, _, errno := a.Open(ctx, ino, syscall.O_RDONLY)
			mustErrno(t, "open", errno, 0)
			hs = append(hs, h)
		}
		a.pipe.drain() // the journal would send the opens now, not only an open and its close together
		for i, h := range hs {
			if got := string(mustRead(t, a, h.Ino, 100, 0)); got != fmt.Sprint("content of f", i) {
				t.Fatalf("f%d reads %q", i, got)
			}
			mustErrno(t, "close", a.Release(ctx, h), 0)
		}
		a.pipe.drain()
	}
	if n := cm.applies.Load() - before; n != 0 {
		t.Fatalf("12 opens and closes under a write lease made %d calls that change the service", n)
	}
	gone := func(ino uint64) bool {
		r := e.fsm.Read(&metapb.ReadReq{LeaseSession: a.pipe.session(), Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}})
		return r.Errno == uint32(syscall.ENOENT)
	}

	// Open on a, unlinked by a itself: applied, and the file kept.
	h1, _, errno := a.Open(ctx, files[1], syscall.O_RDONLY)
	mustErrno(t, "open f1", errno, 0)
	mustErrno(t, "a unlinks f1", a.Unlink(ctx, d, "f1"), 0)
	a.pipe.drain()
	if r := e.fsm.Read(&metapb.ReadReq{LeaseSession: a.pipe.session(), Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: d, Name: "f1"}}}); r.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("a's unlink of f1 not applied: lookup errno %d", r.Errno)
	}
	if gone(files[1]) {
		t.Fatal("f1, open on a, freed by a's own unlink")
	}
	// Open on a, unlinked by b: a's lease is given back first, with the
	// open registered.
	h0, _, errno := a.Open(ctx, files[0], syscall.O_RDONLY)
	mustErrno(t, "open f0", errno, 0)
	mustErrno(t, "b unlinks f0", b.Unlink(ctx, d, "f0"), 0)
	if gone(files[0]) {
		t.Fatal("f0, open on a, freed by b's unlink")
	}
	for i, h := range []*Handle{h0, h1} {
		if got := string(mustRead(t, a, h.Ino, 100, 0)); got != fmt.Sprint("content of f", i) {
			t.Fatalf("f%d, unlinked and open on a, reads %q", i, got)
		}
		mustErrno(t, "close", a.Release(ctx, h), 0)
	}
	waitUntil(t, "the unlinked files freed after their close", 10e9, func() bool {
		a.pipe.drain()
		return gone(files[0]) && gone(files[1])
	})
}

// TestWriteLeaseOpenSurvivesRenameOverThroughService: a file opened under
// the mount's write lease and replaced by a rename the mount sends through
// the service (its source directory is not leased) is registered first:
// the descriptor reads it whole, and it is freed at the close.
func TestWriteLeaseOpenSurvivesRenameOverThroughService(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.mount("a", nil, nil)
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d2 := mustMkdir(t, a, RootIno, "d2").Ino
	x, errno := writeSmall(t, a, d2, "x", []byte("content of x"), true)
	mustErrno(t, "write x", errno, 0)
	d1 := mustMkdir(t, b, RootIno, "d1").Ino
	_, errno = writeSmall(t, b, d1, "y", []byte("content of y"), true)
	mustErrno(t, "write y", errno, 0)
	h, _, errno := a.Open(ctx, x, syscall.O_RDONLY)
	mustErrno(t, "open x", errno, 0)
	if !h.lazy {
		t.Fatal("x's open under a's lease was registered at once")
	}
	mustErrno(t, "a renames d1/y over d2/x", a.Rename(ctx, d1, "y", d2, "x", 0), 0)
	if a.leases.get(d1) != nil {
		t.Fatal("a leases d1: the rename did not go through the service")
	}
	a.pipe.drain()
	gone := func() bool {
		r := e.fsm.Read(&metapb.ReadReq{LeaseSession: a.pipe.session(), Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: x}}})
		return r.Errno == uint32(syscall.ENOENT)
	}
	if gone() {
		t.Fatal("x, open on a, freed by a's rename over it")
	}
	if got := string(mustRead(t, a, x, 100, 0)); got != "content of x" {
		t.Fatalf("x, replaced and open on a, reads %q", got)
	}
	mustErrno(t, "close x", a.Release(ctx, h), 0)
	waitUntil(t, "x freed after its close", 10e9, func() bool {
		a.pipe.drain()
		return gone()
	})
}
