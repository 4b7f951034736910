package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// warnings returns the lines of a process's log at WARN or ERROR.
func warnings(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// TestQuietLogs: a new group's start logs no warning; with one of three
// members dead for 15 s, the leader logs its failed heartbeats to it once
// (raft repeats them twice a second), and a mount using the group logs
// nothing while idle (its first address is the dead member).
func TestQuietLogs(t *testing.T) {
	fc := newFSClusterWith(t, 3, 6, nil, nil)
	lead := fc.g.leader()
	for _, m := range fc.g.nodes {
		for _, l := range warnings(m.p.logs.String()) {
			if strings.Contains(l, "election") || strings.Contains(l, "older logs") || strings.Contains(l, "previous log") {
				t.Errorf("%s warns at a routine start: %s", m.id, l)
			}
		}
	}
	dead := (lead + 1) % 3
	// The mount tries the dead member first.
	addrs := []string{fc.g.nodes[dead].api}
	for i, m := range fc.g.nodes {
		if i != dead {
			addrs = append(addrs, m.api)
		}
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &mountNode{dir: mnt}
	fc.g.nodes[dead].p.kill()
	ready := newReadyNotifier(t)
	m.p = startProcEnv(t, ready.env(), "mount", "--meta", strings.Join(addrs, ","), "--secret-file", fc.g.secretFile, "--log-level", "info", "--session-ttl", "5s", mnt)
	t.Cleanup(func() { m.stop(t) })
	waitFor(t, "the mount", 30*time.Second, ready.check)
	if err := os.MkdirAll(filepath.Join(mnt, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "a", "b", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	leaderLog := len(fc.g.nodes[lead].p.logs.String())
	mountLog := len(m.p.logs.String())
	time.Sleep(15 * time.Second) // a window of idleness, whose log is the measure

	var hb int
	for _, l := range strings.Split(fc.g.nodes[lead].p.logs.String()[leaderLog:], "\n") {
		if strings.Contains(l, "heartbeat") {
			hb++
		}
	}
	if hb > 1 {
		t.Errorf("the leader logged %d lines about heartbeats to a dead member in 15 s, want at most 1:\n%s", hb, fc.g.nodes[lead].p.logs.String()[leaderLog:])
	}
	if l := strings.TrimSpace(m.p.logs.String()[mountLog:]); l != "" {
		t.Errorf("the idle mount logged:\n%s", l)
	}
}
