// Package fs is the filesystem a mount serves: its core, which speaks inode
// numbers and syscall.Errno and imports no FUSE library. It turns each
// operation into calls to the metadata service (Meta) and the object layer
// (Objects), keeps per-file write buffers and read caches, and writes
// metadata behind under directory leases. Package fs/fuse adapts it to
// go-fuse's node API.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// Meta is what the filesystem needs of the metadata service;
// *cluster.Client implements it. Apply is exactly-once per command: a
// command that comes back with the Session and Seq an earlier call gave it
// is the same command sent again (the journal resends a batch whose answer
// was lost); clear Seq to send a new one.
type Meta interface {
	Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error)
	Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error)
	Place(ctx context.Context, n int) (*metapb.PlaceResp, error)
	OpenSession(ctx context.Context, name string, ttl time.Duration) (id uint64, expires time.Time, err error)
	Renew(ctx context.Context, id uint64) (time.Time, error)
}

// Objects is what the filesystem needs of the object layer;
// *store.Objects implements it.
type Objects interface {
	Write(ctx context.Context, obj store.Object, data []byte, quorum int) ([]store.ShardResult, error)
	ReadAt(ctx context.Context, obj store.Object, p []byte, off int64) (int, []store.ShardResult, error)
}

// Config configures a filesystem.
type Config struct {
	Meta    Meta
	Objects Objects
	// BufferSize bounds the memory of write buffers; writers wait when it
	// is used up. Default 256 MiB.
	BufferSize int64
	// MetaTimeout is how long one metadata call keeps retrying (a leader
	// change) before the operation fails with EIO. Default 60 s.
	MetaTimeout time.Duration
	// SessionTTL is the mount's lease: its locks and open files are
	// released this long after it stops renewing. Default 30 s.
	SessionTTL time.Duration
	// Name identifies the mount in the session table.
	Name string
	// InlineMax is the largest file written inline into its inode (the
	// metadata service may refuse: then it goes to objects); negative: never.
	// Default: the filesystem's threshold (16 KiB unless set at bootstrap).
	InlineMax int
	// WriteTimeout is how long an object write keeps trying new
	// placements while too few stores answer, before the data is reported
	// lost (EIO on fsync/close). Default 20 s.
	WriteTimeout time.Duration
	// Quorum is the write quorum; 0 means k+1.
	Quorum int
	// NoWriteBehind turns directory leases off, write and read: every
	// change waits for its Raft commit and every lookup asks the service.
	NoWriteBehind bool
	Logger        *slog.Logger
}

// BlockSize is the size of a file content block: the unit of write buffers
// and, at most, of one object.
const BlockSize = 4 << 20

// FS is the filesystem of one mount: the façade that wires the core's
// components and answers the operations of the kernel adapter. It is safe
// for concurrent use. The components, each below the ones that use it
// (locking.go gives their locks' order):
//
//	FS          the operations: tries the view's write-behind path, else
//	            sends the change through the pipeline and notes it
//	dataPlane   file contents: buffers, uploads, commits, reads (data.go)
//	view        names and attributes; write-behind under leases (view.go)
//	leaseTable  directory leases: granting, revocation, giving back
//	renewer     the session: renewed, or replaced when it was lost
//	handleTable open descriptors, their fencing and batched closes
//	pipeline    the one queue of metadata changes, and queries
//	inodeTable  the inodes the mount holds
type FS struct {
	base    *base // configuration, shared read-only by the components
	meta    Meta
	pipe    *pipeline
	inodes  *inodeTable
	handles *handleTable
	leases  *leaseTable
	reads   *readLeases
	view    *view
	data    *dataPlane

	closeOnce sync.Once
	closeErr  error
	stop      context.CancelFunc
	renew     *renewer
}

// New opens a session with the metadata service and returns the
// filesystem. Close ends it.
func New(ctx context.Context, cfg Config) (*FS, error) {
	if cfg.Meta == nil || cfg.Objects == nil {
		return nil, errors.New("fs: Meta and Objects are required")
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 256 << 20
	}
	cfg.BufferSize = max(cfg.BufferSize, 2*BlockSize)
	if cfg.MetaTimeout <= 0 {
		cfg.MetaTimeout = 60 * time.Second
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 30 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &base{cfg: cfg, log: cfg.Logger.With("component", "fs")}
	b.debugOn = b.log.Enabled(ctx, slog.LevelDebug)
	f := &FS{base: b, meta: cfg.Meta}
	pr, err := f.meta.Place(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("fs: asking the metadata service for the scheme: %w", err)
	}
	if b.scheme, err = codec.ParseScheme(pr.Scheme); err != nil {
		return nil, fmt.Errorf("fs: the filesystem's scheme %q: %w", pr.Scheme, err)
	}
	b.packs = pr.Packs
	if cfg.InlineMax == 0 {
		b.cfg.InlineMax = int(pr.InlineMax) // the filesystem's, unless the caller chose
		if pr.InlineMax == 0 {
			b.cfg.InlineMax = -1
		}
	}
	id, _, err := f.meta.OpenSession(ctx, cfg.Name, cfg.SessionTTL)
	if err != nil {
		return nil, fmt.Errorf("fs: opening a session: %w", err)
	}
	f.inodes = newInodeTable()
	f.pipe = newPipeline(b, f.meta, f.inodes)
	f.pipe.sess.Store(id)
	f.handles = newHandleTable(b, f.pipe)
	f.leases = newLeaseTable(b, f.pipe, f.inodes, cfg.NoWriteBehind)
	f.reads = newReadLeases(b, f.pipe, f.handles, cfg.NoWriteBehind)
	f.leases.reads = f.reads
	f.view = &view{base: b, pipe: f.pipe, inodes: f.inodes, leases: f.leases, reads: f.reads, handles: f.handles}
	f.view.inoMu.Init(levelInoAlloc, "view.inoMu")
	f.data = newDataPlane(b, f.meta, cfg.Objects, f.pipe, f.inodes, f.view)

	rctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	f.renew = &renewer{base: b, meta: f.meta, pipe: f.pipe, handles: f.handles, leases: f.leases, reads: f.reads, done: make(chan struct{})}
	go f.renew.run(rctx)
	go f.leases.run(rctx)
	go f.data.reports.run(rctx)
	go f.pipe.run()
	go f.handles.closer.run()
	return f, nil
}

// Stats is a snapshot of the mount's state, for its metrics.
type Stats struct {
	Scheme       codec.Scheme // the filesystem's erasure-coding scheme
	Session      uint64       // the mount's current session
	BufferBytes  int64        // write buffers held (bounded by Config.BufferSize)
	BufferLimit  int64        // Config.BufferSize
	Journal      uint64       // changes written behind, not yet applied by the service
	WriteLeases  int          // directories this mount write-leases
	ReadLeases   int          // directories this mount read-leases
	OpenHandles  int          // files open through the mount
	FetchedBytes int64        // whole blocks read and kept for sequential and read-ahead reads
}

// Stats reports the mount's state now.
func (f *FS) Stats() Stats {
	return Stats{Scheme: f.base.scheme, Session: f.pipe.session(), BufferBytes: f.data.mem.inUse(), BufferLimit: f.base.cfg.BufferSize,
		Journal: f.pipe.backlog(), WriteLeases: f.leases.count(), ReadLeases: f.reads.count(),
		OpenHandles: f.handles.count(), FetchedBytes: f.data.data.size()}
}

// Session is the mount's current session id.
func (f *FS) Session() uint64 { return f.pipe.session() }

// Close flushes every file and ends the session (its locks are released
// and its open files closed at once rather than after the TTL).
func (f *FS) Close() error {
	f.closeOnce.Do(func() { f.closeErr = f.close() })
	return f.closeErr
}

func (f *FS) close() error {
	err := f.data.flushAll(context.Background())
	close(f.handles.closer.stop)
	<-f.handles.closer.done
	f.pipe.close()
	f.stop()
	<-f.renew.done
	<-f.leases.watched
	f.reads.wait()
	<-f.data.reports.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, e := f.meta.Apply(ctx, &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: f.pipe.session()}}}); e != nil && err == nil {
		err = fmt.Errorf("fs: ending the session: %w", e)
	}
	return err
}
