package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
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
	advertise := fs.String("advertise", "", "host:port other hosts reach the shard API at (default: --addr, with the hostname when its host is empty)")
	heartbeat := fs.Duration("heartbeat", 3*time.Second, "how often to report to the metadata service")
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
	errc := make(chan error, 3)
	scrubCtx, stopScrub := context.WithCancel(ctx)
	scrubbed := make(chan struct{})
	go func() { srv.Scrub(scrubCtx); close(scrubbed) }()
	defer func() { stopScrub(); <-scrubbed }()
	go func() { errc <- fmt.Errorf("serving: %w", api.Serve(ln)) }()
	var ops *http.Server
	if hln != nil {
		ops = &http.Server{Handler: opsHandler(srv, reg, *pprof), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- fmt.Errorf("serving metrics: %w", ops.Serve(hln)) }()
	}
	log.Info("store serving", "store_id", srv.ID(), "addr", ln.Addr().String(), "http_addr", *httpAddr,
		"disks", strings.Join(srv.Capacity().DiskPaths(), ","), "host", *host, "zone", *zone)
	if *meta != "" {
		adv, err := advertised(*advertise, ln.Addr().String(), *host)
		if err != nil {
			return err
		}
		mc, err := cluster.NewClient(strings.Split(*meta, ","), secret)
		if err != nil {
			return err
		}
		defer mc.Close()
		hbDone := make(chan struct{})
		go func() {
			defer close(hbDone)
			if err := reportLoop(ctx, mc, srv, adv, *host, *zone, *heartbeat, log); err != nil {
				errc <- err
			}
		}()
		defer func() { <-hbDone }()
	}

	select {
	case err := <-errc:
		return err
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

// advertised is the address the metadata service hands out for this store.
func advertised(flagValue, listen, host string) (string, error) {
	if flagValue != "" {
		if _, _, err := net.SplitHostPort(flagValue); err != nil {
			return "", &usageError{fmt.Sprintf("--advertise %q: %v", flagValue, err)}
		}
		return flagValue, nil
	}
	h, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort(host, port), nil
	}
	return listen, nil
}

// reportLoop registers the store with the metadata service and heartbeats
// with its capacity until ctx ends. The store serves shards whether or not
// the metadata service answers; it keeps trying. A metadata service that
// refuses the cluster secret is a configuration error: it returns it.
func reportLoop(ctx context.Context, mc *cluster.Client, srv *store.Server, addr, host, zone string, every time.Duration, log *slog.Logger) error {
	failing := false
	for {
		c := srv.Capacity()
		hctx, cancel := context.WithTimeout(ctx, every*3)
		err := mc.Heartbeat(hctx, &metapb.StoreInfo{
			Id: srv.ID(), Addr: addr, Host: host, Zone: zone, TotalBytes: c.Total, FreeBytes: c.Free,
		})
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, cluster.ErrUnauthenticated):
			return fmt.Errorf("the metadata service refused this store's cluster secret (check --secret-file)")
		case err != nil && !failing:
			log.Warn("cannot report to the metadata service; still serving, retrying", "err", err)
			failing = true
		case err == nil && failing:
			log.Info("reporting to the metadata service again")
			failing = false
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
