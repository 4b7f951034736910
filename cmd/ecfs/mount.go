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
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	rtdebug "runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/fs"
	"github.com/ecfs/ecfs/fs/fuse"
	"github.com/ecfs/ecfs/store"
	"github.com/prometheus/client_golang/prometheus"
)

// mountConfig is what a mount needs; `ecfs mount` fills it from flags and
// `ecfs dev` from its embedded cluster.
type mountConfig struct {
	Meta          []string      // metadata service API addresses
	Secret        string        // the cluster secret
	TLS           *tls.Config   // nil: plaintext to the service and the stores
	Mountpoint    string        // directory to mount on
	AllowOther    bool          // -o allow_other
	BufferSize    int64         // bytes of write buffers (default 256 MiB)
	MetaTimeout   time.Duration // how long a metadata call waits for a leader (default 60 s)
	AttrTimeout   time.Duration // kernel attribute/entry cache (0: none)
	SessionTTL    time.Duration // mount session lease (default 30 s)
	WriteTimeout  time.Duration // how long a block write tries other stores before EIO (default 20 s)
	Name          string        // shown as the session's holder
	StartTimeout  time.Duration // how long to wait for the metadata service at start (default 20 s)
	Debug         bool          // log every FUSE request
	HTTPAddr      string        // /metrics, /healthz (and /debug/pprof with Pprof); "" for none
	Pprof         bool
	NoWriteBehind bool // every change waits for its Raft commit
	// Procs: the Go processors the mount runs on; 0 follows its load
	// (followLoad), below 0 leaves GOMAXPROCS as it is (ecfs dev, whose
	// process also runs the cluster).
	Procs int
}

// serveOps serves /metrics, /healthz and optionally /debug/pprof/ for a
// mount; it returns a function that stops it.
func serveOps(addr string, pprof bool, mp string, cs ...prometheus.Collector) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics: %w", err)
	}
	reg := newRegistry()
	reg.MustRegister(cs...)
	mux := opsMux(reg, pprof, func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(mp); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return func() { hs.Close() }, nil
}

// recoverMountpoint unmounts what a crashed mount left on mp: a FUSE mount
// whose daemon is gone answers every call with ENOTCONN. One whose daemon
// is stopped or stuck answers nothing: that is an error, saying how to
// abort it (abort.go), rather than a wait for ever.
func recoverMountpoint(mp string, log *slog.Logger) error {
	err := statWithin(mp, recoverStatWait)
	if err == nil {
		return nil
	}
	if errors.Is(err, errNoAnswer) {
		if _, ferr := fuseConnection(mp); ferr != nil {
			return fmt.Errorf("mount point %s does not answer within %v (%v)", mp, recoverStatWait, ferr)
		}
		return fmt.Errorf("mount point %s does not answer within %v: the FUSE daemon mounted there is stopped or stuck. If it is an ecfs mount that was killed, run 'ecfs umount --abort %s' (what it had not flushed is lost), then mount again", mp, recoverStatWait, mp)
	}
	if !errors.Is(err, syscall.ENOTCONN) {
		return fmt.Errorf("mount point %s: %w", mp, err)
	}
	log.Warn("the mount point was left behind by an ecfs mount that died; unmounting it", "mountpoint", mp)
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("mount point %s is left by a dead mount and could not be unmounted (%v): run 'fusermount3 -u -z %s' or 'umount -l %s'", mp, err, mp, mp)
	}
	return nil
}

// serveMount mounts the filesystem and serves it until ctx ends (then it
// flushes and unmounts) or it is unmounted from outside. ready, if not nil,
// is called once the mount point is live.
func serveMount(ctx context.Context, cfg mountConfig, log *slog.Logger, ready func()) error {
	if err := recoverMountpoint(cfg.Mountpoint, log); err != nil {
		return err
	}
	if st, err := os.Stat(cfg.Mountpoint); err != nil {
		return fmt.Errorf("mount point: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", cfg.Mountpoint)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("FUSE is not available (%v): load the fuse module or install fuse3", err)
	}
	mc, err := cluster.NewClient(cfg.Meta, cfg.Secret, cluster.WithTLS(cfg.TLS))
	if err != nil {
		return err
	}
	defer mc.Close()
	calls := newStoreCalls("ecfs_mount")
	shards := store.NewClient(store.ClientConfig{Secret: cfg.Secret, TLS: cfg.TLS, Observe: calls.observe})
	defer shards.Close()
	objs, err := store.NewObjects(store.ObjectsConfig{Client: shards, Logger: log})
	if err != nil {
		return err
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("mount %s:%s pid %d", host, cfg.Mountpoint, os.Getpid())
	}
	start := cfg.StartTimeout
	if start <= 0 {
		start = 20 * time.Second
	}
	sctx, cancel := context.WithTimeout(ctx, start)
	counted := newCountedMeta(mc)
	f, err := fs.New(sctx, fs.Config{
		Meta: counted, Objects: objs, BufferSize: cfg.BufferSize, MetaTimeout: cfg.MetaTimeout,
		SessionTTL: cfg.SessionTTL, WriteTimeout: cfg.WriteTimeout, Name: cfg.Name, Logger: log,
		NoWriteBehind: cfg.NoWriteBehind,
	})
	cancel()
	if err != nil {
		if errors.Is(err, cluster.ErrUnauthenticated) {
			return fmt.Errorf("the metadata service refused the secret: %w", err)
		}
		return err
	}
	fm := newFuseMetrics()
	moved := new(atomic.Int64)
	srv, err := fuse.Mount(f, cfg.Mountpoint, fuse.MountOptions{
		AllowOther: cfg.AllowOther, AttrTimeout: cfg.AttrTimeout, Debug: cfg.Debug,
		FsName: "ecfs:" + strings.Join(cfg.Meta, ","), Observe: fm.observe, Moved: moved,
	})
	if err != nil {
		f.Close()
		return fmt.Errorf("mounting %s: %w", cfg.Mountpoint, err)
	}
	switch {
	case cfg.Procs > 0:
		runtime.GOMAXPROCS(cfg.Procs)
	case cfg.Procs == 0 && os.Getenv("GOMAXPROCS") == "":
		lctx, stopLoad := context.WithCancel(ctx)
		loadDone := make(chan struct{})
		go func() { followLoad(lctx, moved, log); close(loadDone) }()
		defer func() { stopLoad(); <-loadDone }()
	}
	log.Info("mounted", "mountpoint", cfg.Mountpoint, "meta", strings.Join(cfg.Meta, ","), "scheme", f.Stats().Scheme.String(), "session", f.Session())
	if cfg.HTTPAddr != "" {
		cs := append(append(fm.collectors(), calls.collectors()...), counted.calls, newMountState(f))
		stopOps, err := serveOps(cfg.HTTPAddr, cfg.Pprof, cfg.Mountpoint, cs...)
		if err != nil {
			log.Error("metrics not served", "err", err)
		} else {
			defer stopOps()
		}
	}
	if ready != nil {
		ready()
	}
	if err := sdNotify("READY=1\nSTATUS=serving " + cfg.Mountpoint); err != nil {
		log.Warn("systemd notification", "err", err)
	}
	unmounted := make(chan struct{})
	go func() { srv.Wait(); close(unmounted) }()
	select {
	case <-unmounted:
		log.Info("unmounted from outside")
	case <-ctx.Done():
		log.Info("unmounting", "mountpoint", cfg.Mountpoint)
		_ = sdNotify("STOPPING=1")
		if err := f.FlushAll(context.Background()); err != nil {
			log.Error("flushing before unmount", "err", err)
		}
		if err := srv.Unmount(); err != nil {
			log.Warn("the mount point is busy; detaching it", "err", err)
			if err := syscall.Unmount(cfg.Mountpoint, syscall.MNT_DETACH); err != nil {
				log.Error("detaching the mount point", "err", err)
			}
		}
		<-unmounted
	}
	if err := f.Close(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func runMount(args []string, stdout, stderr io.Writer) error {
	fl := newFlags("mount", "--meta A1,A2,A3 --secret-file F [-o OPTS] [flags] MOUNTPOINT\n\n"+
		"Mounts the filesystem on MOUNTPOINT and serves it until it is unmounted (ecfs umount,\n"+
		"umount, fusermount3 -u) or gets SIGTERM/SIGINT, which flush every file and unmount.\n"+
		"A mount point left behind by a crashed mount is recovered first.\n"+
		"-o takes comma-separated options: allow_other, buffer_size=BYTES, attr_timeout=DUR,\n"+
		"meta_timeout=DUR, session_ttl=DUR, procs=N, no_write_behind, debug, tls_cert=F, tls_key=F, tls_ca=F\n"+
		"(the same as the flags); sloppy ignores options it does not know. For mount(8) and\n"+
		"fstab, see mount.ecfs --help.", stdout)
	tlsf := addTLSFlags(fl)
	meta := fl.String("meta", "", "comma-separated metadata service addresses; required")
	secretFile := fl.String("secret-file", "", "file holding the cluster secret; required")
	opts := fl.String("o", "", "mount options (see above)")
	allowOther := fl.Bool("allow-other", false, "let users other than the mounting one in (needs user_allow_other for non-root)")
	bufSize := fl.Int64("buffer-size", 256<<20, "bytes of memory for write buffers; writers wait when it is used up")
	metaTimeout := fl.Duration("meta-timeout", time.Minute, "how long an operation waits for the metadata service (a leader change) before EIO")
	attrTimeout := fl.Duration("attr-timeout", time.Second, "how long the kernel caches attributes and names (and a name found missing in a directory this mount writes); 0: it asks every time")
	sessionTTL := fl.Duration("session-ttl", 30*time.Second, "the mount's lease: its locks are released this long after it dies; cut off for three quarters of it, it stops answering from its directory leases")
	startTimeout := fl.Duration("start-timeout", 20*time.Second, "how long to wait for the metadata service at start before giving up (exit 1)")
	writeTimeout := fl.Duration("write-timeout", 20*time.Second, "how long writing a block keeps trying other stores while fewer than the write quorum answer, before EIO")
	debug := fl.Bool("debug", false, "log every FUSE request")
	procs := fl.Int("procs", 0, "Go processors the mount runs on; 0: one while it answers small requests (faster for tree commands), all while data moves in bulk or that one is busy (the GOMAXPROCS variable fixes them too)")
	noWB := fl.Bool("no-write-behind", false, "take no directory leases: every change waits for its Raft commit and every lookup asks the metadata service (slower; a crash then loses nothing closed)")
	httpAddr := fl.String("http-addr", "", "host:port for /metrics and /healthz (empty: off)")
	pprof := fl.Bool("pprof", false, "also serve /debug/pprof/ on --http-addr")
	logLevel := fl.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fl, args, 1); err != nil {
		return err
	}
	cfg := mountConfig{Mountpoint: fl.Arg(0), AllowOther: *allowOther, BufferSize: *bufSize,
		MetaTimeout: *metaTimeout, AttrTimeout: *attrTimeout, SessionTTL: *sessionTTL, WriteTimeout: *writeTimeout, StartTimeout: *startTimeout, Debug: *debug, HTTPAddr: *httpAddr, Pprof: *pprof, NoWriteBehind: *noWB, Procs: *procs}
	err := applyMountOpts(&cfg, *opts, stderr, func(k, v string) bool {
		switch k {
		case "secret-file", "secret_file":
			*secretFile = v
		case "meta":
			*meta = strings.ReplaceAll(v, ";", ",")
		case "tls_cert", "tls-cert":
			*tlsf.cert = v
		case "tls_key", "tls-key":
			*tlsf.key = v
		case "tls_ca", "tls-ca":
			*tlsf.ca = v
		default:
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	switch {
	case *meta == "":
		return &usageError{"--meta is required"}
	case *secretFile == "":
		return &usageError{"--secret-file is required"}
	case cfg.BufferSize < 8<<20:
		return &usageError{"--buffer-size must be at least 8 MiB (two blocks)"}
	case cfg.Procs < 0:
		return &usageError{"--procs must be 0 (follow the load) or more"}
	case cfg.MetaTimeout <= 0 || cfg.AttrTimeout < 0 || cfg.SessionTTL < 3*time.Second:
		return &usageError{"need --meta-timeout > 0, --attr-timeout >= 0 and --session-ttl >= 3s"}
	}
	cfg.Meta = strings.Split(*meta, ",")
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if cfg.Secret, err = readSecret(*secretFile); err != nil {
		return err
	}
	if cfg.TLS, err = tlsf.load(); err != nil {
		return err
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The buffers are bounded by --buffer-size; ask the Go runtime to
		// collect hard enough that garbage (encoded shards, request
		// bodies) does not double the footprint.
		rtdebug.SetMemoryLimit(cfg.BufferSize + 64<<20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serveMount(ctx, cfg, log, nil)
}

func runUmount(args []string, stdout, stderr io.Writer) error {
	fl := newFlags("umount", "MOUNTPOINT\n\nUnmounts an ecfs mount; its process flushes and exits.\n"+
		"--abort is for a mount whose process is stopped or stuck (a stat of the mount point hangs):\n"+
		"it aborts the FUSE connection, which fails every request to it and loses what the mount had\n"+
		"not flushed, and detaches the mount point (root only).", stdout)
	lazy := fl.Bool("lazy", false, "detach now even if files are open (umount -l)")
	abort := fl.Bool("abort", false, "abort the mount's FUSE connection first (its unflushed changes are lost)")
	if err := parseFlags(fl, args, 1); err != nil {
		return err
	}
	mp := fl.Arg(0)
	if *abort {
		return abortMount(mp)
	}
	flags := 0
	if *lazy {
		flags = syscall.MNT_DETACH
	}
	err := syscall.Unmount(mp, flags)
	if errors.Is(err, syscall.EPERM) {
		// Not root: fusermount3 unmounts the user's own FUSE mounts.
		args := []string{"-u"}
		if *lazy {
			args = append(args, "-z")
		}
		return runFusermount(append(args, mp))
	}
	if err != nil {
		return fmt.Errorf("unmounting %s: %w", mp, err)
	}
	return nil
}

func runFusermount(args []string) error {
	cmd := exec.Command("fusermount3", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// applyMountOpts sets cfg from -o's comma-separated options; own takes
// the options of one command (secret-file=, meta=, …) and says whether it
// knew the key. sloppy among them ignores unknown ones (with a word on
// stderr).
func applyMountOpts(cfg *mountConfig, opts string, stderr io.Writer, own func(k, v string) bool) error {
	if opts == "" {
		return nil
	}
	sloppy := slices.Contains(strings.Split(opts, ","), "sloppy")
	for _, o := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(o, "=")
		var err error
		switch k {
		case "allow_other":
			cfg.AllowOther = true
		case "debug":
			cfg.Debug = true
		case "no_write_behind":
			cfg.NoWriteBehind = true
		case "buffer_size":
			cfg.BufferSize, err = strconv.ParseInt(v, 10, 64)
		case "attr_timeout":
			cfg.AttrTimeout, err = time.ParseDuration(v)
		case "procs":
			cfg.Procs, err = strconv.Atoi(v)
		case "meta_timeout":
			cfg.MetaTimeout, err = time.ParseDuration(v)
		case "write_timeout":
			cfg.WriteTimeout, err = time.ParseDuration(v)
		case "session_ttl":
			cfg.SessionTTL, err = time.ParseDuration(v)
		case "rw", "defaults", "dev", "suid", "exec", "auto", "nouser", "async", "_netdev", "sloppy", "":
		default:
			if own != nil && own(k, v) {
				continue
			}
			if sloppy {
				fmt.Fprintf(stderr, "ecfs: ignoring unknown mount option %q (sloppy)\n", o)
				continue
			}
			return &usageError{fmt.Sprintf("-o: unknown option %q", o)}
		}
		if err != nil {
			return &usageError{fmt.Sprintf("-o %s: %v", o, err)}
		}
	}
	return nil
}
