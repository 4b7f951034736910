package fs

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/fs/fstest"
	"github.com/ecfs/ecfs/store"
)

// The core is tested against in-memory fakes (package fstest): one
// metadata service per test, driving the real state machine (cluster.FSM)
// without Raft or gRPC, with a client of its own for each mount (its own
// exactly-once identity), and one object layer per test that every mount
// shares, as they share the stores (4+2 over six stores). Nothing here
// touches FUSE, starts a process or opens a socket. The same tests can run
// against the real cluster (env_cluster_test.go, -tags cluster).

const (
	testScheme = "4+2"
	testStores = 6
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// env is a metadata service and stores, and what a mount needs to reach
// them.
type env struct {
	t   *testing.T
	fsm *cluster.FSM
	// The fakes; nil on the real cluster.
	svc  *fstest.Service
	objs *fstest.Objects

	newClient  func() Meta
	newObjects func() Objects
	// damage makes shard index of object id corrupt (its data no longer
	// matches its checksum) or, with missing, gone from its store.
	damage func(id uint64, index int, missing bool)
}

// testCtx bounds a test: a hang fails instead of blocking the whole run.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newEnv makes the fakes of a test.
func newEnv(t *testing.T) *env {
	t.Helper()
	svc := fstest.NewMeta(t, testScheme, testStores)
	objs := fstest.NewObjects()
	return &env{
		t: t, fsm: svc.FSM(), svc: svc, objs: objs,
		newClient:  func() Meta { return svc.Client() },
		newObjects: func() Objects { return objs },
		damage: func(id uint64, index int, missing bool) {
			t.Helper()
			ok := false
			if missing {
				ok = objs.Lose(id, index)
			} else {
				ok = objs.Corrupt(id, index)
			}
			if !ok {
				t.Fatalf("object %016x has no shard %d to damage", id, index)
			}
		},
	}
}

// client is a new metadata client (a mount's identity).
func (e *env) client() Meta {
	e.t.Helper()
	return e.newClient()
}

// objects is the object layer a new mount uses.
func (e *env) objects() Objects {
	e.t.Helper()
	return e.newObjects()
}

// mount is another mount (its own session and metadata client), closed
// with the test. cfg adjusts the configuration; objs, if set, wraps the
// object layer.
func (e *env) mount(name string, cfg func(*Config), wrap func(Objects) Objects) *FS {
	e.t.Helper()
	objs := e.objects()
	if wrap != nil {
		objs = wrap(objs)
	}
	c := Config{Meta: e.client(), Objects: objs, Name: name, Logger: quietLogger()}
	if cfg != nil {
		cfg(&c)
	}
	f, err := New(testCtx(e.t), c)
	if err != nil {
		e.t.Fatalf("fs.New: %v", err)
	}
	e.t.Cleanup(func() {
		if err := f.Close(); err != nil {
			e.t.Errorf("closing mount %s: %v", name, err)
		}
	})
	return f
}

// failingMount is a mount whose object writes fail when the test says so
// (objs.failWrites), and then give up within 300 ms.
func (e *env) failingMount(name string) (*FS, *faultyObjects) {
	e.t.Helper()
	objs := &faultyObjects{}
	m := e.mount(name, func(c *Config) { c.WriteTimeout = 300 * time.Millisecond },
		func(o Objects) Objects { objs.Objects = o; return objs })
	return m, objs
}

// newTestFS makes a test's fakes and mounts them once.
func newTestFS(t *testing.T) (*FS, *env) {
	t.Helper()
	e := newEnv(t)
	return e.mount("m1", nil, nil), e
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// faultyObjects wraps an object layer: it counts calls and can be told to
// fail every write as a write that missed its quorum.
type faultyObjects struct {
	Objects
	failWrites atomic.Bool
	writes     atomic.Int64 // Write calls
	reads      atomic.Int64 // ReadAt calls
}

func (o *faultyObjects) Write(ctx context.Context, obj store.Object, data []byte, quorum int) ([]store.ShardResult, error) {
	o.writes.Add(1)
	if o.failWrites.Load() {
		return nil, fmt.Errorf("injected failure of object %s: %w", obj.ID, store.ErrWriteQuorum)
	}
	return o.Objects.Write(ctx, obj, data, quorum)
}

func (o *faultyObjects) ReadAt(ctx context.Context, obj store.Object, p []byte, off int64) (int, []store.ShardResult, error) {
	o.reads.Add(1)
	return o.Objects.ReadAt(ctx, obj, p, off)
}

// Helpers that fail the test on an unexpected errno.

func mustErrno(t *testing.T, what string, got, want syscall.Errno) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: errno %d (%v), want %d (%v)", what, got, got, want, want)
	}
}

func mustCreate(t *testing.T, f *FS, parent uint64, name string) *metapb.Attr {
	t.Helper()
	a, errno := f.Create(testCtx(t), parent, name, namespace.TypeFile, 0o644, 0, 1000, 1000, true)
	mustErrno(t, "create "+name, errno, 0)
	return a
}

func mustMkdir(t *testing.T, f *FS, parent uint64, name string) *metapb.Attr {
	t.Helper()
	a, errno := f.Mkdir(testCtx(t), parent, name, 0o755, 1000, 1000)
	mustErrno(t, "mkdir "+name, errno, 0)
	return a
}

// mustWrite writes all of p at off.
func mustWrite(t *testing.T, f *FS, ino uint64, p []byte, off int64) {
	t.Helper()
	n, errno := f.Write(testCtx(t), ino, p, off)
	mustErrno(t, fmt.Sprintf("write %d bytes at %d", len(p), off), errno, 0)
	if n != len(p) {
		t.Fatalf("write %d bytes at %d wrote %d", len(p), off, n)
	}
}

func mustFlush(t *testing.T, f *FS, ino uint64) {
	t.Helper()
	mustErrno(t, "flush", f.Flush(testCtx(t), ino), 0)
}

// mustRead reads n bytes at off (fewer at the end of the file).
func mustRead(t *testing.T, f *FS, ino uint64, n int, off int64) []byte {
	t.Helper()
	p := make([]byte, n)
	got, errno := f.Read(testCtx(t), ino, p, off)
	mustErrno(t, fmt.Sprintf("read %d bytes at %d", n, off), errno, 0)
	return p[:got]
}

func mustSize(t *testing.T, f *FS, ino uint64, want uint64) {
	t.Helper()
	a, errno := f.GetAttr(testCtx(t), ino)
	mustErrno(t, "getattr", errno, 0)
	if a.Size != want {
		t.Fatalf("inode %d has size %d, want %d", ino, a.Size, want)
	}
}

// Lookup finds name in directory parent: LookupKept without what the
// kernel may keep, as the tests ask.
func (f *FS) Lookup(ctx context.Context, parent uint64, name string) (*metapb.Attr, syscall.Errno) {
	a, _, errno := f.LookupKept(ctx, parent, name)
	return a, errno
}
