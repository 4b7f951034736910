// Package fs is the filesystem a mount serves. Its core (this file and the
// others without "fuse" in their name) speaks inode numbers and
// syscall.Errno and imports no FUSE library: it turns each operation into
// calls to the metadata service (Meta) and the object layer (Objects), keeps
// per-file write buffers and read caches, and is tested with an in-process
// cluster. fuse.go adapts it to go-fuse's node API.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
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
	// NoWriteBehind turns directory leases off: every operation waits for
	// its Raft commit.
	NoWriteBehind bool
	Logger        *slog.Logger
}

// BlockSize is the size of a file content block: the unit of write buffers
// and, at most, of one object.
const BlockSize = 4 << 20

// FS is the filesystem of one mount. It is safe for concurrent use.
type FS struct {
	cfg    Config
	meta   Meta
	objs   Objects
	log    *slog.Logger
	scheme codec.Scheme
	mem    *budget

	session atomic.Uint64
	handles atomic.Uint64

	mu     sync.Mutex
	inodes map[uint64]*inode

	uploads chan struct{} // slots of objects being stored at once
	places  placer
	closer  closer
	closing chan struct{} // closed by Close: the closer sends what is left

	closeOnce sync.Once
	closeErr  error
	objCache  objectCache
	reports   reporter // bad shards reads found, sent to the healer (report.go)

	stop    context.CancelFunc
	renewed chan struct{}
	watched chan struct{}

	// Write-behind under directory leases (lease.go, journal.go).
	jr        journal
	jrStop    chan struct{}
	lmu       sync.Mutex
	leases    map[uint64]*dirLease
	returning map[uint64]int // directories being given back (giveBack), by lmu
	leaseKick chan struct{}  // a lease was granted: watch for its revocation
	inoMu     sync.Mutex
	inoNext   uint64 // inode numbers reserved for this mount: [inoNext, inoEnd)
	inoEnd    uint64
	noLeases  bool
	debugOn   bool // the logger takes Debug records (per-change logs)

	// svcMu: read-held by a change through the service from before it is
	// applied until the mount's view has recorded it (lockService);
	// write-held by acquire while it loads a directory's entries, so that
	// no change made here through the service is missed by both the load
	// and its note (locking.go, level 0).
	svcMu     sync.RWMutex
	hitsMu    sync.Mutex
	hits      map[uint64]int // changes through the service, by directory
	acquiring atomic.Bool

	hmu    sync.Mutex
	opened map[*Handle]struct{} // open handles, registered again under a new session
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
	f := &FS{
		cfg:    cfg,
		meta:   cfg.Meta,
		objs:   cfg.Objects,
		log:    cfg.Logger.With("component", "fs"),
		mem:    newBudget(cfg.BufferSize),
		inodes: map[uint64]*inode{},
		// Encoding and shard transfers of a few blocks at once keep the
		// stores busy; more only adds parity buffers and memory.
		uploads: make(chan struct{}, 8),
	}
	f.places.fs = f
	f.leases = map[uint64]*dirLease{}
	f.returning = map[uint64]int{}
	f.leaseKick = make(chan struct{}, 1)
	f.opened = map[*Handle]struct{}{}
	f.noLeases = cfg.NoWriteBehind
	f.debugOn = f.log.Enabled(ctx, slog.LevelDebug)
	f.jr.init(f)
	f.mem.pressure = f.relieve
	f.objCache.m = map[uint64]*store.Object{}
	f.reports.init(f)
	pr, err := f.meta.Place(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("fs: asking the metadata service for the scheme: %w", err)
	}
	if f.scheme, err = codec.ParseScheme(pr.Scheme); err != nil {
		return nil, fmt.Errorf("fs: the filesystem's scheme %q: %w", pr.Scheme, err)
	}
	if cfg.InlineMax == 0 {
		f.cfg.InlineMax = int(pr.InlineMax) // the filesystem's, unless the caller chose
		if pr.InlineMax == 0 {
			f.cfg.InlineMax = -1
		}
	}
	id, _, err := f.meta.OpenSession(ctx, cfg.Name, cfg.SessionTTL)
	if err != nil {
		return nil, fmt.Errorf("fs: opening a session: %w", err)
	}
	f.session.Store(id)
	rctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	f.renewed = make(chan struct{})
	go f.renewLoop(rctx)
	f.watched = make(chan struct{})
	go f.watchLeases(rctx)
	go f.reports.run(rctx)
	f.jrStop = make(chan struct{})
	go f.jr.run(f.jrStop)
	f.closer = closer{fs: f, kick: make(chan struct{}, 1), done: make(chan struct{})}
	f.closing = make(chan struct{})
	go f.closer.run(f.closing)
	return f, nil
}

// Scheme is the filesystem's erasure-coding scheme.
func (f *FS) Scheme() codec.Scheme { return f.scheme }

// Session is the mount's current session id.
func (f *FS) Session() uint64 { return f.session.Load() }

// renewLoop renews the session every third of its TTL. A session that
// expired anyway (the mount was cut off longer than its lease) is replaced
// by a new one: its locks and directory leases are lost, and the files open
// here are registered again under it (one freed meanwhile, unlinked
// elsewhere, is said in the log; its reads fail). What was written under
// the old session is committed under it or not at all (the service refuses
// it: EIO at fsync and close), and descriptors that took locks under it
// are fenced (fence).
func (f *FS) renewLoop(ctx context.Context) {
	defer close(f.renewed)
	t := time.NewTicker(f.cfg.SessionTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, f.cfg.SessionTTL)
		_, err := f.meta.Renew(cctx, f.session.Load())
		cancel()
		if errors.Is(err, syscall.ESTALE) {
			f.log.Error("the mount's session expired: its locks are lost; opening a new one")
			cctx, cancel := context.WithTimeout(ctx, f.cfg.MetaTimeout)
			id, _, err := f.meta.OpenSession(cctx, f.cfg.Name, f.cfg.SessionTTL)
			cancel()
			if err != nil {
				f.log.Error("opening a new session", "err", err)
				continue
			}
			f.fence()
			f.session.Store(id)
			f.dropLeases(false)
			f.reopen(ctx, id)
		} else if err != nil && ctx.Err() == nil {
			f.log.Warn("renewing the session", "err", err)
		}
	}
}

// Close flushes every file and ends the session (its locks are released
// and its open files closed at once rather than after the TTL).
func (f *FS) Close() error {
	f.closeOnce.Do(func() { f.closeErr = f.close() })
	return f.closeErr
}

func (f *FS) close() error {
	err := f.FlushAll(context.Background())
	close(f.closing)
	<-f.closer.done
	close(f.jrStop)
	<-f.jr.done
	f.stop()
	<-f.renewed
	<-f.watched
	<-f.reports.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, e := f.meta.Apply(ctx, &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: f.session.Load()}}}); e != nil && err == nil {
		err = fmt.Errorf("fs: ending the session: %w", e)
	}
	return err
}

// ctx bounds one metadata call by MetaTimeout.
func (f *FS) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, f.cfg.MetaTimeout)
}

// apply runs a mutation and turns a failure to reach the service into EIO.
// The journal is applied first, so that the mutation follows everything
// the mount did before. A mutation refused because another mount holds a
// lease on a directory it touches is retried (the service has asked the
// holder to give it back) until MetaTimeout.
func (f *FS) apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, syscall.Errno) {
	f.jr.drain()
	cctx, cancel := f.ctx(ctx)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		cmd.LeaseSession = f.session.Load()
		cmd.Seq = 0 // a new attempt, not the same command again
		r, err := f.meta.Apply(cctx, cmd)
		if err != nil {
			return nil, f.ioErr("metadata", err)
		}
		if !r.Leased {
			if f.debugOn {
				f.log.Debug("applied", "cmd", fmt.Sprintf("%v", cmd.Op), "errno", syscall.Errno(r.Errno).Error())
			}
			return r, syscall.Errno(r.Errno)
		}
		if e := sleepCtx(cctx, delay); e != 0 {
			return nil, e
		}
	}
}

// read runs a query, linearizable, once the changes this mount wrote
// behind that it could see are applied: for a query about one inode, those
// that name it (a directory's entries are named by the directory), not the
// whole journal. A query of a directory another mount leases revokes the
// lease and is retried.
func (f *FS) read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, syscall.Errno) {
	switch op := q.Op.(type) {
	case *metapb.ReadReq_Lookup:
		f.jr.waitFor(op.Lookup.Parent)
	case *metapb.ReadReq_Getattr:
		f.jr.waitFor(op.Getattr.Ino)
	case *metapb.ReadReq_Readdir:
		f.jr.waitFor(op.Readdir.Ino)
	case *metapb.ReadReq_Readlink:
		f.jr.waitFor(op.Readlink.Ino)
	case *metapb.ReadReq_Getxattr:
		f.jr.waitFor(op.Getxattr.Ino)
	case *metapb.ReadReq_Listxattr:
		f.jr.waitFor(op.Listxattr.Ino)
	case *metapb.ReadReq_Getlk:
		f.jr.waitFor(op.Getlk.Ino)
	case *metapb.ReadReq_Slices:
		f.jr.waitFor(op.Slices.Ino)
	case *metapb.ReadReq_Statfs, *metapb.ReadReq_LockWait, *metapb.ReadReq_Objects, *metapb.ReadReq_Revokes:
	default:
		f.jr.drain()
	}
	return f.query(ctx, q)
}

// query is read without waiting for the journal: for what it cannot
// change, or after waiting for the part that can.
func (f *FS) query(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, syscall.Errno) {
	cctx, cancel := f.ctx(ctx)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		q.LeaseSession = f.session.Load()
		r, err := f.meta.Read(cctx, q)
		if err != nil {
			return nil, f.ioErr("metadata", err)
		}
		if !r.Leased {
			return r, syscall.Errno(r.Errno)
		}
		if dir := leaseDir(q); dir != 0 {
			if _, err := f.meta.Apply(cctx, &metapb.Command{LeaseSession: q.LeaseSession, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
				Dir: dir, Mode: 3}}}); err != nil {
				return nil, f.ioErr("metadata", err)
			}
		}
		if e := sleepCtx(cctx, delay); e != 0 {
			return nil, e
		}
	}
}

// sleepCtx waits d, or returns EIO when ctx ends first (EINTR if it was
// canceled).
func sleepCtx(ctx context.Context, d time.Duration) syscall.Errno {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return syscall.EINTR
		}
		return syscall.EIO
	}
}

// ioErr logs err and returns EIO, or EINTR if the caller gave up.
func (f *FS) ioErr(what string, err error) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	f.log.Error(what+" call failed", "err", err)
	return syscall.EIO
}
