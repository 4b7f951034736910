package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
	"github.com/hashicorp/raft"
)

func runMeta(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("meta", "--id ID --data-dir DIR --raft-addr H:P --api-addr H:P --secret-file F (--bootstrap [--ec K+M] | --join API_ADDR) [flags]\n\n"+
		"Runs a member of the metadata service's Raft group. Start the first with --bootstrap,\n"+
		"the others with --join (any member's API address). A member restarted with its\n"+
		"--data-dir comes back with its state; --bootstrap and --join are then ignored.", stdout)
	id := fs.String("id", "", "this member's name, stable across restarts; required")
	dataDir := fs.String("data-dir", "", "directory for the Raft log and snapshots; required")
	raftAddr := fs.String("raft-addr", ":9101", "host:port of the Raft transport (other members must reach it)")
	apiAddr := fs.String("api-addr", ":9100", "host:port of the metadata API")
	httpAddr := fs.String("http-addr", "", "host:port for /metrics and /healthz (empty: off)")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret (ecfs keygen); required")
	bootstrap := fs.Bool("bootstrap", false, "start a new group with this member")
	ec := fs.String("ec", "4+2", "erasure-coding scheme of a new filesystem (with --bootstrap)")
	inlineMax := fs.Int("inline-max", 16<<10, "files up to this many bytes are kept inline in the metadata, replicated by Raft (0: never; at most 1 MiB; with --bootstrap)")
	join := fs.String("join", "", "API address of a member to join through")
	joinTimeout := fs.Duration("join-timeout", time.Minute, "how long to keep trying to join")
	suspectAfter := fs.Duration("suspect-after", 10*time.Second, "a store silent this long is suspect (not used for new data)")
	downAfter := fs.Duration("down-after", time.Minute, "a store silent this long is down (its shards are to be rebuilt)")
	pprof := fs.Bool("pprof", false, "also serve /debug/pprof/ on --http-addr")
	healEvery := fs.Duration("heal-interval", time.Second, "how often the leader looks for shards to rebuild (missing, rotten, on down stores) or move (off draining stores)")
	healRate := fs.Float64("heal-rate", cluster.DefaultHealRate>>20, "MB/s (MiB) the healer may read to rebuild shards; 0: no limit")
	healParallel := fs.Int("heal-parallel", 4, "objects the healer rebuilds at once")
	gcEvery := fs.Duration("gc-interval", 2*time.Second, "how often the leader deletes the shards of unreferenced objects")
	compactEvery := fs.Duration("compact-interval", 10*time.Second, "how often the leader rewrites blocks made of many small slices (random writes, appends) as one object; negative: never")
	compactIdle := fs.Duration("compact-idle", 30*time.Second, "a block is compacted only once it has not changed for this long")
	compactGCDelay := fs.Duration("compact-gc-delay", 10*time.Minute, "the objects a compaction replaced are deleted this long after (readers may still hold them)")
	orphanEvery := fs.Duration("orphan-interval", 5*time.Minute, "how often the leader lists every store for orphan shards (no record points at them); 0: never")
	orphanGrace := fs.Duration("orphan-grace", 10*time.Minute, "an orphan shard younger than this is kept (a write may still commit it); keep it above the mounts' --meta-timeout + --write-timeout")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	tlsf := addTLSFlags(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	switch {
	case *id == "":
		return &usageError{"--id is required"}
	case *dataDir == "":
		return &usageError{"--data-dir is required"}
	case *bootstrap && *join != "":
		return &usageError{"--bootstrap and --join exclude each other"}
	}
	scheme, err := codec.ParseScheme(*ec)
	if err != nil {
		return &usageError{fmt.Sprintf("--ec: %v", err)}
	}
	for _, a := range []string{*raftAddr, *apiAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return &usageError{fmt.Sprintf("address %q: %v", a, err)}
		}
	}
	if *inlineMax < 0 || *inlineMax > 1<<20 {
		return &usageError{"--inline-max must be between 0 and 1048576"}
	}
	if *healRate < 0 || *healParallel < 1 || *healParallel > 256 {
		return &usageError{"need --heal-rate >= 0 and 1 <= --heal-parallel <= 256"}
	}
	if *suspectAfter <= 0 || *downAfter < *suspectAfter {
		return &usageError{"need 0 < --suspect-after <= --down-after"}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	secret, err := readSecret(*secretFile)
	if err != nil {
		return err
	}
	tlsCfg, err := tlsf.load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	d, err := startMeta(ctx, metaOptions{
		ID: *id, DataDir: *dataDir, RaftAddr: *raftAddr, APIAddr: *apiAddr, HTTPAddr: *httpAddr, Pprof: *pprof,
		Secret: secret, TLS: tlsCfg, Bootstrap: *bootstrap, Scheme: scheme, InlineMax: *inlineMax, Join: *join, JoinTimeout: *joinTimeout,
		Health:  cluster.HealthConfig{SuspectAfter: *suspectAfter, DownAfter: *downAfter},
		Heal:    cluster.HealConfig{Every: *healEvery, Rate: int64(*healRate * (1 << 20)), Parallel: *healParallel},
		Compact: cluster.CompactConfig{Every: *compactEvery, Idle: *compactIdle, GCDelay: *compactGCDelay},
		GCEvery: *gcEvery, OrphanEvery: *orphanEvery, OrphanGrace: *orphanGrace,
	}, log)
	if err != nil {
		return err
	}
	defer d.Close()
	select {
	case err := <-d.Err():
		return err
	case <-ctx.Done():
	}
	log.Info("stopping")
	return nil
}

// metaOptions configure one metadata service member: the flags of
// `ecfs meta`, and the lone member `ecfs dev` runs.
type metaOptions struct {
	ID       string
	DataDir  string // Raft log, stable store and snapshots
	RaftAddr string // host:port of the Raft TCP transport
	// Transport, if set, replaces the TCP transport on RaftAddr (ecfs dev's
	// single member needs no network for Raft).
	Transport   raft.Transport
	Fast        bool   // short Raft timeouts (a group on one host)
	APIAddr     string // host:port of the metadata API (port 0: any free one)
	HTTPAddr    string // host:port for /metrics and /healthz; empty: off
	Pprof       bool   // also /debug/pprof/ on HTTPAddr
	Secret      string
	TLS         *tls.Config  // nil: plaintext (the secret still authenticates)
	Bootstrap   bool         // start a new group (ignored when DataDir holds state)
	Scheme      codec.Scheme // of a new filesystem, with Bootstrap
	InlineMax   int          // inline threshold of a new filesystem, with Bootstrap
	Join        string       // API address of a member to join through (ignored when DataDir holds state)
	JoinTimeout time.Duration
	Health      cluster.HealthConfig
	Heal        cluster.HealConfig    // the leader's healer
	Compact     cluster.CompactConfig // the leader's compactor
	GCEvery     time.Duration         // how often the leader's GC runs
	OrphanEvery time.Duration         // how often the leader looks for orphan shards (0: never)
	OrphanGrace time.Duration         // how old an orphan shard must be to go
}

// metaDaemon is a running metadata service member.
type metaDaemon struct {
	APIAddr string // the address the API listens on
	Node    *cluster.Node

	errc      chan error
	undo      []func() // in reverse order they stop it
	closeOnce sync.Once
}

// startMeta starts a metadata service member: Raft, the API, and the
// leader's workers (health, healer, GC, session expiry, and with Bootstrap
// the scheme's initialisation). It returns once the member serves (after
// joining, with Join). The workers stop when ctx ends; Close stops the rest.
func startMeta(ctx context.Context, o metaOptions, log *slog.Logger) (_ *metaDaemon, err error) {
	d := &metaDaemon{errc: make(chan error, 2)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	ln, err := net.Listen("tcp", o.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("listening for the API: %w", err)
	}
	d.APIAddr = ln.Addr().String()
	d.undo = append(d.undo, func() { ln.Close() })
	fsm := cluster.NewFSM()
	node, err := cluster.NewNode(cluster.NodeConfig{
		ID: o.ID, DataDir: o.DataDir, RaftAddr: o.RaftAddr, Transport: o.Transport, Secret: o.Secret, TLS: o.TLS, Fast: o.Fast,
		Bootstrap: o.Bootstrap, Logger: log,
	}, fsm)
	if err != nil {
		return nil, err
	}
	d.Node = node
	d.undo = append(d.undo, func() { node.Close() })
	srv := cluster.NewServer(node, fsm, d.APIAddr, o.Secret, log, cluster.WithTLS(o.TLS))
	d.undo = append(d.undo, srv.Close)
	calls := newStoreCalls("ecfs_meta")
	commits := newCommitLatency()
	srv.ObserveCommits(func(d time.Duration) { commits.Observe(d.Seconds()) })
	shards := store.NewClient(store.ClientConfig{Secret: o.Secret, TLS: o.TLS, Observe: calls.observe})
	srv.EnableFsck(fsckStores{shards}, o.OrphanGrace) // before the API serves
	g := srv.GRPCServer()
	go func() {
		if err := g.Serve(ln); err != nil {
			d.errc <- fmt.Errorf("serving: %w", err)
		}
	}()
	d.undo = append(d.undo, g.Stop)

	var wg sync.WaitGroup
	actx, cancel := context.WithCancel(ctx)
	d.undo = append(d.undo, shards.Close, wg.Wait, cancel)
	objects, err := store.NewObjects(store.ObjectsConfig{Client: shards, Logger: log})
	if err != nil {
		return nil, err
	}
	wg.Add(5)
	go func() {
		defer wg.Done()
		srv.RunHealer(actx, shardRebuilder{objects}, shardDeleter{shards}, o.Heal)
	}()
	go func() { defer wg.Done(); srv.AnnounceSelf(actx) }()
	wg.Add(1)
	go func() { defer wg.Done(); srv.RunCompactor(actx, blockIO{objects}, shardDeleter{shards}, o.Compact) }()
	go func() { defer wg.Done(); srv.RunExpiry(actx, 0) }()
	go func() { defer wg.Done(); srv.RunGC(actx, shardDeleter{shards}, o.GCEvery) }()
	wg.Add(1)
	go func() { defer wg.Done(); srv.RunOrphanGC(actx, shardDeleter{shards}, o.OrphanEvery, o.OrphanGrace) }()
	go func() { defer wg.Done(); srv.RunHealth(actx, o.Health) }()
	if o.Bootstrap {
		wg.Add(1)
		im := uint32(o.InlineMax)
		init := &metapb.InitOp{Scheme: o.Scheme.String(), K: uint32(o.Scheme.K), M: uint32(o.Scheme.M), InlineMax: &im}
		go func() { defer wg.Done(); _ = srv.InitWith(actx, init) }()
	}

	if o.HTTPAddr != "" {
		hln, err := net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("listening for metrics: %w", err)
		}
		reg := newRegistry()
		reg.MustRegister(newHealCollector(srv), newRaftCollector(node, srv), newClusterCollector(srv), commits)
		reg.MustRegister(calls.collectors()...)
		mux := opsMux(reg, o.Pprof, func(w http.ResponseWriter, r *http.Request) {
			if node.Raft().Leader() == "" {
				http.Error(w, "no leader", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { d.errc <- fmt.Errorf("serving: %w", hs.Serve(hln)) }()
		d.undo = append(d.undo, func() { hs.Close() })
	}

	if o.Join != "" && !node.HadState() {
		c, err := cluster.NewClient([]string{o.Join}, o.Secret, cluster.WithTLS(o.TLS))
		if err != nil {
			return nil, err
		}
		jctx, cancel := context.WithTimeout(ctx, o.JoinTimeout)
		err = c.Join(jctx, &metapb.JoinReq{Id: o.ID, RaftAddr: o.RaftAddr, ApiAddr: d.APIAddr, Features: cluster.Features})
		cancel()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("joining through %s: %w", o.Join, err)
		}
	}
	raftAddr := o.RaftAddr
	if o.Transport != nil {
		raftAddr = string(o.Transport.LocalAddr())
	}
	log.Info("meta serving", "id", o.ID, "api", d.APIAddr, "raft", raftAddr, "data_dir", o.DataDir)
	return d, nil
}

// Err delivers an error if the member stops serving by itself.
func (d *metaDaemon) Err() <-chan error { return d.errc }

// Close stops the member: its workers, its API and Raft. It may be called
// more than once.
func (d *metaDaemon) Close() {
	d.closeOnce.Do(func() {
		for i := len(d.undo) - 1; i >= 0; i-- {
			d.undo[i]()
		}
	})
}

// shardDeleter lets the meta leader's GC delete shards through the store
// client (cluster imports no store code).
type shardDeleter struct{ c *store.Client }

func (d shardDeleter) DeleteShards(ctx context.Context, object uint64, addrs []string) error {
	for i, a := range addrs {
		if a == "" {
			continue
		}
		err := d.c.Delete(ctx, a, store.ShardKey{Object: store.ObjectID(object), Index: i})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// ListShards lists the shards of the store at addr, page by page.
func (d shardDeleter) ListShards(ctx context.Context, addr string, fn func(object uint64, index int, mtime time.Time)) error {
	return fsckStores(d).ListShards(ctx, addr, func(object uint64, index int, _ int64, mtime time.Time) {
		fn(object, index, mtime)
	})
}

// DeleteShard deletes one shard; one already gone is not an error.
func (d shardDeleter) DeleteShard(ctx context.Context, addr string, object uint64, index int) error {
	err := d.c.Delete(ctx, addr, store.ShardKey{Object: store.ObjectID(object), Index: index})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// fsckStores lets the meta leader's fsck list, check and delete shards
// through the store client.
type fsckStores struct{ c *store.Client }

func (f fsckStores) ListShards(ctx context.Context, addr string, fn func(object uint64, index int, size int64, mtime time.Time)) error {
	after := ""
	for {
		page, err := f.c.List(ctx, addr, after, 1000)
		if err != nil {
			return err
		}
		for _, sh := range page.Shards {
			k, err := store.ParseShardKey(sh.Key)
			// Skip what the store cannot name, and a shard gone between its
			// directory listing and its stat (no time): not listed.
			if err != nil || sh.ModTime.IsZero() {
				continue
			}
			fn(uint64(k.Object), k.Index, sh.Size, sh.ModTime)
		}
		if page.Next == "" {
			return nil
		}
		after = page.Next
	}
}

func (f fsckStores) Corrupt(ctx context.Context, addr string) ([]*metapb.ShardRef, error) {
	list, err := f.c.Corrupt(ctx, addr)
	if err != nil {
		return nil, err
	}
	out := make([]*metapb.ShardRef, 0, len(list))
	for _, c := range list {
		if k, err := store.ParseShardKey(c.Key); err == nil {
			out = append(out, &metapb.ShardRef{Object: uint64(k.Object), Index: uint32(k.Index)})
		}
	}
	return out, nil
}

func (f fsckStores) StatShard(ctx context.Context, addr string, object uint64, index int) error {
	_, err := f.c.Stat(ctx, addr, store.ShardKey{Object: store.ObjectID(object), Index: index})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %v", cluster.ErrShardNotFound, err)
	}
	return err
}

func (f fsckStores) VerifyShard(ctx context.Context, addr string, object uint64, index int) (bool, error) {
	return shardDeleter(f).VerifyShard(ctx, addr, object, index)
}

// VerifyShard has the store check every chunk of a shard (the healer does
// before rewriting a shard reported bad; fsck --verify).
func (d shardDeleter) VerifyShard(ctx context.Context, addr string, object uint64, index int) (bool, error) {
	r, err := d.c.Verify(ctx, addr, store.ShardKey{Object: store.ObjectID(object), Index: index})
	if err != nil {
		return false, err
	}
	return r.OK, nil
}

func (f fsckStores) DeleteShard(ctx context.Context, addr string, object uint64, index int) error {
	return shardDeleter(f).DeleteShard(ctx, addr, object, index)
}

// ShardFileSize is the size of a shard file as the store writes it: the
// header with a checksum per chunk, padded, then the data.
func (fsckStores) ShardFileSize(scheme string, objectLen int64) (int64, error) {
	sc, err := codec.ParseScheme(scheme)
	if err != nil {
		return 0, err
	}
	if objectLen < 0 || objectLen > int64(sc.BlockSize) {
		return 0, fmt.Errorf("object length %d outside 0..%d", objectLen, sc.BlockSize)
	}
	n := sc.ShardSize(objectLen)
	h := store.ShardHeader{ShardLen: n, Sums: make([]uint32, codec.Chunks(n))}
	return h.DataOffset() + n, nil
}

// shardRebuilder lets the meta leader's healer rebuild shards through the
// object layer.
type shardRebuilder struct{ o *store.Objects }

func (r shardRebuilder) RebuildShards(ctx context.Context, scheme string, object uint64, length int64, from []string, shards []int, to []string) []error {
	errs := make([]error, len(shards))
	sc, err := codec.ParseScheme(scheme)
	if err == nil {
		var res []store.ShardResult
		res, err = r.o.Rebuild(ctx, store.Object{ID: store.ObjectID(object), Scheme: sc, Length: length, Placement: from}, shards, to)
		if err == nil {
			for i := range res {
				errs[i] = healError(res[i].Err)
			}
			return errs
		}
		// Rebuild fails whole only when it cannot read the object.
		err = fmt.Errorf("%w: %v", cluster.ErrSourceUnreadable, err)
	}
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// healError tells the healer why a store refused a shard: full (it backs
// off until the store has room) or unreachable.
func healError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrResourceExhausted):
		return fmt.Errorf("%w: %v", cluster.ErrStoreFull, err)
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("%w: %v", cluster.ErrStoreUnreachable, err)
	}
	return err
}
