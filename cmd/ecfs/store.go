package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
	"github.com/prometheus/client_golang/prometheus"
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
	httpAddr := fs.String("http-addr", "127.0.0.1:9300", "host:port for /metrics and /healthz (empty: off); each store of a host needs its own")
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
	tlsf := addTLSFlags(fs)
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
	tlsCfg, err := tlsf.load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var metaAddrs []string
	if *meta != "" {
		metaAddrs = strings.Split(*meta, ",")
	}
	d, err := startStore(ctx, storeOptions{
		DataDir: *dataDir, Disks: disks, Addr: *addr, HTTPAddr: *httpAddr, Pprof: *pprof, Secret: secret, TLS: tlsCfg,
		Meta: metaAddrs, Host: *host, Zone: *zone, Advertise: *advertise,
		MaxShardSize: *maxShard, Reserve: *reserve, ScrubInterval: *scrubEvery, ScrubRate: *scrubRate,
		ShutdownTimeout: *shutdown, Heartbeat: *heartbeat,
	}, log)
	if err != nil {
		return err
	}
	select {
	case err := <-d.Err():
		d.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("stopping: finishing in-flight requests", "timeout", *shutdown)
	d.Close()
	log.Info("stopped")
	return nil
}

// storeOptions configure one store daemon: the flags of `ecfs store`, and
// the stores `ecfs dev` runs.
type storeOptions struct {
	DataDir         string   // the store id (and the default disk)
	Disks           []string // shard directories; default DataDir/disk
	Addr            string   // host:port of the shard API (port 0: any free one)
	HTTPAddr        string   // host:port for /metrics and /healthz; empty: off
	Pprof           bool     // also /debug/pprof/ on HTTPAddr
	Secret          string
	TLS             *tls.Config // nil: plaintext (the secret still authenticates)
	Meta            []string    // metadata service addresses to report to; none: no reporting
	Host, Zone      string      // placement labels; Host defaults to the hostname
	Advertise       string      // the address handed out for the shard API; default from Addr and Host
	MaxShardSize    int64
	Reserve         int64
	ScrubInterval   time.Duration
	ScrubRate       int64
	ShutdownTimeout time.Duration // how long Close lets in-flight requests finish
	Heartbeat       time.Duration // how often to report to the metadata service
}

// storeDaemon is a running store.
type storeDaemon struct {
	ID         string // the store's persistent id
	Addr       string // the address the shard API listens on
	Advertised string // the address reported to the metadata service ("" without Meta)
	Server     *store.Server

	errc      chan error
	undo      []func() // in reverse order they stop it
	closeOnce sync.Once
}

// startStore opens the store in o.DataDir and serves it: the shard API, the
// background scrub, metrics, and (with o.Meta) the reports to the metadata
// service. Reporting and scrubbing stop when ctx ends; Close stops the rest.
func startStore(ctx context.Context, o storeOptions, log *slog.Logger) (_ *storeDaemon, err error) {
	if len(o.Meta) > 0 && o.Advertise != "" {
		if _, err := advertised(o.Advertise, "", ""); err != nil {
			return nil, err
		}
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	reg := newRegistry()
	srv, err := store.NewServer(store.Config{
		DataDir:       o.DataDir,
		Disks:         o.Disks,
		Secret:        o.Secret,
		TLS:           o.TLS,
		MaxShardSize:  o.MaxShardSize,
		Reserve:       o.Reserve,
		ScrubInterval: o.ScrubInterval,
		ScrubRate:     o.ScrubRate,
		Logger:        log,
		Registerer:    reg,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the shard API: %w", err)
	}
	var hln net.Listener
	if o.HTTPAddr != "" {
		if hln, err = net.Listen("tcp", o.HTTPAddr); err != nil {
			ln.Close()
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("listening for metrics on %s: in use (another store on this host?): give each store its own --http-addr, or --http-addr '' for none", o.HTTPAddr)
			}
			return nil, fmt.Errorf("listening for metrics: %w", err)
		}
	}
	d := &storeDaemon{ID: srv.ID(), Addr: ln.Addr().String(), Server: srv, errc: make(chan error, 3)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	d.undo = append(d.undo, cancel)

	api := srv.HTTPServer(o.Addr)
	scrubbed := make(chan struct{})
	go func() { srv.Scrub(ctx); close(scrubbed) }()
	d.undo = append(d.undo, func() { <-scrubbed })
	go func() {
		if o.TLS != nil {
			d.errc <- fmt.Errorf("serving: %w", api.ServeTLS(ln, "", ""))
			return
		}
		d.errc <- fmt.Errorf("serving: %w", api.Serve(ln))
	}()
	d.undo = append(d.undo, func() {
		sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
		defer cancel()
		if err := api.Shutdown(sctx); err != nil {
			log.Warn("in-flight requests cut short", "err", err)
			api.Close()
		}
	})
	if hln != nil {
		ops := &http.Server{Handler: opsHandler(srv, reg, o.Pprof), ReadHeaderTimeout: 10 * time.Second}
		go func() { d.errc <- fmt.Errorf("serving metrics: %w", ops.Serve(hln)) }()
		d.undo = append(d.undo, func() { ops.Close() })
	}
	log.Info("store serving", "store_id", srv.ID(), "addr", d.Addr, "http_addr", o.HTTPAddr,
		"disks", strings.Join(srv.Capacity().DiskPaths(), ","), "host", o.Host, "zone", o.Zone)
	if len(o.Meta) > 0 {
		if d.Advertised, err = advertised(o.Advertise, d.Addr, o.Host); err != nil {
			return nil, err
		}
		mc, err := cluster.NewClient(o.Meta, o.Secret, cluster.WithTLS(o.TLS))
		if err != nil {
			return nil, err
		}
		d.undo = append(d.undo, mc.Close)
		hbDone := make(chan struct{})
		go func() {
			defer close(hbDone)
			if err := reportLoop(ctx, mc, srv, d.Advertised, o.Host, o.Zone, o.Heartbeat, log); err != nil {
				d.errc <- err
			}
		}()
		d.undo = append(d.undo, func() { <-hbDone }, cancel)
	}
	return d, nil
}

// Err delivers an error if the store stops serving by itself, or the
// metadata service refuses its secret.
func (d *storeDaemon) Err() <-chan error { return d.errc }

// Close stops the store: reporting and scrubbing at once, then the shard
// API after its in-flight requests (up to the shutdown timeout). It may be
// called more than once.
func (d *storeDaemon) Close() {
	d.closeOnce.Do(func() {
		for i := len(d.undo) - 1; i >= 0; i-- {
			d.undo[i]()
		}
	})
}

func opsHandler(srv *store.Server, reg *prometheus.Registry, withPprof bool) http.Handler {
	return opsMux(reg, withPprof, func(w http.ResponseWriter, r *http.Request) {
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
		info := &metapb.StoreInfo{
			Id: srv.ID(), Addr: addr, Host: host, Zone: zone, TotalBytes: c.Total, FreeBytes: c.Free,
		}
		for _, d := range c.Disks {
			if d.Error == "" {
				info.Disks = append(info.Disks, &metapb.DiskInfo{Fs: d.FS, TotalBytes: d.Total, FreeBytes: d.Free})
			}
		}
		// Shards found rotten go to the healer with every heartbeat until
		// they are rewritten (the state ignores repeats).
		for _, k := range srv.CorruptShards(1024) {
			info.Corrupt = append(info.Corrupt, &metapb.ShardRef{Object: uint64(k.Object), Index: uint32(k.Index)})
		}
		err := mc.Heartbeat(hctx, info)
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
