package integration

// The network of the fault tests: every daemon and mount runs in its own
// network namespace (efx-NAME), joined to a bridge in the root namespace by
// a veth pair (efx-NAME in the root namespace, eth0 inside), on 10.77.0.0/24.
// A partition takes root-side links down (the node hears no one) or moves
// them to a second bridge (the nodes moved hear each other only). Processes
// are started with nsenter --net, which enters the network namespace only,
// so FUSE mounts made inside stay visible to the test.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	netPrefix   = "efx-"            // every namespace, bridge and veth of these tests
	bridgeMain  = netPrefix + "br0" // 10.77.0.1/24: the proxies listen here
	bridgeSplit = netPrefix + "br1" // the other side of a split
	hostIP      = "10.77.0.1"
	faultsRoot  = "/tmp/ecfs-faults" // mount points and tmpfs disks live under it
)

// faultNet is the namespaces and links of one test.
type faultNet struct {
	t          testing.TB
	mu         sync.Mutex
	nodes      map[string]string // name -> IP
	down       map[string]bool   // root-side links taken down
	split      map[string]bool   // links moved to bridgeSplit
	procs      []*proc           // every process started, in order
	names      []string          // the namespace of each
	beforeKill []func()          // run before the processes are killed (unmounts)
	closers    []func()          // run after (proxies)
}

// requireNetns fails (never skips) when namespaces cannot be made.
func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the fault tests need root (network namespaces, veth, tmpfs)")
	}
	for _, tool := range []string{"ip", "nsenter", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the fault tests need %s: %v", tool, err)
		}
	}
}

// newFaultNet removes what a crashed earlier run left and makes the bridges.
func newFaultNet(t testing.TB) *faultNet {
	t.Helper()
	requireFUSE(t)
	requireNetns(t)
	cleanupStaleFaults(t)
	n := &faultNet{t: t, nodes: map[string]string{}, down: map[string]bool{}, split: map[string]bool{}}
	t.Cleanup(n.cleanup)
	for _, br := range []string{bridgeMain, bridgeSplit} {
		mustIP(t, "link", "add", br, "type", "bridge")
		mustIP(t, "link", "set", br, "up")
	}
	mustIP(t, "addr", "add", hostIP+"/24", "dev", bridgeMain)
	// Bridged frames must not go through the host's iptables.
	_ = os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("0"), 0o644)
	return n
}

// add makes namespace efx-name with address ip on the main bridge.
func (n *faultNet) add(name, ip string) {
	n.t.Helper()
	ns := netPrefix + name
	mustIP(n.t, "netns", "add", ns)
	mustIP(n.t, "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
	mustIP(n.t, "link", "set", ns, "master", bridgeMain, "up")
	mustIP(n.t, "-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
	mustIP(n.t, "-n", ns, "link", "set", "eth0", "up")
	mustIP(n.t, "-n", ns, "link", "set", "lo", "up")
	n.mu.Lock()
	n.nodes[name] = ip
	n.mu.Unlock()
}

// isolate takes the links of names down: each hears no one until heal.
func (n *faultNet) isolate(names ...string) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range names {
		mustIP(n.t, "link", "set", netPrefix+name, "down")
		n.down[name] = true
	}
}

// splitOff moves names to the other bridge: they hear each other, and
// neither the rest nor the proxies on the main bridge.
func (n *faultNet) splitOff(names ...string) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range names {
		mustIP(n.t, "link", "set", netPrefix+name, "master", bridgeSplit)
		n.split[name] = true
	}
}

// heal brings every link up on the main bridge.
func (n *faultNet) heal() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for name := range n.split {
		mustIP(n.t, "link", "set", netPrefix+name, "master", bridgeMain)
	}
	for name := range n.down {
		mustIP(n.t, "link", "set", netPrefix+name, "up")
	}
	clear(n.split)
	clear(n.down)
}

// command returns a command that runs in name's network namespace only.
func (n *faultNet) command(name, bin string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + netPrefix + name, "--", bin}, args...)...)
}

// startIn starts ecfs in name's namespace; nsenter execs it, so the pid is
// ecfs's own and signals reach it. The test's cleanup kills and reaps it.
func (n *faultNet) startIn(name string, args ...string) *proc {
	n.t.Helper()
	return n.startInEnv(name, nil, args...)
}

// startInEnv is startIn with env added to the test's environment.
func (n *faultNet) startInEnv(name string, env []string, args ...string) *proc {
	n.t.Helper()
	p := &proc{t: n.t, args: args, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = n.command(name, ecfsBin, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		n.t.Fatalf("starting ecfs %v in %s: %v", args, name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.names = append(n.names, name)
	n.mu.Unlock()
	return p
}

// cleanup heals and thaws everything, lets the mounts unmount, kills every
// process, and removes every mount, namespace and link.
func (n *faultNet) cleanup() {
	n.heal()
	for _, p := range n.procs {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	for _, f := range n.beforeKill {
		f()
	}
	logDir := os.Getenv("ECFS_FAULTS_LOGDIR") // every process's whole log, for debugging
	for i, p := range n.procs {
		p.kill()
		if logDir != "" {
			_ = os.WriteFile(filepath.Join(logDir, fmt.Sprintf("%s-%s-%d.log", n.t.Name(), n.names[i], i)), []byte(p.logs.String()), 0o644)
		}
		if n.t.Failed() {
			out := p.logs.String()
			if len(out) > 6000 {
				out = "…" + out[len(out)-6000:]
			}
			n.t.Logf("%s: ecfs %s (%v) output:\n%s", n.names[i], strings.Join(p.args, " "), p.err, out)
		}
	}
	for _, f := range n.closers {
		f()
	}
	cleanupStaleFaults(n.t)
}

func mustIP(t testing.TB, args ...string) {
	t.Helper()
	if err := runCmd("ip", args...); err != nil {
		t.Fatal(err)
	}
}

// cleanupStaleFaults removes every process, mount, namespace and link of
// these tests, from this run or a crashed earlier one.
func cleanupStaleFaults(t testing.TB) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var spaces []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], netPrefix) {
			spaces = append(spaces, f[0])
		}
	}
	for _, ns := range spaces {
		pids, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, s := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGCONT)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, mp := range mountsUnder(faultsRoot) {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Logf("unmounting stale %s: %v", mp, err)
		}
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(links), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, netPrefix) {
			_ = runCmd("ip", "link", "del", name)
		}
	}
	for _, ns := range spaces {
		if err := runCmd("ip", "netns", "del", ns); err != nil {
			t.Logf("removing stale namespace: %v", err)
		}
	}
	if err := os.RemoveAll(faultsRoot); err != nil {
		t.Logf("removing %s: %v", faultsRoot, err)
	}
}

// mountsUnder lists mount points under root, deepest first.
func mountsUnder(root string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], root+"/") {
			out = append(out, fields[4])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// tmpfsDisk mounts a tmpfs of size MiB at dir; cleanup unmounts it.
func tmpfsDisk(t testing.TB, dir string, mib int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := runCmd("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", mib), "tmpfs", dir); err != nil {
		t.Fatal(err)
	}
	// cleanupStaleFaults unmounts it, once the store is dead.
}

// fillDisk writes a file in dir until the file system is full and returns
// a function that removes it again.
func fillDisk(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	for {
		if _, err := f.Write(buf); err != nil {
			break // ENOSPC: full
		}
	}
	f.Close()
	for len(buf) > 1 { // the last small pieces too
		g, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			break
		}
		if _, err := g.Write(buf); err != nil {
			buf = buf[:len(buf)/2]
		}
		g.Close()
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Errorf("freeing the full disk: %v", err)
		}
	}
}

// sleepPhase waits d: the schedule of a fault, not synchronisation.
func sleepPhase(d time.Duration) { time.Sleep(d) }
