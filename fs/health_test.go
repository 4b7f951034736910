package fs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/store"
)

// Tests of the bad-shard reports of reads (report.go) and of the
// ecfs.health xattr (health.go).

// reportSpy is a metadata client that records the bad shards reported
// through it; while block is open, it holds every report.
type reportSpy struct {
	Meta
	block chan struct{}

	mu      sync.Mutex
	shards  []*metapb.BadShard
	batches []int // shards per ReportOp
}

func (m *reportSpy) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if rep := cmd.GetReport(); rep != nil {
		m.mu.Lock()
		m.shards = append(m.shards, rep.Shards...)
		m.batches = append(m.batches, len(rep.Shards))
		m.mu.Unlock()
		if m.block != nil {
			select {
			case <-m.block:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return m.Meta.Apply(ctx, cmd)
}

// reported returns the shards reported so far, as "object/index@store reason".
func (m *reportSpy) reported() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, len(m.shards))
	for i, b := range m.shards {
		out[i] = fmt.Sprintf("%016x/%d@%s %s", b.Object, b.Index, b.Store, b.Reason)
	}
	return out
}

func reportKey(object uint64, index int, addr, reason string) string {
	return fmt.Sprintf("%016x/%d@%s %s", object, index, addr, reason)
}

func mustHealth(t *testing.T, f *FS, ino uint64, want string) {
	t.Helper()
	v, errno := f.GetXattr(testCtx(t), ino, healthName)
	mustErrno(t, "getxattr "+healthName, errno, 0)
	if string(v) != want {
		t.Fatalf("%s of inode %d: %q, want %q", healthName, ino, v, want)
	}
}

// objectRecord asks the leader for the record of object id.
func objectRecord(t *testing.T, m Meta, id uint64) *metapb.ObjectRecord {
	t.Helper()
	r, err := m.Read(testCtx(t), &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{id}}}})
	if err != nil || r.Errno != 0 || len(r.Objects) != 1 {
		t.Fatalf("reading the record of object %016x: %v (errno %d, %d records)", id, err, r.GetErrno(), len(r.GetObjects()))
	}
	return r.Objects[0]
}

// blockObject returns the object holding block blk of file ino, which
// must have been written whole in one go (one slice, the whole object).
func blockObject(t *testing.T, m Meta, ino, blk uint64) uint64 {
	t.Helper()
	r, err := m.Read(testCtx(t), &metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: ino, Blocks: []uint64{blk}}}})
	if err != nil || r.Errno != 0 || len(r.Blocks) != 1 || len(r.Blocks[0].Slices) != 1 {
		t.Fatalf("slices of block %d of inode %d: %v, errno %d, %v", blk, ino, err, r.GetErrno(), r.GetBlocks())
	}
	s := r.Blocks[0].Slices[0]
	if s.Off != 0 || s.ObjOff != 0 || s.Len != BlockSize {
		t.Fatalf("block %d of inode %d is slice %v, want one whole object", blk, ino, s)
	}
	return s.Object
}

// TestHealthXattr: ecfs.health says inline, empty, or K+M H/N STATE of a
// regular file, from what is committed; other files have none; it cannot
// be set or removed and is not listed.
func TestHealthXattr(t *testing.T) {
	t.Parallel()
	f, e := newTestFS(t)
	ctx := testCtx(t)

	empty := mustCreate(t, f, RootIno, "empty")
	mustHealth(t, f, empty.Ino, "empty")

	small := mustCreate(t, f, RootIno, "small")
	// Buffered here, not committed yet: not counted.
	mustWrite(t, f, small.Ino, pattern(1000, 1), 0)
	mustHealth(t, f, small.Ino, "empty")
	mustFlush(t, f, small.Ino)
	mustHealth(t, f, small.Ino, "inline")

	large := mustCreate(t, f, RootIno, "large")
	want := pattern(9<<20+123, 2) // three objects
	mustWrite(t, f, large.Ino, want, 0)
	mustFlush(t, f, large.Ino)
	mustHealth(t, f, large.Ino, "4+2 6/6 ok")
	// Another mount sees the same.
	other := e.mount("other", nil, nil)
	mustHealth(t, other, large.Ino, "4+2 6/6 ok")
	mustHealth(t, other, small.Ino, "inline")

	// Sparse: a size but no data.
	sparse := mustCreate(t, f, RootIno, "sparse")
	_, errno := f.SetAttr(ctx, sparse.Ino, SetAttrIn{Valid: namespace.SetSize, Size: 10 << 20})
	mustErrno(t, "truncate up", errno, 0)
	mustSize(t, f, sparse.Ino, 10<<20)
	mustHealth(t, f, sparse.Ino, "empty")

	d := mustMkdir(t, f, RootIno, "d")
	for _, ino := range []uint64{d.Ino, RootIno} {
		_, errno := f.GetXattr(ctx, ino, healthName)
		mustErrno(t, fmt.Sprintf("%s of directory %d", healthName, ino), errno, syscall.ENODATA)
	}
	_, errno = f.GetXattr(ctx, 999999, healthName)
	mustErrno(t, healthName+" of a missing inode", errno, syscall.ENOENT)

	mustErrno(t, "setxattr "+healthName, f.SetXattr(ctx, large.Ino, healthName, []byte("4+2 6/6 ok"), 0), syscall.EPERM)
	mustErrno(t, "removexattr "+healthName, f.RemoveXattr(ctx, large.Ino, healthName), syscall.EPERM)
	mustErrno(t, "setxattr "+healthName+" of a directory", f.SetXattr(ctx, d.Ino, healthName, []byte("x"), 0), syscall.EPERM)
	mustErrno(t, "setxattr user.a", f.SetXattr(ctx, large.Ino, "user.a", []byte("1"), 0), 0)
	names, errno := f.ListXattr(ctx, large.Ino)
	mustErrno(t, "listxattr", errno, 0)
	if !slices.Equal(names, []string{"user.a"}) {
		t.Fatalf("listxattr: %q, want [user.a]", names)
	}
	mustHealth(t, f, large.Ino, "4+2 6/6 ok")
}

// TestReadReportsBadShards: a read that meets a corrupt or a missing shard
// still returns the exact bytes, and reports the shard to the metadata
// service, which marks it bad in the object's record; ecfs.health then
// says the file is degraded, or unreadable once fewer than k shards are
// left (that read fails, and still reports what it found).
func TestReadReportsBadShards(t *testing.T) {
	t.Parallel()
	readReportsBadShards(t, newEnv(t))
}

// readReportsBadShards is TestReadReportsBadShards on e (the fakes, or the
// real cluster with its shard files damaged on disk).
func readReportsBadShards(t *testing.T, e *env) {
	w := e.mount("writer", nil, nil)
	leader := e.client()
	ctx := testCtx(t)
	a := mustCreate(t, w, RootIno, "f")
	want := pattern(2*BlockSize+123, 3)
	h, _, errno := w.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "open", errno, 0)
	mustWrite(t, w, a.Ino, want, 0)
	mustErrno(t, "release", w.Release(ctx, h), 0)
	mustHealth(t, w, a.Ino, "4+2 6/6 ok")
	objA, objB := blockObject(t, leader, a.Ino, 0), blockObject(t, leader, a.Ino, 1)
	recA, recB := objectRecord(t, leader, objA), objectRecord(t, leader, objB)
	if recA.Bad != 0 || recB.Bad != 0 {
		t.Fatalf("bad shards before any damage: %b %b", recA.Bad, recB.Bad)
	}
	waitBad := func(id uint64, want uint64) {
		t.Helper()
		waitUntil(t, fmt.Sprintf("object %016x to have bad shards %b", id, want), 20*time.Second, func() bool {
			return objectRecord(t, leader, id).Bad == want
		})
	}
	waitReported := func(spy *reportSpy, want ...string) {
		t.Helper()
		waitUntil(t, fmt.Sprintf("reports of %q", want), 20*time.Second, func() bool {
			got := spy.reported()
			for _, w := range want {
				if !slices.Contains(got, w) {
					return false
				}
			}
			return true
		})
	}

	// (b) One shard rotten: the read reconstructs, the shard is reported.
	e.damage(objA, 0, false)
	spy1 := &reportSpy{Meta: e.client()}
	r1 := e.mount("reader1", func(c *Config) { c.Meta = spy1 }, nil)
	openRead(t, r1, a.Ino, want)
	waitReported(spy1, reportKey(objA, 0, recA.Stores[0], "corrupt"))
	waitBad(objA, 1<<0)
	if got := spy1.reported(); len(slices.Compact(slices.Sorted(slices.Values(got)))) != 1 {
		t.Errorf("reported %q, want only shard 0 of object %016x", got, objA)
	}
	mustHealth(t, r1, a.Ino, "4+2 5/6 degraded")
	mustHealth(t, w, a.Ino, "4+2 5/6 degraded")

	// (d) A shard missing from its store is reported as missing.
	e.damage(objB, 1, true)
	spy2 := &reportSpy{Meta: e.client()}
	r2 := e.mount("reader2", func(c *Config) { c.Meta = spy2 }, nil)
	openRead(t, r2, a.Ino, want)
	waitReported(spy2, reportKey(objB, 1, recB.Stores[1], "missing"))
	waitBad(objB, 1<<1)
	mustHealth(t, r2, a.Ino, "4+2 5/6 degraded")

	// Three shards of object A bad: reads of it fail, and report.
	for _, i := range []int{1, 2} {
		e.damage(objA, i, true)
	}
	spy3 := &reportSpy{Meta: e.client()}
	r3 := e.mount("reader3", func(c *Config) { c.Meta = spy3 }, nil)
	_, errno = r3.Read(ctx, a.Ino, make([]byte, 4096), 0)
	mustErrno(t, "read of an object with 3 of 6 shards", errno, syscall.EIO)
	waitReported(spy3, reportKey(objA, 1, recA.Stores[1], "missing"), reportKey(objA, 2, recA.Stores[2], "missing"))
	waitBad(objA, 1<<0|1<<1|1<<2)
	mustHealth(t, r3, a.Ino, "4+2 3/6 unreadable")
	// Object B still reads: the rest of the file is whole.
	got := mustRead(t, r3, a.Ino, BlockSize+123, BlockSize)
	if string(got) != string(want[BlockSize:]) {
		t.Fatalf("blocks 1 and 2 after object A was lost: %s", firstDiff(got, want[BlockSize:]))
	}
}

// TestReportBadShardsQueue: only corrupt and missing shards are reported,
// each once within a minute; reads never wait for a report (the queue
// drops what it cannot hold while the service is slow); batches are
// bounded; Close stops the sender.
func TestReportBadShardsQueue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	spy := &reportSpy{Meta: e.client()}
	f := e.mount("m", func(c *Config) { c.Meta = spy }, nil)

	// Objects from 1<<60 have no record: the service ignores the reports.
	const obj = uint64(1) << 60
	f.data.reportBad(obj, []store.ShardResult{
		{Index: 0, Addr: "s0", Err: fmt.Errorf("shard: %w", store.ErrDataLoss)},
		{Index: 1, Addr: "s1", Err: &store.RemoteError{Addr: "s1", Code: store.CodeNotFound}},
		{Index: 2, Addr: "s2", Err: fmt.Errorf("%w: s2: refused", store.ErrUnavailable)},
		{Index: 3, Addr: "s3", Err: context.DeadlineExceeded},
		{Index: 4, Addr: "s4", Err: context.Canceled},
		{Index: 5, Addr: "", Err: store.ErrUnplaced},
		{Index: 0, Addr: "s0", Err: &store.RemoteError{Addr: "s0", Code: store.CodeDataLoss}}, // a repeat
	})
	first := []string{reportKey(obj, 0, "s0", "corrupt"), reportKey(obj, 1, "s1", "missing")}
	waitUntil(t, "the first reports", 20*time.Second, func() bool { return len(spy.reported()) >= 2 })
	// The same shard again, then another one: once the other arrives, the
	// repeat (queued before it) was seen, and dropped.
	f.data.reportBad(obj, []store.ShardResult{{Index: 0, Addr: "s0", Err: store.ErrDataLoss}})
	f.data.reportBad(obj+1, []store.ShardResult{{Index: 3, Addr: "s3", Err: store.ErrNotFound}})
	marker := reportKey(obj+1, 3, "s3", "missing")
	waitUntil(t, "the marker report", 20*time.Second, func() bool { return slices.Contains(spy.reported(), marker) })
	if got, want := spy.reported(), append(first, marker); !slices.Equal(got, want) {
		t.Fatalf("reported %q, want %q", got, want)
	}

	// A service that does not answer: reads go on, reports are dropped.
	slow := &reportSpy{Meta: e.client(), block: make(chan struct{})}
	g := e.mount("slow", func(c *Config) { c.Meta = slow }, nil)
	const n = 3 * reportQueue
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			g.data.reportBad(obj+uint64(i), []store.ShardResult{{Index: 0, Addr: "s0", Err: store.ErrNotFound}})
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("reportBad blocked while the service did not answer")
	}
	close(slow.block)
	if err := g.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case <-g.data.reports.done:
	default:
		t.Fatal("the report sender still runs after Close")
	}
	slow.mu.Lock()
	defer slow.mu.Unlock()
	if len(slow.shards) > reportBatch+reportQueue {
		t.Errorf("%d shards reported while the service hung; at most %d fit", len(slow.shards), reportBatch+reportQueue)
	}
	if len(slow.shards) == 0 {
		t.Error("nothing reported")
	}
	for _, b := range slow.batches {
		if b > reportBatch {
			t.Errorf("a report of %d shards, more than %d", b, reportBatch)
		}
	}
}
