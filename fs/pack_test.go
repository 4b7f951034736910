package fs

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
)

// countingObjects counts the objects written.
type countingObjects struct {
	Objects
	writes atomic.Int64
}

func (c *countingObjects) Write(ctx context.Context, obj store.Object, data []byte, quorum int) ([]store.ShardResult, error) {
	c.writes.Add(1)
	return c.Objects.Write(ctx, obj, data, quorum)
}

// fileObjects returns the objects the committed slices of block 0 of ino
// name.
func fileObjects(t *testing.T, m Meta, ino uint64) []uint64 {
	t.Helper()
	r, err := m.Read(testCtx(t), &metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: ino, Blocks: []uint64{0}}}})
	if err != nil || r.Errno != 0 || len(r.Blocks) != 1 {
		t.Fatalf("slices of inode %d: %v, errno %d", ino, err, r.GetErrno())
	}
	var out []uint64
	for _, s := range r.Blocks[0].Slices {
		out = append(out, s.Object)
	}
	return out
}

// waitGC waits until want objects wait for GC (m2's closes go in batches:
// a file it read is freed once its close is applied), and fails at once
// if more do.
func waitGC(t *testing.T, e *env, what string, want int) {
	t.Helper()
	waitUntil(t, fmt.Sprint(want, " objects waiting for GC ", what), 10*time.Second, func() bool {
		got := e.fsm.ObjectHealth().GCPending
		if got > want {
			t.Fatalf("%d objects wait for GC %s, want %d", got, what, want)
		}
		return got == want
	})
}

// readAll opens ino on f and reads size+1 bytes from 0.
func readAll(t *testing.T, f *FS, ino uint64, size int) []byte {
	t.Helper()
	ctx := testCtx(t)
	h, _, errno := f.Open(ctx, ino, uint32(syscall.O_RDONLY))
	mustErrno(t, "open", errno, 0)
	defer f.Release(ctx, h)
	p := make([]byte, size+1)
	n, errno := f.Read(ctx, ino, p, 0)
	mustErrno(t, "read", errno, 0)
	return p[:n]
}

// TestSmallFilesWrittenBehindShareObjects: files between the inline
// threshold and packMax written in a leased directory are stored a few to
// an object; another mount reads every byte; removing some of the files
// frees only the objects no remaining file references, and removing all
// frees every object.
func TestSmallFilesWrittenBehindShareObjects(t *testing.T) {
	e := newEnv(t)
	cnt := &countingObjects{}
	m1 := e.mount("m1", nil, func(o Objects) Objects { cnt.Objects = o; return cnt })
	m2 := e.mount("m2", nil, nil)
	m1.data.pack.linger = time.Hour // packs go when full or waited for
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino

	type file struct {
		ino  uint64
		data []byte
	}
	var files []file
	for i := range 30 {
		data := pattern(16<<10+1+i*6151, uint64(i))
		ino, err := writeFile(ctx, m1, d, fmt.Sprint("f", i), data)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{ino, data})
	}
	big := pattern(2<<20, 99) // over packMax: an object of its own
	_, err := writeFile(ctx, m1, d, "big", big)
	if err != nil {
		t.Fatal(err)
	}
	mustErrno(t, "fsync dir", m1.SyncDir(ctx, d, nil), 0)

	refs := map[uint64]int{} // object -> files naming it
	for _, f := range files {
		for _, o := range fileObjects(t, e.client(), f.ino) {
			refs[o]++
		}
	}
	// 30 files, 16-194 KiB (3.1 MiB): one or two packs of a 4 MiB block.
	if len(refs) > 2 || cnt.writes.Load() > 3 {
		t.Fatalf("30 small files went into %d objects (%d object writes with the big file), want at most 2 (3)", len(refs), cnt.writes.Load())
	}
	for _, f := range files {
		if got := readAll(t, m2, f.ino, len(f.data)); !bytes.Equal(got, f.data) {
			t.Fatalf("m2 reads %d bytes of inode %d, not the %d written", len(got), f.ino, len(f.data))
		}
	}

	// Remove the first half: only an object none of the rest names goes.
	left := map[uint64]int{}
	for k, v := range refs {
		left[k] = v
	}
	freed := 0
	for i, f := range files[:15] {
		mustErrno(t, "unlink", m1.Unlink(ctx, d, fmt.Sprint("f", i)), 0)
		for _, o := range fileObjects(t, e.client(), f.ino) {
			if left[o]--; left[o] == 0 {
				freed++
			}
		}
	}
	mustErrno(t, "fsync dir", m1.SyncDir(ctx, d, nil), 0)
	waitGC(t, e, "after removing half the files", freed)
	for _, f := range files[15:] {
		if got := readAll(t, m2, f.ino, len(f.data)); !bytes.Equal(got, f.data) {
			t.Fatalf("after removing the others m2 reads %d bytes of inode %d, not the %d written", len(got), f.ino, len(f.data))
		}
	}
	for i := range files[15:] {
		mustErrno(t, "unlink", m1.Unlink(ctx, d, fmt.Sprint("f", 15+i)), 0)
	}
	mustErrno(t, "unlink", m1.Unlink(ctx, d, "big"), 0)
	mustErrno(t, "fsync dir", m1.SyncDir(ctx, d, nil), 0)
	waitGC(t, e, "after removing every file", len(refs)+1)
}

// TestNoPacksForAnOlderService: a service that does not say it keeps
// shared objects (an older one would delete one with its first file) gets
// an object per file.
func TestNoPacksForAnOlderService(t *testing.T) {
	e := newEnv(t)
	e.svc.WithoutPacks = true
	cnt := &countingObjects{}
	m1 := e.mount("m1", nil, func(o Objects) Objects { cnt.Objects = o; return cnt })
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino
	for i := range 5 {
		if _, err := writeFile(ctx, m1, d, fmt.Sprint("f", i), pattern(20<<10, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	mustErrno(t, "fsync dir", m1.SyncDir(ctx, d, nil), 0)
	if got := cnt.writes.Load(); got != 5 {
		t.Fatalf("5 small files written through a service without packs made %d objects, want 5", got)
	}
}

// TestPackMemberRemovedBeforeOthersCommitted: a file whose data went into
// a pack is removed before the other files of the pack are committed; the
// object stays for them.
func TestPackMemberRemovedBeforeOthersCommitted(t *testing.T) {
	e := newEnv(t)
	cnt := &countingObjects{}
	m1 := e.mount("m1", nil, func(o Objects) Objects { cnt.Objects = o; return cnt })
	m2 := e.mount("m2", nil, nil)
	m1.data.pack.linger = time.Hour
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino

	a := pattern(40<<10, 1)
	_, err := writeFile(ctx, m1, d, "a", a)
	if err != nil {
		t.Fatal(err)
	}
	mustErrno(t, "unlink a", m1.Unlink(ctx, d, "a"), 0)
	b := pattern(50<<10, 2)
	bIno, err := writeFile(ctx, m1, d, "b", b)
	if err != nil {
		t.Fatal(err)
	}
	mustErrno(t, "fsync dir", m1.SyncDir(ctx, d, nil), 0)
	objs := fileObjects(t, e.client(), bIno)
	if len(objs) != 1 || cnt.writes.Load() != 1 {
		t.Fatalf("b has slices in %d objects, and %d objects were written for a and b; want 1 and 1 (one pack)", len(objs), cnt.writes.Load())
	}
	if got := e.fsm.ObjectHealth().GCPending; got != 0 {
		t.Fatalf("%d objects wait for GC while b's data is in its pack", got)
	}
	if got := readAll(t, m2, bIno, len(b)); !bytes.Equal(got, b) {
		t.Fatalf("m2 reads %d bytes of b, not the %d written", len(got), len(b))
	}
	mustErrno(t, "unlink b", m1.Unlink(ctx, d, "b"), 0)
	mustErrno(t, "fsync dir", m1.SyncDir(ctx, d, nil), 0)
	waitGC(t, e, "once a and b are gone", 1)
}

// TestPackWaitedForIsStored: a pack lingering for more is stored at once
// when someone needs what it holds: an fsync of a file in it, or another
// mount opening one (the lease's give-back waits for the journal).
func TestPackWaitedForIsStored(t *testing.T) {
	e := newEnv(t)
	m1 := e.mount("m1", nil, nil)
	m2 := e.mount("m2", nil, nil)
	m1.data.pack.linger = time.Hour
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino

	within := func(what string, fn func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { fn(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s waited for the pack's linger", what)
		}
	}
	data := pattern(30<<10, 7)
	a, h, errno := m1.CreateOpen(ctx, d, "f", 0o644, 0, 0, uint32(syscall.O_RDWR|syscall.O_CREAT))
	mustErrno(t, "create", errno, 0)
	if _, errno := m1.WriteFile(ctx, h, data, 0); errno != 0 {
		t.Fatal(errno)
	}
	mustErrno(t, "flush", m1.FlushFile(ctx, h), 0) // sealed behind: into the pack
	within("fsync", func() { mustErrno(t, "fsync", m1.FsyncFile(ctx, h), 0) })
	mustErrno(t, "release", m1.Release(ctx, h), 0)

	data2 := pattern(20<<10, 8)
	ino2, err := writeFile(ctx, m1, d, "g", data2)
	if err != nil {
		t.Fatal(err)
	}
	within("another mount's read", func() {
		// Its lookup revokes m1's lease; m1 gives it back once the
		// journal, and the pack, are through.
		b, errno := m2.Lookup(ctx, d, "g")
		if errno != 0 || b.Ino != ino2 {
			t.Errorf("m2 looks g up: %v, inode %d, want %d", errno, b.GetIno(), ino2)
			return
		}
		if got := readAll(t, m2, ino2, len(data2)); !bytes.Equal(got, data2) {
			t.Errorf("m2 reads %d bytes of g, not the %d written", len(got), len(data2))
		}
		if got := readAll(t, m2, a.Ino, len(data)); !bytes.Equal(got, data) {
			t.Errorf("m2 reads %d bytes of f, not the %d written", len(got), len(data))
		}
	})
}
