package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	join := fs.String("join", "", "API address of a member to join through")
	joinTimeout := fs.Duration("join-timeout", time.Minute, "how long to keep trying to join")
	suspectAfter := fs.Duration("suspect-after", 10*time.Second, "a store silent this long is suspect (not used for new data)")
	downAfter := fs.Duration("down-after", time.Minute, "a store silent this long is down (its shards are to be rebuilt)")
	pprof := fs.Bool("pprof", false, "also serve /debug/pprof/ on --http-addr")
	healEvery := fs.Duration("heal-interval", time.Second, "how often the leader rebuilds shards that are missing or on down stores")
	gcEvery := fs.Duration("gc-interval", 2*time.Second, "how often the leader deletes the shards of unreferenced objects")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *apiAddr)
	if err != nil {
		return fmt.Errorf("listening for the API: %w", err)
	}
	defer ln.Close()
	fsm := cluster.NewFSM()
	node, err := cluster.NewNode(cluster.NodeConfig{
		ID: *id, DataDir: *dataDir, RaftAddr: *raftAddr, Bootstrap: *bootstrap, Logger: log,
	}, fsm)
	if err != nil {
		return err
	}
	defer node.Close()
	srv := cluster.NewServer(node, fsm, ln.Addr().String(), secret, log)
	defer srv.Close()
	g := srv.GRPCServer()
	errc := make(chan error, 2)
	go func() { errc <- g.Serve(ln) }()
	defer g.Stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	actx, cancelAnnounce := context.WithCancel(ctx)
	defer cancelAnnounce()
	shards := store.NewClient(store.ClientConfig{Secret: secret})
	defer shards.Close()
	objects, err := store.NewObjects(store.ObjectsConfig{Client: shards, Logger: log})
	if err != nil {
		return err
	}
	wg.Add(5)
	go func() {
		defer wg.Done()
		srv.RunHealer(actx, shardRebuilder{objects}, *healEvery, 16)
	}()
	go func() { defer wg.Done(); srv.AnnounceSelf(actx) }()
	go func() { defer wg.Done(); srv.RunExpiry(actx, 0) }()
	go func() { defer wg.Done(); srv.RunGC(actx, shardDeleter{shards}, *gcEvery) }()
	go func() {
		defer wg.Done()
		srv.RunHealth(actx, cluster.HealthConfig{SuspectAfter: *suspectAfter, DownAfter: *downAfter})
	}()
	if *bootstrap {
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Init(actx, scheme.String(), scheme.K, scheme.M) }()
	}

	if *httpAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		hln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("listening for metrics: %w", err)
		}
		mux := http.NewServeMux()
		if *pprof {
			mux.HandleFunc("/debug/pprof/", httppprof.Index)
			mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		}
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if node.Raft().Leader() == "" {
				http.Error(w, "no leader", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.Serve(hln) }()
		defer hs.Close()
	}

	if *join != "" && !node.HadState() {
		c, err := cluster.NewClient([]string{*join}, secret)
		if err != nil {
			return err
		}
		jctx, cancel := context.WithTimeout(ctx, *joinTimeout)
		err = c.Join(jctx, &metapb.JoinReq{Id: *id, RaftAddr: *raftAddr, ApiAddr: ln.Addr().String()})
		cancel()
		c.Close()
		if err != nil {
			return fmt.Errorf("joining through %s: %w", *join, err)
		}
	}
	log.Info("meta serving", "id", *id, "api", ln.Addr().String(), "raft", *raftAddr, "data_dir", *dataDir)
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("stopping")
	return nil
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
				errs[i] = res[i].Err
			}
			return errs
		}
	}
	for i := range errs {
		errs[i] = err
	}
	return errs
}
