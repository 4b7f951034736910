package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func runStore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("store", "--data-dir DIR [--disk DIR]... --addr H:P --secret-file F [--meta A1,A2,A3] [flags]\n\n"+
		"Runs a store daemon: it keeps shards under each --disk (default DIR/disk), serves the\n"+
		"shard API on --addr and /metrics and /healthz on --http-addr. SIGTERM lets in-flight\n"+
		"requests finish (up to --shutdown-timeout) and exits 0.", stdout)
	dataDir := fs.String("data-dir", "", "directory for the store id (and the default disk); required")
	var disks listFlag
	fs.Var(&disks, "disk", "a directory to keep shards in (repeatable); new shards go to the one with most free space")
	addr := fs.String("addr", ":9200", "host:port of the shard API")
	httpAddr := fs.String("http-addr", ":9300", "host:port for /metrics and /healthz (empty: off)")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret (ecfs keygen); required")
	meta := fs.String("meta", "", "comma-separated metadata service addresses to register with")
	host := fs.String("host", "", "host label used by placement (default: the hostname)")
	zone := fs.String("zone", "", "zone label used by placement")
	maxShard := fs.Int64("max-shard-size", store.DefaultMaxShardSize, "largest shard accepted, in bytes")
	reserve := fs.Int64("reserve", store.DefaultReserve, "bytes kept free on every disk; writes past it fail with ResourceExhausted")
	scrubEvery := fs.Duration("scrub-interval", store.DefaultScrubInterval, "pause between background scrub passes over every shard (negative: no scrub)")
	scrubRate := fs.Int64("scrub-rate", store.DefaultScrubRate, "bytes per second the scrub may read")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	pprof := fs.Bool("pprof", false, "also serve /debug/pprof/ on --http-addr")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *dataDir == "" {
		return &usageError{"--data-dir is required"}
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		return &usageError{fmt.Sprintf("--addr %q: %v", *addr, err)}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	secret, err := readSecret(*secretFile)
	if err != nil {
		return err
	}
	if *host == "" {
		*host, _ = os.Hostname()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := store.NewServer(store.Config{
		DataDir:       *dataDir,
		Disks:         disks,
		Secret:        secret,
		MaxShardSize:  *maxShard,
		Reserve:       *reserve,
		ScrubInterval: *scrubEvery,
		ScrubRate:     *scrubRate,
		Logger:        log,
		Registerer:    reg,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening for the shard API: %w", err)
	}
	var hln net.Listener
	if *httpAddr != "" {
		if hln, err = net.Listen("tcp", *httpAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listening for metrics: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	api := srv.HTTPServer(*addr)
	errc := make(chan error, 2)
	scrubCtx, stopScrub := context.WithCancel(ctx)
	scrubbed := make(chan struct{})
	go func() { srv.Scrub(scrubCtx); close(scrubbed) }()
	defer func() { stopScrub(); <-scrubbed }()
	go func() { errc <- api.Serve(ln) }()
	var ops *http.Server
	if hln != nil {
		ops = &http.Server{Handler: opsHandler(srv, reg, *pprof), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- ops.Serve(hln) }()
	}
	log.Info("store serving", "store_id", srv.ID(), "addr", ln.Addr().String(), "http_addr", *httpAddr,
		"disks", strings.Join(srv.Capacity().DiskPaths(), ","), "host", *host, "zone", *zone)
	if *meta != "" {
		// The metadata service (issue 3) does not exist yet: the store serves
		// shards on its own until registration is wired in.
		log.Warn("registration with the metadata service is not available in this build; serving without it", "meta", *meta)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("stopping: finishing in-flight requests", "timeout", *shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	if ops != nil {
		ops.Close()
	}
	if err := api.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut short", "err", err)
		api.Close()
	}
	log.Info("stopped")
	return nil
}

func opsHandler(srv *store.Server, reg *prometheus.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		c := srv.Capacity()
		status := http.StatusOK
		for _, d := range c.Disks {
			if d.Error != "" {
				status = http.StatusServiceUnavailable
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(c)
	})
	return mux
}
