package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/hashicorp/raft"
)

// raftGauge reads a meta member's ecfs_meta_raft_NAME gauge.
func raftGauge(t *testing.T, m *metaNode, name string) float64 {
	t.Helper()
	return counters(t, m.http, "ecfs_meta_raft_"+name)[""]
}

// TestRaftPortRefusesForgedVotes: a process without the cluster secret
// sends each member of a real 3-member group a RequestVote with term 1000
// and leadership transfer set (one such vote deposed the leader when the
// Raft port took anyone). No member answers; no term or leader changes;
// each member counts the refusal on /metrics; the group still commits.
func TestRaftPortRefusesForgedVotes(t *testing.T) {
	t.Parallel()
	g := newMetaGroup(t, 3)
	lead := g.leader()
	var term float64
	waitFor(t, "every member in one term", 15*time.Second, func() error {
		term = raftGauge(t, g.nodes[0], "term")
		for _, m := range g.nodes {
			if got := raftGauge(t, m, "term"); got != term || term == 0 {
				return fmt.Errorf("%s in term %v, %s in %v", m.id, got, g.nodes[0].id, term)
			}
		}
		return nil
	})
	forger, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	for _, m := range g.nodes {
		req := &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("forger"), Addr: []byte(forger.LocalAddr())},
			Term:      1000, LastLogIndex: 1 << 40, LastLogTerm: 1000, LeadershipTransfer: true,
		}
		var resp raft.RequestVoteResponse
		if err := forger.RequestVote(raft.ServerID(m.id), raft.ServerAddress(m.raft), req, &resp); err == nil {
			t.Errorf("%s answered a forged vote: %+v", m.id, resp)
		}
	}
	waitFor(t, "each member to count a refused connection", 10*time.Second, func() error {
		for _, m := range g.nodes {
			var n float64
			for _, v := range counters(t, m.http, "ecfs_meta_raft_refused_connections_total") {
				n += v
			}
			if n < 1 {
				return fmt.Errorf("%s counts no refused raft connection", m.id)
			}
		}
		return nil
	})
	for i, m := range g.nodes {
		if got := raftGauge(t, m, "term"); got != term {
			t.Errorf("%s: term %v after the forged votes, was %v", m.id, got, term)
		}
		if i == lead && raftGauge(t, m, "is_leader") != 1 {
			t.Errorf("%s led before the forged votes and does not now", m.id)
		}
	}
	if got := g.leader(); got != lead {
		t.Errorf("leader %s after the forged votes, was %s", g.nodes[got].id, g.nodes[lead].id)
	}
	c := g.client() // the group still commits
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: 1, Name: "after-forgery", Mode: 0o755}}})
	if err != nil || r.Errno != 0 {
		t.Errorf("mkdir after the forged votes: %v, errno %d", err, r.GetErrno())
	}
}

// TestSecretFileModes: `ecfs keygen FILE` and `ecfs keygen > FILE` leave
// FILE mode 0600, and every daemon, the mount and the tools refuse a
// secret file that group or others can read, with one line saying how to
// fix it, before they listen or connect anywhere.
func TestSecretFileModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	made := filepath.Join(dir, "made")
	if code, _, errs := runEcfs(t, "keygen", made); code != 0 {
		t.Fatalf("ecfs keygen FILE: exit %d: %s", code, errs)
	}
	if code, _, errs := runEcfs(t, "keygen", made); code == 0 || !strings.Contains(errs, "exists") {
		t.Errorf("ecfs keygen over an existing file: exit %d: %s", code, errs)
	}
	redirected := filepath.Join(dir, "redirected")
	f, err := os.OpenFile(redirected, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644) // as a shell's > makes it
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ecfsBin, "keygen")
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		t.Fatalf("ecfs keygen > FILE: %v", err)
	}
	f.Close()
	for _, p := range []string{made, redirected} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Mode().Perm(); m != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", filepath.Base(p), m)
		}
		if b, _ := os.ReadFile(p); len(strings.TrimSpace(string(b))) != 64 {
			t.Errorf("%s holds %q, want 64 hex digits", filepath.Base(p), b)
		}
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(made, mode); err != nil {
			t.Fatal(err)
		}
		mnt := t.TempDir()
		for _, args := range [][]string{
			{"meta", "--id", "m1", "--data-dir", filepath.Join(dir, "meta"), "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--bootstrap", "--secret-file", made},
			{"store", "--data-dir", filepath.Join(dir, "store"), "--addr", "127.0.0.1:0", "--meta", "127.0.0.1:1", "--secret-file", made},
			{"mount", "--meta", "127.0.0.1:1", "--secret-file", made, mnt},
			{"status", "--meta", "127.0.0.1:1", "--secret-file", made},
		} {
			code, _, errs := runEcfs(t, args...)
			if code == 0 || !strings.Contains(errs, "chmod 600") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Errorf("ecfs %s with a secret file of mode %04o: exit %d, stderr %q; want a failure and one line saying chmod 600", args[0], mode, code, errs)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "meta")); err == nil {
			t.Errorf("ecfs meta made its data dir with a secret of mode %04o", mode)
		}
	}
}
