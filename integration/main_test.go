// Package integration starts real ecfs processes on 127.0.0.x and exercises
// them as a user and the other daemons would.
package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/store"
)

// ecfsBin is the binary under test, built once by TestMain.
var ecfsBin string

func TestMain(m *testing.M) {
	if os.Getenv("ECFS_LOCK_HOLDER") != "" {
		lockHolder()
		return
	}
	dir, err := os.MkdirTemp("", "ecfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ecfsBin = filepath.Join(dir, "ecfs")
	cmd := exec.Command("go", "build", "-o", ecfsBin, "../cmd/ecfs")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ecfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(delay) // polling interval, not synchronisation
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// freeAddr returns host:port with a port that was free a moment ago on ip.
func freeAddr(t testing.TB, ip string) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatalf("no free port on %s: %v", ip, err)
		}
		addr := ln.Addr().String()
		ln.Close()
		// The kernel may hand out a port it just freed again: a port
		// given to a process not listening yet would be given twice
		// (seen: a meta daemon's --http-addr equal to its --raft-addr).
		if _, given := handedOut.LoadOrStore(addr, true); !given {
			return addr
		}
	}
	t.Fatalf("no port on %s that was not handed out already", ip)
	return ""
}

// handedOut is every address freeAddr returned in this test process.
var handedOut sync.Map

// writeSecret creates a secret file in dir.
func writeSecret(t testing.TB, dir string) (path, secret string) {
	t.Helper()
	out, err := exec.Command(ecfsBin, "keygen").Output()
	if err != nil {
		t.Fatalf("ecfs keygen: %v", err)
	}
	path = filepath.Join(dir, "secret")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, strings.TrimSpace(string(out))
}

// proc is a running ecfs process.
type proc struct {
	t      testing.TB
	args   []string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
	err    error // the exit status, once exited is closed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc starts ecfs with args; the test's cleanup kills and reaps it.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, args...)
}

// startProcEnv is startProc with env added to the test's environment.
func startProcEnv(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	return startBin(t, ecfsBin, env, args...)
}

// startBin is startProcEnv with another build of ecfs.
func startBin(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting ecfs %v: %v", args, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("ecfs %s output:\n%s", strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// term sends SIGTERM and waits up to timeout for the process to exit: it
// returns its exit status, or an error if it is still running (then it is
// killed).
func (p *proc) term(timeout time.Duration) error {
	if !p.running() {
		return fmt.Errorf("not running: %v", p.err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("still running %s after SIGTERM", timeout)
	}
}

// kill sends SIGKILL and reaps the process.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.exited
}

// storeNode is one store daemon of a test cluster.
type storeNode struct {
	dataDir string
	addr    string
	http    string
	p       *proc
}

// testCluster is a set of store daemons sharing a secret.
type testCluster struct {
	t          testing.TB
	dir        string
	secretFile string
	secret     string
	stores     []*storeNode
	client     *store.Client
	storeArgs  []string // extra flags for every store
}

// newStores starts n store daemons on 127.0.0.11, .12, ...
func newStores(t testing.TB, n int) *testCluster {
	t.Helper()
	dir := t.TempDir()
	secretFile, secret := writeSecret(t, dir)
	return newStoresWith(t, dir, secretFile, secret, n)
}

// newStoresWith starts n store daemons with the given secret and extra flags.
func newStoresWith(t testing.TB, dir, secretFile, secret string, n int, extra ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: dir, secretFile: secretFile, secret: secret, storeArgs: extra}
	c.client = store.NewClient(store.ClientConfig{Secret: c.secret, TLS: tlsOf(t, extra)})
	t.Cleanup(c.client.Close)
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		s := &storeNode{dataDir: filepath.Join(dir, fmt.Sprintf("store%d", i)), addr: freeAddr(t, ip), http: freeAddr(t, ip)}
		c.stores = append(c.stores, s)
		c.start(i)
	}
	return c
}

// start (re)starts store i with its data dir and addresses and waits until
// it answers.
func (c *testCluster) start(i int) {
	c.t.Helper()
	s := c.stores[i]
	args := []string{"store", "--data-dir", s.dataDir, "--addr", s.addr, "--http-addr", s.http,
		"--secret-file", c.secretFile, "--log-level", "warn", "--pprof"}
	s.p = startProc(c.t, append(args, c.storeArgs...)...)
	waitFor(c.t, "store "+s.addr, 15*time.Second, func() error {
		if !s.p.running() {
			return fmt.Errorf("exited: %v\n%s", s.p.err, s.p.logs.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.client.Capacity(ctx, s.addr)
		return err
	})
}

func (c *testCluster) addrs() []string {
	out := make([]string, len(c.stores))
	for i, s := range c.stores {
		out[i] = s.addr
	}
	return out
}

// shardFile finds the file of a shard in store i's data dir.
func (c *testCluster) shardFile(i int, k store.ShardKey) (string, error) {
	p := filepath.Join(c.stores[i].dataDir, "disk", k.RelPath())
	_, err := os.Stat(p)
	return p, err
}

// delayProxy forwards TCP connections to target, holding back every request
// (a burst of bytes from the client after a quiet spell) for delay.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newDelayProxy(t testing.TB, ip, target string, delay time.Duration) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{ln: ln, target: target, delay: delay}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *delayProxy) addr() string { return p.ln.Addr().String() }

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.pipe(out, in, true); out.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
	}
}

func (p *delayProxy) pipe(dst, src net.Conn, delay bool) {
	buf := make([]byte, 256<<10)
	last := time.Time{}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if delay && time.Since(last) > 50*time.Millisecond {
				time.Sleep(p.delay) // the behaviour under test: a slow store
			}
			last = time.Now()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *delayProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// runCmd runs a command and returns its error with its output.
func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return nil
}

// tlsArgsOf returns the --tls-cert, --tls-key and --tls-ca flags in args
// (each followed by its value).
func tlsArgsOf(args []string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--tls-cert", "--tls-key", "--tls-ca":
			out = append(out, args[i], args[i+1])
			i++
		}
	}
	return out
}

// tlsOf loads the TLS configuration the TLS flags in args give a daemon
// (nil without them), for the tests' own clients of it.
func tlsOf(t testing.TB, args []string) *tls.Config {
	t.Helper()
	f := map[string]string{}
	a := tlsArgsOf(args)
	for i := 0; i < len(a); i += 2 {
		f[a[i]] = a[i+1]
	}
	if len(f) == 0 {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(f["--tls-cert"], f["--tls-key"])
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(f["--tls-ca"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("%s: no certificate", f["--tls-ca"])
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS13}
}
