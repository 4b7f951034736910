package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/store"
)

// faultCluster is a whole filesystem with every process in its own network
// namespace: metas m0..m2 (10.77.0.11+), stores s0..s5 (10.77.0.21+, each
// reached through a faultProxy on the host), mounts c0.. (10.77.0.31+).
type faultCluster struct {
	t          testing.TB
	net        *faultNet
	dir        string // under faultsRoot
	secretFile string
	secret     string
	metas      []*faultMeta
	stores     []*faultStore
	mounts     []*faultMount
	faults     []string // what was injected, in order
	stuckKills int      // killed mounts whose FUSE connection had to be aborted (killMount)
}

type faultMeta struct {
	name, ip, dataDir string
	p                 *proc
}

type faultStore struct {
	name, ip, dataDir string
	proxy             *faultProxy
	extra             []string
	p                 *proc
}

type faultMount struct {
	name, ip, dir string
	extra         []string
	p             *proc
}

// The mounts' flags: short timeouts so a fault ends in EIO within seconds,
// a short session TTL so a frozen mount loses its locks quickly, and a
// kernel cache of names and attributes that expires at once: the checks
// are of the service, not of the kernel's 1 s attribute cache.
var faultMountFlags = []string{"--session-ttl", "4s", "--meta-timeout", "6s", "--write-timeout", "6s",
	"--attr-timeout", "1ns", "--log-level", faultMountLogLevel()}

// faultMountLogLevel is the mounts' log level: warn, or ECFS_FAULTS_MOUNT_LOG
// (e.g. debug, with ECFS_FAULTS_LOGDIR to keep the logs) when debugging.
func faultMountLogLevel() string {
	if l := os.Getenv("ECFS_FAULTS_MOUNT_LOG"); l != "" {
		return l
	}
	return "warn"
}

// newFaultCluster starts 3 metas, 6 stores (4+2) and the given mounts, each
// in its own namespace. Store tmpfsStore (if >= 0) keeps its data on a
// tmpfs of tmpfsMiB MiB.
func newFaultCluster(t testing.TB, mounts int, tmpfsStore int, tmpfsMiB int) *faultCluster {
	t.Helper()
	n := newFaultNet(t)
	fc := &faultCluster{t: t, net: n, dir: filepath.Join(faultsRoot, strings.ReplaceAll(t.Name(), "/", "_"))}
	if err := os.MkdirAll(fc.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fc.secretFile, fc.secret = writeSecret(t, fc.dir)
	for i := range 3 {
		m := &faultMeta{name: fmt.Sprint("m", i), ip: fmt.Sprint("10.77.0.", 11+i)}
		m.dataDir = filepath.Join(fc.dir, m.name)
		n.add(m.name, m.ip)
		fc.metas = append(fc.metas, m)
	}
	for i := range 3 {
		fc.startMeta(i, true)
		fc.waitMeta(i)
	}
	for i := range 6 {
		s := &faultStore{name: fmt.Sprint("s", i), ip: fmt.Sprint("10.77.0.", 21+i)}
		s.dataDir = filepath.Join(fc.dir, s.name)
		if i == tmpfsStore {
			tmpfsDisk(t, s.dataDir, tmpfsMiB)
			s.extra = []string{"--reserve", "0"}
		}
		n.add(s.name, s.ip)
		s.proxy = newFaultProxy(n, s.ip+":9200")
		fc.stores = append(fc.stores, s)
		fc.startStore(i)
	}
	fc.waitStoresUp(6, 30*time.Second)
	for i := range mounts {
		m := &faultMount{name: fmt.Sprint("c", i), ip: fmt.Sprint("10.77.0.", 31+i), extra: faultMountFlags}
		m.dir = filepath.Join(fc.dir, m.name, "mnt")
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n.add(m.name, m.ip)
		fc.mounts = append(fc.mounts, m)
		fc.startMount(i)
	}
	// Before the processes are killed (the network healed, every process
	// thawed), the mounts flush and unmount.
	n.beforeKill = append(n.beforeKill, func() {
		for _, m := range fc.mounts {
			fc.stopMount(m)
		}
	})
	return fc
}

func (fc *faultCluster) metaAddrs() string {
	var a []string
	for _, m := range fc.metas {
		a = append(a, m.ip+":9100")
	}
	return strings.Join(a, ",")
}

func (fc *faultCluster) procs() []*proc {
	var out []*proc
	for _, m := range fc.metas {
		out = append(out, m.p)
	}
	for _, s := range fc.stores {
		out = append(out, s.p)
	}
	for _, m := range fc.mounts {
		out = append(out, m.p)
	}
	return out
}

// startMeta starts meta i (bootstrap or join flags are ignored on a restart).
func (fc *faultCluster) startMeta(i int, first bool) {
	m := fc.metas[i]
	args := []string{"meta", "--id", m.name, "--data-dir", m.dataDir, "--raft-addr", m.ip + ":9101",
		"--api-addr", m.ip + ":9100", "--http-addr", m.ip + ":9300", "--secret-file", fc.secretFile,
		"--log-level", "warn", "--suspect-after", "1s", "--down-after", "4s", "--heal-interval", "500ms",
		"--gc-interval", "500ms", "--orphan-interval", "5s", "--orphan-grace", "60s"}
	if i == 0 {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", fc.metas[0].ip+":9100")
	}
	m.p = fc.net.startIn(m.name, args...)
}

// client is a metadata client from the host (it reaches every member
// while the network is whole).
func (fc *faultCluster) client() *cluster.Client {
	c, err := cluster.NewClient(strings.Split(fc.metaAddrs(), ","), fc.secret)
	if err != nil {
		fc.t.Fatal(err)
	}
	return c
}

func (fc *faultCluster) waitMeta(i int) {
	fc.t.Helper()
	m := fc.metas[i]
	c := fc.client()
	defer c.Close()
	waitFor(fc.t, "meta "+m.name+" to serve", 30*time.Second, func() error {
		if !m.p.running() {
			return fmt.Errorf("exited: %v\n%s", m.p.err, m.p.logs.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.StatusOf(ctx, i)
		if err != nil {
			return err
		}
		if st.LeaderApi == "" {
			return fmt.Errorf("%s sees no leader", m.name)
		}
		return nil
	})
}

// leader returns the index of the meta that says it leads.
func (fc *faultCluster) leader() int {
	fc.t.Helper()
	c := fc.client()
	defer c.Close()
	idx := -1
	waitFor(fc.t, "a leader", 30*time.Second, func() error {
		for i, m := range fc.metas {
			if !m.p.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.StatusOf(ctx, i)
			cancel()
			if err == nil && st.State == "leader" {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("no member says it leads")
	})
	return idx
}

func (fc *faultCluster) startStore(i int) {
	s := fc.stores[i]
	args := []string{"store", "--data-dir", s.dataDir, "--addr", s.ip + ":9200", "--advertise", s.proxy.addr(),
		"--http-addr", s.ip + ":9300", "--meta", fc.metaAddrs(), "--secret-file", fc.secretFile,
		"--log-level", "warn", "--heartbeat", "250ms"}
	s.p = fc.net.startIn(s.name, append(args, s.extra...)...)
	cl := store.NewClient(store.ClientConfig{Secret: fc.secret})
	defer cl.Close()
	waitFor(fc.t, "store "+s.name, 20*time.Second, func() error {
		if !s.p.running() {
			return fmt.Errorf("exited: %v\n%s", s.p.err, s.p.logs.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cl.Capacity(ctx, s.ip+":9200")
		return err
	})
}

// waitStoresUp polls the status until n stores are up.
func (fc *faultCluster) waitStoresUp(n int, timeout time.Duration) {
	fc.t.Helper()
	waitFor(fc.t, fmt.Sprint(n, " stores up"), timeout, func() error {
		code, out, errs := runEcfs(fc.t, "status", "--meta", fc.metaAddrs(), "--secret-file", fc.secretFile, "--json")
		if code != 0 {
			return fmt.Errorf("ecfs status: %s", errs)
		}
		if up := strings.Count(out, `"state":"up"`) + strings.Count(out, `"state": "up"`); up < n {
			return fmt.Errorf("%d stores up", up)
		}
		return nil
	})
}

// startMount (re)starts mount i and waits until its mount point serves.
func (fc *faultCluster) startMount(i int) {
	fc.t.Helper()
	m := fc.mounts[i]
	args := append([]string{"mount", "--meta", fc.metaAddrs(), "--secret-file", fc.secretFile}, m.extra...)
	ready := newReadyNotifier(fc.t)
	m.p = fc.net.startInEnv(m.name, ready.env(), append(args, m.dir)...)
	waitFor(fc.t, "mount "+m.name, 30*time.Second, func() error {
		if !m.p.running() {
			return fmt.Errorf("exited: %v\n%s", m.p.err, m.p.logs.String())
		}
		return ready.check()
	})
}

// stopMount unmounts with SIGTERM, then SIGKILL and a lazy unmount.
func (fc *faultCluster) stopMount(m *faultMount) {
	if m.p != nil && m.p.running() {
		_ = m.p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.p.exited:
		case <-time.After(15 * time.Second):
			fc.t.Logf("mount %s did not exit 15 s after SIGTERM: killed", m.name)
			m.p.kill()
		}
	}
	if isMounted(m.dir) {
		_ = syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
}

// killMount SIGKILLs mount i and detaches its dead mount point: every
// pending call on it fails (ENOTCONN), as on a crashed client host.
func (fc *faultCluster) killMount(i int) {
	m := fc.mounts[i]
	if m.p.running() {
		_ = m.p.cmd.Process.Signal(syscall.SIGKILL)
	}
	select {
	case <-m.p.exited:
	case <-time.After(5 * time.Second):
		// A thread of the killed mount is stuck in the kernel: a FUSE
		// notification (a read lease's invalidation) waits for a
		// directory lock that a request to this same dead mount holds,
		// and the connection cannot close while that thread lives. An
		// operator aborts it (ecfs umount --abort); so does the test,
		// and says so (see fs/readlease.go: a revocation's invalidation).
		fc.t.Logf("mount c%d stuck in the kernel 5 s after SIGKILL; aborting its FUSE connection", i)
		fc.stuckKills++
		if code, out, errs := runEcfs(fc.t, "umount", "--abort", m.dir); code != 0 {
			fc.t.Fatalf("ecfs umount --abort %s: exit %d: %s%s", m.dir, code, out, errs)
		}
		<-m.p.exited
	}
	if isMounted(m.dir) {
		_ = syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
}

// note records an injected fault for the summary.
func (fc *faultCluster) note(format string, args ...any) {
	s := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	fc.faults = append(fc.faults, s)
	fc.t.Logf("fault %d: %s", len(fc.faults), s)
}

func (fc *faultCluster) stop(p *proc) { _ = p.cmd.Process.Signal(syscall.SIGSTOP) }
func (fc *faultCluster) cont(p *proc) { _ = p.cmd.Process.Signal(syscall.SIGCONT) }

// restartAll SIGKILLs every process and starts the metas and stores again
// (mounts are left stopped): only what was made durable survives.
func (fc *faultCluster) restartAll() {
	fc.t.Helper()
	fc.net.heal()
	for i := range fc.mounts {
		fc.killMount(i)
	}
	for _, p := range fc.procs() {
		fc.cont(p)
		p.kill()
	}
	for i := range fc.metas {
		fc.startMeta(i, false)
	}
	for i := range fc.metas {
		fc.waitMeta(i)
	}
	for i := range fc.stores {
		fc.startStore(i)
	}
	fc.waitStoresUp(len(fc.stores), 30*time.Second)
}
