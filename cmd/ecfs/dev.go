package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/codec"
	"github.com/hashicorp/raft"
)

// devStores is how many stores `ecfs dev` runs (more if the scheme is wider).
const devStores = 6

func runDev(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", "[--data-dir DIR] [--ec K+M] MOUNTPOINT\n\n"+
		"Runs a whole cluster in this one process and mounts it on MOUNTPOINT: one metadata\n"+
		"member (a single-voter Raft group), six store daemons (k+m if that is more), each on a\n"+
		"free 127.0.0.1 port chosen at every start, and the FUSE mount. Everything lives under\n"+
		"--data-dir (default $XDG_DATA_HOME/ecfs-dev, else ~/.local/share/ecfs-dev):\n"+
		"  DIR/secret     the cluster secret, created on the first start (mode 0600)\n"+
		"  DIR/meta       the Raft log and snapshots of the metadata service\n"+
		"  DIR/store-N    each store's id and shards\n"+
		"Starting again with the same --data-dir brings back the same filesystem (--ec is then\n"+
		"ignored). What runs where, and the `ecfs status` command that shows it, is printed on\n"+
		"start. Ctrl-C or SIGTERM flushes, unmounts and stops everything (exit 0); so does\n"+
		"unmounting MOUNTPOINT from outside.", stdout)
	dataDir := fs.String("data-dir", "", "directory for the secret, the metadata and the shards (default $XDG_DATA_HOME/ecfs-dev, else ~/.local/share/ecfs-dev)")
	ec := fs.String("ec", "4+2", "erasure-coding scheme of a new filesystem (ignored when --data-dir holds one)")
	startTimeout := fs.Duration("start-timeout", time.Minute, "how long to wait for a leader, the scheme and every store before giving up")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	scheme, err := codec.ParseScheme(*ec)
	if err != nil {
		return &usageError{fmt.Sprintf("--ec: %v", err)}
	}
	if *startTimeout <= 0 {
		return &usageError{"--start-timeout must be positive"}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	mountpoint, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return err
	}
	st, err := os.Stat(mountpoint)
	if os.IsNotExist(err) {
		// The newcomer's first command: make the directory for them.
		if err := os.MkdirAll(mountpoint, 0o755); err != nil {
			return fmt.Errorf("mount point: %w", err)
		}
		fmt.Fprintf(stdout, "created the mount point %s\n", mountpoint)
		st, err = os.Stat(mountpoint)
	}
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mountpoint)
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = defaultDevDataDir(); err != nil {
			return err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	out := &lockedWriter{w: stdout}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, *startTimeout)
	c, err := startDevCluster(sctx, dir, scheme, log)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: nothing is mounted
		}
		return err
	}
	defer c.Close()
	c.describe(out)

	// A signal unmounts; from then on a second one kills at once.
	mctx, stopMount := context.WithCancel(ctx)
	defer stopMount()
	stopNotice := context.AfterFunc(ctx, func() {
		fmt.Fprintf(out, "stopping: flushing and unmounting %s (again to force)\n", mountpoint)
		stop()
	})
	failed := make(chan error, 1)
	go func() {
		select {
		case err := <-c.Err():
			failed <- err
			stopMount()
		case <-mctx.Done():
		}
	}()
	fmt.Fprintf(out, "mounting on %s\n", mountpoint)
	err = serveMount(mctx, mountConfig{
		Meta: []string{c.MetaAddr}, Secret: c.Secret, Mountpoint: mountpoint, Name: "dev", AttrTimeout: time.Second,
	}, log, func() {
		fmt.Fprintf(out, "mounted on %s; Ctrl-C unmounts and stops\n", mountpoint)
	})
	stopNotice()
	stopMount()
	select {
	case ferr := <-failed:
		if err == nil {
			err = fmt.Errorf("the embedded cluster failed: %w", ferr)
		}
	default:
	}
	c.Close()
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "stopped")
	return nil
}

// defaultDevDataDir is where `ecfs dev` keeps its data without --data-dir.
func defaultDevDataDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "ecfs-dev"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", &usageError{fmt.Sprintf("no --data-dir and no home directory: %v", err)}
	}
	return filepath.Join(home, ".local", "share", "ecfs-dev"), nil
}

// devCluster is the embedded cluster of `ecfs dev`: one metadata member and
// the stores, all in this process, on 127.0.0.1.
type devCluster struct {
	DataDir    string
	SecretFile string
	Secret     string
	MetaAddr   string // the metadata API
	Scheme     string // the filesystem's scheme (the data dir's, if it had one)
	Stores     []*storeDaemon
	StoreDirs  []string // Stores[i] keeps its data in StoreDirs[i]

	meta  *metaDaemon
	trans *raft.InmemTransport
	lock  *os.File

	errc      chan error    // the first daemon failure
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// startDevCluster starts (or restarts, from what dataDir holds) the
// embedded cluster and waits until the metadata member leads, the scheme is
// recorded and every store has reported itself up at its new address. ctx
// bounds the start only; the cluster runs until Close.
//
// The metadata member is a single voter whose Raft transport is in memory:
// its log and snapshots are real files under dataDir/meta, but it listens
// on no Raft port, so its Raft address ("ecfs-dev") stays the same across
// restarts while every TCP port is chosen afresh.
func startDevCluster(ctx context.Context, dataDir string, scheme codec.Scheme, log *slog.Logger) (_ *devCluster, err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	c := &devCluster{
		DataDir: dataDir, SecretFile: filepath.Join(dataDir, "secret"), Scheme: scheme.String(),
		errc: make(chan error, 1), done: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.lock, err = lockDir(dataDir); err != nil {
		return nil, err
	}
	if c.Secret, err = devSecret(c.SecretFile); err != nil {
		return nil, err
	}

	var trans raft.ServerAddress
	trans, c.trans = raft.NewInmemTransport("ecfs-dev")
	c.meta, err = startMeta(context.Background(), metaOptions{
		ID: "dev", DataDir: filepath.Join(dataDir, "meta"), RaftAddr: string(trans), Transport: c.trans, Fast: true,
		APIAddr: "127.0.0.1:0", Secret: c.Secret, Bootstrap: true, Scheme: scheme, InlineMax: 16 << 10,
		Health: cluster.HealthConfig{SuspectAfter: 10 * time.Second, DownAfter: time.Minute},
		Heal:   cluster.HealConfig{Every: time.Second, Rate: cluster.DefaultHealRate}, GCEvery: 2 * time.Second, OrphanEvery: time.Minute, OrphanGrace: 10 * time.Minute,
	}, log.With("daemon", "meta"))
	if err != nil {
		return nil, fmt.Errorf("starting the metadata service: %w", err)
	}
	c.MetaAddr = c.meta.APIAddr
	c.watch(c.meta.Err())

	n := max(devStores, scheme.Shards(), existingStores(dataDir))
	host, _ := os.Hostname()
	for i := 1; i <= n; i++ {
		sdir := filepath.Join(dataDir, "store-"+strconv.Itoa(i))
		s, err := startStore(context.Background(), storeOptions{
			DataDir: sdir, Addr: "127.0.0.1:0", Secret: c.Secret, Meta: []string{c.MetaAddr}, Host: host,
			ShutdownTimeout: 10 * time.Second, Heartbeat: 3 * time.Second,
		}, log.With("daemon", "store-"+strconv.Itoa(i)))
		if err != nil {
			return nil, fmt.Errorf("starting store %d: %w", i, err)
		}
		c.Stores, c.StoreDirs = append(c.Stores, s), append(c.StoreDirs, sdir)
		c.watch(s.Err())
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if c.Scheme != scheme.String() {
		log.Warn("the data directory holds a filesystem with another scheme; --ec ignored",
			"scheme", c.Scheme, "ec", scheme.String())
	}
	return c, nil
}

// watch passes on a daemon's failure (the first one) until Close.
func (c *devCluster) watch(errc <-chan error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select {
		case err := <-errc:
			select {
			case c.errc <- err:
			default:
			}
		case <-c.done:
		}
	}()
}

// Err delivers the first failure of a daemon of the cluster.
func (c *devCluster) Err() <-chan error { return c.errc }

// waitReady polls the metadata member until it leads, has a scheme and
// lists every store up at the address it serves on now.
func (c *devCluster) waitReady(ctx context.Context) error {
	mc, err := cluster.NewClient([]string{c.MetaAddr}, c.Secret)
	if err != nil {
		return err
	}
	defer mc.Close()
	want := map[string]string{} // store id -> address
	for _, s := range c.Stores {
		want[s.ID] = s.Advertised
	}
	why := "no answer from the metadata service yet"
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := mc.StatusOf(actx, 0)
		cancel()
		switch {
		case err != nil:
			why = fmt.Sprintf("the metadata service does not answer: %v", err)
		case st.State != "leader":
			why = "the metadata service has no leader (state " + st.State + ")"
		case st.Scheme == "":
			why = "the filesystem's scheme is not recorded yet"
		default:
			up := 0
			for _, s := range st.Stores {
				if addr, ok := want[s.Id]; ok && s.State == cluster.StoreUp && s.Addr == addr {
					up++
				}
			}
			if up == len(want) {
				c.Scheme = st.Scheme
				return nil
			}
			why = fmt.Sprintf("%d of %d stores have reported up", up, len(want))
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case err := <-c.errc:
			t.Stop()
			return err
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the embedded cluster was not ready in time: %s", why)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// describe prints what runs where.
func (c *devCluster) describe(w io.Writer) {
	fmt.Fprintf(w, "ecfs dev: embedded cluster ready (scheme %s)\n", c.Scheme)
	fmt.Fprintf(w, "  data dir:    %s\n", c.DataDir)
	fmt.Fprintf(w, "  secret file: %s\n", c.SecretFile)
	fmt.Fprintf(w, "  meta api:    %s  (Raft log in %s)\n", c.MetaAddr, filepath.Join(c.DataDir, "meta"))
	for i, s := range c.Stores {
		fmt.Fprintf(w, "  store %-2d     %s  id %s  (shards in %s)\n", i+1, s.Addr, s.ID, c.StoreDirs[i])
	}
	fmt.Fprintf(w, "  status:      ecfs status --meta %s --secret-file %s\n", c.MetaAddr, shellQuote(c.SecretFile))
}

// Close stops the stores, then the metadata member, and releases the data
// directory. It may be called more than once.
func (c *devCluster) Close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.wg.Wait()
		var wg sync.WaitGroup
		for _, s := range c.Stores {
			wg.Add(1)
			go func() { defer wg.Done(); s.Close() }()
		}
		wg.Wait()
		if c.meta != nil {
			c.meta.Close()
		}
		if c.trans != nil {
			c.trans.Close()
		}
		if c.lock != nil {
			c.lock.Close() // releases the flock
		}
	})
}

// lockDir takes an exclusive lock on dir/lock, so that two `ecfs dev` do not
// share a data directory.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another ecfs dev", dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return f, nil
}

// devSecret reads the cluster secret from path, or creates it there.
func devSecret(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return readSecret(path)
	}
	s, err := newSecret()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating the cluster secret: %w", err)
	}
	_, err = fmt.Fprintln(f, s)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("writing the cluster secret: %w", err)
	}
	return s, nil
}

// existingStores is the highest N of the dir/store-N directories (0: none).
func existingStores(dir string) int {
	n := 0
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "store-"); ok && e.IsDir() {
			if i, err := strconv.Atoi(s); err == nil && i > n {
				n = i
			}
		}
	}
	return n
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+=:@,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
