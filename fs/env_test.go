package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/store"
	"github.com/hashicorp/raft"
)

// The in-process cluster the core is tested against: one metadata member
// (a single-voter Raft group with its log in bolt under t.TempDir(), on
// raft's in-memory transport, serving the real gRPC API on 127.0.0.1) and
// six stores (4+2) serving the real shard API on 127.0.0.1. Nothing here
// touches FUSE.

const (
	testSecret = "0123456789abcdef0123456789abcdef"
	testScheme = "4+2"
	testStores = 6
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// env is a running cluster and what a mount needs to reach it.
type env struct {
	t        *testing.T
	metaAddr string
	fsm      *cluster.FSM
}

// testCtx bounds a test: a hang fails instead of blocking the whole run.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newEnv starts the cluster; everything stops when the test ends.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := testCtx(t)
	log := quietLogger()
	e := &env{t: t}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.metaAddr = ln.Addr().String()
	_, trans := raft.NewInmemTransport(raft.ServerAddress("meta-" + t.Name()))
	e.fsm = cluster.NewFSM()
	node, err := cluster.NewNode(cluster.NodeConfig{
		ID: "m1", DataDir: t.TempDir(), Transport: trans, Fast: true, Bootstrap: true, Logger: log,
	}, e.fsm)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := cluster.NewServer(node, e.fsm, e.metaAddr, testSecret, log)
	g := srv.GRPCServer()
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(ln) }()
	wctx, stopWorkers := context.WithCancel(context.Background())
	announced := make(chan struct{})
	go func() { defer close(announced); srv.AnnounceSelf(wctx) }()
	t.Cleanup(func() {
		stopWorkers()
		<-announced
		g.Stop()
		<-served
		srv.Close()
		if err := node.Close(); err != nil {
			t.Errorf("closing the raft node: %v", err)
		}
	})
	waitUntil(t, "a raft leader", 10*time.Second, node.IsLeader)
	if err := srv.Init(ctx, testScheme, 4, 2); err != nil {
		t.Fatalf("init: %v", err)
	}

	mc := e.client()
	for i := range testStores {
		ss, err := store.NewServer(store.Config{DataDir: t.TempDir(), Secret: testSecret, ScrubInterval: -1, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		sln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := sln.Addr().String()
		hs := ss.HTTPServer(addr)
		done := make(chan struct{})
		go func() { defer close(done); _ = hs.Serve(sln) }()
		t.Cleanup(func() {
			if err := hs.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("closing store %d: %v", i, err)
			}
			<-done
		})
		c := ss.Capacity()
		if err := mc.Heartbeat(ctx, &metapb.StoreInfo{Id: ss.ID(), Addr: addr, Host: fmt.Sprint("h", i),
			TotalBytes: c.Total, FreeBytes: c.Free}); err != nil {
			t.Fatalf("registering store %d: %v", i, err)
		}
	}
	return e
}

// client is a new metadata client, closed with the test.
func (e *env) client() *cluster.Client {
	e.t.Helper()
	c, err := cluster.NewClient([]string{e.metaAddr}, testSecret)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// objects is a new object layer, its connections closed with the test.
func (e *env) objects() *store.Objects {
	e.t.Helper()
	sc := store.NewClient(store.ClientConfig{Secret: testSecret})
	e.t.Cleanup(sc.Close)
	o, err := store.NewObjects(store.ObjectsConfig{Client: sc, Logger: quietLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// mount is another mount of the cluster (its own session, metadata client
// and object layer), closed with the test. cfg adjusts the configuration;
// objs, if set, wraps the object layer.
func (e *env) mount(name string, cfg func(*Config), wrap func(Objects) Objects) *FS {
	e.t.Helper()
	var objs Objects = e.objects()
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

// newTestFS starts a cluster and mounts it once.
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
