package integration

// TestThreeHostsWalkthrough runs the README's "three hosts" block as
// written. Each host is a network namespace holding the block's address
// (10.0.0.N on a bridge of its own) and a directory standing for its root:
// the block's absolute paths (/etc/ecfs, /var/lib/ecfs, /usr/local/bin,
// /sbin, /mnt/ecfs, /etc/fstab, /var/log) are taken under it. The commands
// run with sh in the host's namespace, except what needs the real machine,
// which the test does as it would: `systemctl enable --now UNIT...` starts
// the unit's ExecStart with its environment files, as systemd reads the
// unit `ecfs systemd --install` wrote; `mount DIR` runs mount.ecfs with the
// host's /etc/fstab line, as mount(8) does.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const wtPrefix = "ewt-" // the namespaces, bridge and links of this test

// walkStep is one command of the block: where it runs and its text (with
// any continuation lines).
type walkStep struct{ where, cmd string }

// readWalkthrough returns the README's three-hosts block.
func readWalkthrough(t *testing.T) []walkStep {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "<!-- walkthrough: three hosts -->\n```sh\n")
	if !ok {
		t.Fatal("README.md has no three-hosts walkthrough block")
	}
	block, _, _ = strings.Cut(block, "```")
	var steps []walkStep
	prompt := regexp.MustCompile(`^(admin|host[1-3N])\$ (.*)$`)
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		line := sc.Text()
		switch m := prompt.FindStringSubmatch(line); {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		case m != nil:
			steps = append(steps, walkStep{m[1], m[2]})
		case len(steps) > 0:
			steps[len(steps)-1].cmd += "\n" + line
		default:
			t.Fatalf("walkthrough line with no prompt: %q", line)
		}
	}
	if len(steps) < 10 {
		t.Fatalf("the walkthrough has %d commands", len(steps))
	}
	return steps
}

// wtHost is one host of the walkthrough.
type wtHost struct {
	n    int
	root string // stands for /
	home string // the directory its commands run in (what the admin copied)
}

func (h *wtHost) ns() string { return fmt.Sprintf("%shost%d", wtPrefix, h.n) }

// rootPaths are the block's absolute paths, each at the start of a word
// (or after = or ,) and followed by /, the word's end or a quote.
var rootPaths = regexp.MustCompile(`(^|[\s=,'"])(/etc|/var/lib/ecfs|/var/log|/usr/local/bin|/sbin|/mnt/ecfs)([/\s'",]|$)`)

// rooted takes the block's absolute paths under the host's root.
func (h *wtHost) rooted(s string) string {
	for range 2 { // a match takes the character after it, which may start the next path
		s = rootPaths.ReplaceAllString(s, "${1}"+h.root+"${2}${3}")
	}
	return s
}

func (h *wtHost) env() []string {
	return append(os.Environ(), "PATH="+filepath.Join(h.root, "usr/local/bin")+":"+filepath.Join(h.root, "sbin")+":"+os.Getenv("PATH"))
}

func wtIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// wtCleanup removes the namespaces and links a run left.
func wtCleanup() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], wtPrefix) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	_ = exec.Command("ip", "link", "del", wtPrefix+"br").Run()
}

func TestThreeHostsWalkthrough(t *testing.T) {
	requireFUSE(t)
	requireNetns(t)
	steps := readWalkthrough(t)
	wtCleanup()
	t.Cleanup(wtCleanup)
	wtIP(t, "link", "add", wtPrefix+"br", "type", "bridge")
	wtIP(t, "link", "set", wtPrefix+"br", "up")
	_ = os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("0"), 0o644)

	base := t.TempDir()
	admin := filepath.Join(base, "admin")
	if err := os.MkdirAll(admin, 0o700); err != nil {
		t.Fatal(err)
	}
	adminEnv := append(os.Environ(), "PATH="+filepath.Dir(ecfsBin)+":"+os.Getenv("PATH"))
	hosts := map[int]*wtHost{}
	for n := 1; n <= 3; n++ {
		h := &wtHost{n: n, root: filepath.Join(base, fmt.Sprintf("host%d", n)), home: filepath.Join(base, fmt.Sprintf("home%d", n))}
		for _, d := range []string{h.root, h.home, filepath.Join(h.root, "var/log")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		wtIP(t, "netns", "add", h.ns())
		veth := fmt.Sprintf("%sv%d", wtPrefix, n)
		wtIP(t, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns())
		wtIP(t, "link", "set", veth, "master", wtPrefix+"br", "up")
		wtIP(t, "-n", h.ns(), "addr", "add", fmt.Sprintf("10.0.0.%d/24", n), "dev", "eth0")
		wtIP(t, "-n", h.ns(), "link", "set", "eth0", "up")
		wtIP(t, "-n", h.ns(), "link", "set", "lo", "up")
		hosts[n] = h
	}
	var procs []*proc
	var mounts []string
	t.Cleanup(func() {
		for _, mp := range mounts {
			if isMounted(mp) {
				_ = exec.Command("fusermount3", "-u", "-z", mp).Run()
				_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			}
		}
		for _, p := range procs {
			p.kill()
			if t.Failed() {
				t.Logf("ecfs %s:\n%s", strings.Join(p.args, " "), p.logs.String())
			}
		}
	})

	inNS := func(h *wtHost, name string, args ...string) *exec.Cmd {
		c := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + h.ns(), "--", name}, args...)...)
		c.Dir, c.Env = h.home, h.env()
		return c
	}
	copied := false
	for _, st := range steps {
		var on []*wtHost
		switch st.where {
		case "admin":
			c := exec.Command("sh", "-ec", st.cmd)
			c.Dir, c.Env = admin, adminEnv
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("admin$ %s: %v\n%s", st.cmd, err, out)
			}
			continue
		case "hostN":
			on = []*wtHost{hosts[1], hosts[2], hosts[3]}
		default:
			on = []*wtHost{hosts[int(st.where[4]-'0')]}
		}
		if !copied {
			// "Copy to each host": what the admin made, and the binary.
			for _, h := range hosts {
				if out, err := exec.Command("cp", "-a", admin+"/.", h.home).CombinedOutput(); err != nil {
					t.Fatalf("copying to host %d: %v\n%s", h.n, err, out)
				}
				if out, err := exec.Command("cp", ecfsBin, filepath.Join(h.home, "ecfs")).CombinedOutput(); err != nil {
					t.Fatalf("copying the binary: %v\n%s", err, out)
				}
			}
			copied = true
		}
		for _, h := range on {
			cmd := h.rooted(strings.ReplaceAll(st.cmd, "hostN", fmt.Sprintf("host%d", h.n)))
			cmd = strings.ReplaceAll(cmd, "10.0.0.N", fmt.Sprintf("10.0.0.%d", h.n))
			cmd = strings.ReplaceAll(cmd, "--install", "--install --root "+h.root) // not this machine's /etc/systemd
			f := strings.Fields(cmd)
			switch {
			case strings.HasPrefix(cmd, "systemctl enable --now "):
				for _, unit := range f[3:] {
					p := startUnit(t, h, unit, inNS)
					procs = append(procs, p)
				}
			case len(f) == 2 && f[0] == "mount":
				mp := f[1]
				mounts = append(mounts, mp)
				mountFromFstab(t, h, mp, inNS)
			case strings.HasPrefix(cmd, "ecfs status "):
				// Run as an operator would: until the cluster has come up.
				var out []byte
				waitFor(t, "ecfs status on host 1 to show 3 members and 3 stores up", 60*time.Second, func() error {
					var err error
					out, err = inNS(h, "sh", "-ec", cmd).CombinedOutput()
					if err != nil {
						return fmt.Errorf("%v: %s", err, out)
					}
					if n := strings.Count(string(out), " up "); n != 3 || strings.Count(string(out), "follower\n")+strings.Count(string(out), "leader\n") != 3 {
						return fmt.Errorf("not all up yet:\n%s", out)
					}
					return nil
				})
				t.Logf("host%d$ %s\n%s", h.n, st.cmd, out)
			default:
				if out, err := inNS(h, "sh", "-ec", cmd).CombinedOutput(); err != nil {
					t.Fatalf("host%d$ %s\n(as %s): %v\n%s", h.n, st.cmd, cmd, err, out)
				}
			}
		}
	}
	if len(mounts) != 3 {
		t.Fatalf("the walkthrough mounted %d file systems, want 3", len(mounts))
	}
	// The three mounts are one filesystem.
	src := makeTree(t, 6)
	sh(t, ".", "cp -a "+src+" "+mounts[0]+"/tree")
	compareTrees(t, src, filepath.Join(mounts[2], "tree"), true)
	compareTrees(t, src, filepath.Join(mounts[1], "tree"), true)
}

// startUnit starts what systemd would for unit on host h: the ExecStart
// of the unit file `ecfs systemd --install` wrote, with the variables of
// its environment files (a leading "-": optional).
func startUnit(t *testing.T, h *wtHost, unit string, inNS func(*wtHost, string, ...string) *exec.Cmd) *proc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, "etc/systemd/system", unit+".service"))
	if err != nil {
		t.Fatalf("systemctl enable %s on host %d: %v", unit, h.n, err)
	}
	vars := map[string]string{}
	var exec string
	for _, l := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(l, "EnvironmentFile="); ok {
			optional := strings.HasPrefix(f, "-")
			env, err := os.ReadFile(h.rooted(" " + strings.TrimPrefix(f, "-"))[1:])
			if err != nil {
				if optional {
					continue
				}
				t.Fatalf("%s on host %d: %v", unit, h.n, err)
			}
			for _, e := range strings.Split(string(env), "\n") {
				if k, v, ok := strings.Cut(e, "="); ok && !strings.HasPrefix(k, "#") {
					vars[strings.TrimSpace(k)] = v
				}
			}
		}
		if e, ok := strings.CutPrefix(l, "ExecStart="); ok {
			exec = e
		}
	}
	var args []string
	for _, w := range strings.Fields(exec)[1:] { // the binary: the test's build
		if v, ok := strings.CutPrefix(w, "$"); ok {
			args = append(args, strings.Fields(vars[v])...)
			continue
		}
		args = append(args, w)
	}
	for i, a := range args {
		args[i] = h.rooted(" " + a)[1:]
	}
	p := &proc{t: t, args: args, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = inNS(h, ecfsBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	return p
}

// mountFromFstab does what `mount DIR` does with the host's /etc/fstab:
// runs mount.ecfs SPEC DIR -o OPTIONS (its log under the host's root).
func mountFromFstab(t *testing.T, h *wtHost, mp string, inNS func(*wtHost, string, ...string) *exec.Cmd) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, "etc/fstab"))
	if err != nil {
		t.Fatalf("mount on host %d: %v", h.n, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || h.rooted(" " + f[1])[1:] != mp {
			continue
		}
		if f[2] != "ecfs" {
			t.Fatalf("fstab type %q", f[2])
		}
		opts := h.rooted("," + f[3])[1:] + ",log_file=" + filepath.Join(h.root, "var/log/ecfs-mount.log")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := inNS(h, filepath.Join(h.root, "sbin/mount.ecfs"), f[0], mp, "-o", opts)
		c = exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
		c.Dir, c.Env = h.home, h.env()
		if out, err := c.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(h.root, "var/log/ecfs-mount.log"))
			t.Fatalf("mount %s on host %d: %v\n%s\nlog:\n%s", mp, h.n, err, out, log)
		}
		if !isMounted(mp) {
			t.Fatalf("mount.ecfs returned but %s is not mounted", mp)
		}
		return
	}
	t.Fatalf("no fstab line for %s on host %d:\n%s", mp, h.n, b)
}
