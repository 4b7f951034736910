package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
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
	fs := newFlags("dev", "[--data-dir DIR] [--ec K+M] [-o OPTS] MOUNTPOINT\n\n"+
		"Runs a whole cluster in this one process and mounts it on MOUNTPOINT: one metadata\n"+
		"member (a single-voter Raft group), six store daemons (k+m if that is more), each on a\n"+
		"127.0.0.1 port chosen at the first start and kept, and the FUSE mount (-o takes ecfs\n"+
		"mount's options: allow_other, attr_timeout=DUR, …). Everything lives under\n"+
		"--data-dir (default $XDG_DATA_HOME/ecfs-dev, else ~/.local/share/ecfs-dev):\n"+
		"  DIR/secret     the cluster secret, created on the first start (mode 0600)\n"+
		"  DIR/addresses.json  the ports, reused at the next start (a new one if taken)\n"+
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
	opts := fs.String("o", "", "mount options, as ecfs mount -o (allow_other, attr_timeout=DUR, buffer_size=BYTES, …)")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	mcfg := mountConfig{Name: "dev", AttrTimeout: time.Second}
	if err := applyMountOpts(&mcfg, *opts, stderr, nil); err != nil {
		return err
	}
	if mcfg.Procs <= 0 {
		// This process runs the whole cluster: fitting its processors to
		// the mount's load alone would starve the stores.
		mcfg.Procs = -1
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
	c, err := startDevCluster(sctx, dir, scheme, log, out)
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
	mcfg.Meta, mcfg.Secret, mcfg.Mountpoint = []string{c.MetaAddr}, c.Secret, mountpoint
	err = serveMount(mctx, mcfg, log, func() {
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
// restarts. The TCP ports are chosen at the first start and kept in
// dataDir/addresses.json; one taken by then is chosen afresh (said on
// out).
func startDevCluster(ctx context.Context, dataDir string, scheme codec.Scheme, log *slog.Logger, out io.Writer) (_ *devCluster, err error) {
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

	saved := loadDevAddrs(dataDir)
	var trans raft.ServerAddress
	trans, c.trans = raft.NewInmemTransport("ecfs-dev")
	metaOpts := metaOptions{
		ID: "dev", DataDir: filepath.Join(dataDir, "meta"), RaftAddr: string(trans), Transport: c.trans, Fast: true,
		APIAddr: devAddr(saved.Meta), Secret: c.Secret, Bootstrap: true, Scheme: scheme, InlineMax: 16 << 10,
		Health: cluster.HealthConfig{SuspectAfter: 10 * time.Second, DownAfter: time.Minute},
		Heal:   cluster.HealConfig{Every: time.Second, Rate: cluster.DefaultHealRate}, GCEvery: 2 * time.Second, OrphanEvery: time.Minute, OrphanGrace: 10 * time.Minute,
	}
	c.meta, err = startMeta(context.Background(), metaOpts, log.With("daemon", "meta"))
	if isAddrInUse(err) {
		fmt.Fprintf(out, "the metadata API's port %s is taken; choosing another\n", metaOpts.APIAddr)
		metaOpts.APIAddr = "127.0.0.1:0"
		c.meta, err = startMeta(context.Background(), metaOpts, log.With("daemon", "meta"))
	}
	if err != nil {
		return nil, fmt.Errorf("starting the metadata service: %w", err)
	}
	c.MetaAddr = c.meta.APIAddr
	c.watch(c.meta.Err())

	n := max(devStores, scheme.Shards(), existingStores(dataDir))
	host, _ := os.Hostname()
	for i := 1; i <= n; i++ {
		sdir := filepath.Join(dataDir, "store-"+strconv.Itoa(i))
		so := storeOptions{
			DataDir: sdir, Addr: saved.store(i), Secret: c.Secret, Meta: []string{c.MetaAddr}, Host: host,
			ShutdownTimeout: 10 * time.Second, Heartbeat: 3 * time.Second,
		}
		s, err := startStore(context.Background(), so, log.With("daemon", "store-"+strconv.Itoa(i)))
		if isAddrInUse(err) {
			fmt.Fprintf(out, "store %d's port %s is taken; choosing another\n", i, so.Addr)
			so.Addr = "127.0.0.1:0"
			s, err = startStore(context.Background(), so, log.With("daemon", "store-"+strconv.Itoa(i)))
		}
		if err != nil {
			return nil, fmt.Errorf("starting store %d: %w", i, err)
		}
		c.Stores, c.StoreDirs = append(c.Stores, s), append(c.StoreDirs, sdir)
		c.watch(s.Err())
	}
	now := devAddrs{Meta: c.MetaAddr}
	for _, s := range c.Stores {
		now.Stores = append(now.Stores, s.Addr)
	}
	if err := now.save(dataDir); err != nil {
		log.Warn("the ports will change at the next start", "err", err)
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
	fmt.Fprintf(w, "  status:      %s status --meta %s --secret-file %s\n", selfCommand(), c.MetaAddr, shellQuote(c.SecretFile))
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

// devAddrs are the addresses `ecfs dev` listens on, kept in
// DIR/addresses.json from one start to the next.
type devAddrs struct {
	Meta   string   `json:"meta_api"`
	Stores []string `json:"stores"` // store N at Stores[N-1]
}

func loadDevAddrs(dir string) devAddrs {
	var a devAddrs
	if b, err := os.ReadFile(filepath.Join(dir, "addresses.json")); err == nil {
		_ = json.Unmarshal(b, &a) // unreadable: every port chosen afresh
	}
	return a
}

// devAddr is a saved address, or any free port on 127.0.0.1.
func devAddr(saved string) string {
	if host, _, err := net.SplitHostPort(saved); err == nil && host == "127.0.0.1" {
		return saved
	}
	return "127.0.0.1:0"
}

func (a devAddrs) store(n int) string {
	if n-1 < len(a.Stores) {
		return devAddr(a.Stores[n-1])
	}
	return "127.0.0.1:0"
}

func (a devAddrs) save(dir string) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "addresses.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "addresses.json"))
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

// selfCommand is how to run this binary again from a shell: "ecfs" when
// that is it on PATH, else its full path (after go run, a temporary file
// that lasts while it runs).
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "ecfs"
	}
	if p, err := exec.LookPath("ecfs"); err == nil {
		a, aerr := os.Stat(p)
		b, berr := os.Stat(exe)
		if aerr == nil && berr == nil && os.SameFile(a, b) {
			return "ecfs"
		}
	}
	return shellQuote(exe)
}
