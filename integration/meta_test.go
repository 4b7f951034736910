package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// metaNode is one `ecfs meta` process.
type metaNode struct {
	id, dataDir, raft, api, http string
	p                            *proc
}

type metaGroup struct {
	t          testing.TB
	secretFile string
	secret     string
	nodes      []*metaNode
	extra      []string    // flags for every member
	tls        *tls.Config // the members' TLS (from extra), for the tests' clients
}

// newMetaGroup starts n meta members on 127.0.0.21, .22, ...: the first
// bootstraps, the others join through it.
func newMetaGroup(t testing.TB, n int, extra ...string) *metaGroup {
	t.Helper()
	dir := t.TempDir()
	g := &metaGroup{t: t, extra: extra, tls: tlsOf(t, extra)}
	g.secretFile, g.secret = writeSecret(t, dir)
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", 21+i)
		g.nodes = append(g.nodes, &metaNode{
			id: fmt.Sprint("m", i), dataDir: filepath.Join(dir, fmt.Sprint("meta", i)),
			raft: freeAddr(t, ip), api: freeAddr(t, ip), http: freeAddr(t, ip),
		})
	}
	for i := range g.nodes {
		g.launch(i)
		g.wait(i)
	}
	return g
}

// launch starts member i with the flags it was first started with (the
// first bootstraps, the others join): a restart from the data dir must
// ignore them, as a systemd unit passes them every time.
func (g *metaGroup) launch(i int) {
	g.t.Helper()
	g.launchBin(i, ecfsBin)
}

// launchBin is launch with another build of ecfs.
func (g *metaGroup) launchBin(i int, bin string) {
	g.t.Helper()
	m := g.nodes[i]
	args := []string{"meta", "--id", m.id, "--data-dir", m.dataDir, "--raft-addr", m.raft, "--api-addr", m.api,
		"--secret-file", g.secretFile, "--log-level", "warn", "--http-addr", m.http, "--pprof"}
	args = append(args, g.extra...)
	if i == 0 {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", g.nodes[0].api)
	}
	m.p = startBin(g.t, bin, nil, args...)
}

// wait polls member i until it answers and knows a leader.
func (g *metaGroup) wait(i int) {
	g.t.Helper()
	m := g.nodes[i]
	c := g.client()
	defer c.Close()
	waitFor(g.t, "meta "+m.id+" to serve", 30*time.Second, func() error {
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
			return fmt.Errorf("%s sees no leader", m.id)
		}
		return nil
	})
}

func (g *metaGroup) addrs() []string {
	var out []string
	for _, m := range g.nodes {
		out = append(out, m.api)
	}
	return out
}

func (g *metaGroup) client() *cluster.Client {
	g.t.Helper()
	c, err := cluster.NewClient(g.addrs(), g.secret, cluster.WithTLS(g.tls))
	if err != nil {
		g.t.Fatal(err)
	}
	return c
}

// leader returns the index of the member every live member calls leader.
func (g *metaGroup) leader() int {
	g.t.Helper()
	c := g.client()
	defer c.Close()
	idx := -1
	waitFor(g.t, "one leader", 15*time.Second, func() error {
		for i, m := range g.nodes {
			if !m.p.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.StatusOf(ctx, i)
			cancel()
			if err != nil {
				return err
			}
			if st.State == "leader" {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("no member says it leads")
	})
	return idx
}

func TestMetaGroupSurvivesLeaderLossAndRestart(t *testing.T) {
	g := newMetaGroup(t, 3)
	c := g.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Every member of this build announces packing; then it is on.
	waitFor(t, "status to show packing on", 20*time.Second, func() error {
		st := g.status()
		for _, m := range st.Meta {
			if !slices.Contains(m.Features, "packs") {
				return fmt.Errorf("member %s shows features %v", m.ID, m.Features)
			}
		}
		if !st.Packs || len(st.Meta) != 3 {
			return fmt.Errorf("packs %v with %d members", st.Packs, len(st.Meta))
		}
		return nil
	})
	mk := func(name string) *metapb.Result {
		t.Helper()
		r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: namespace.RootIno, Name: name, Mode: 0o755}}})
		if err != nil {
			t.Fatalf("mkdir %s: %v", name, err)
		}
		return r
	}
	if r := mk("a"); r.Errno != 0 {
		t.Fatalf("mkdir a: errno %d", r.Errno)
	}
	old := g.leader()
	g.nodes[old].p.kill()
	start := time.Now()
	if r := mk("b"); r.Errno != 0 {
		t.Fatalf("mkdir b after the leader died: errno %d", r.Errno)
	}
	t.Logf("first write after SIGKILL of the leader took %v", time.Since(start).Round(time.Millisecond))
	st := g.status()
	states := map[string]string{}
	for _, m := range st.Meta {
		states[m.ID] = m.State
	}
	if states[g.nodes[old].id] != "unreachable" || len(st.Meta) != 3 || st.Leader == "" || st.Leader == g.nodes[old].api {
		t.Fatalf("ecfs status after killing %s: %+v", g.nodes[old].id, st)
	}
	g.launch(old)
	g.wait(old)
	for _, m := range g.nodes {
		m.p.kill()
	}
	for i := range g.nodes {
		g.launch(i)
	}
	for i := range g.nodes {
		g.wait(i)
	}
	st = g.status()
	leaders := 0
	for _, m := range st.Meta {
		switch m.State {
		case "leader":
			leaders++
		case "follower":
		default:
			t.Errorf("member %s is %s after the restart", m.ID, m.State)
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders: %+v", leaders, st)
	}
	// Every member restarted from its data dir holds the same state.
	waitFor(t, "identical state on the 3 restarted members", 15*time.Second, func() error {
		var first string
		for i := range g.nodes {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			applied, d, err := c.DigestOf(dctx, i)
			cancel()
			if err != nil {
				return err
			}
			if i == 0 {
				first = fmt.Sprint(applied, d)
			} else if fmt.Sprint(applied, d) != first {
				return fmt.Errorf("member %d: applied %d digest %.12s; member 0: %.30s", i, applied, d, first)
			}
		}
		return nil
	})
	for _, name := range []string{"a", "b"} {
		r, err := c.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: name}}})
		if err != nil || r.Errno != 0 {
			t.Fatalf("after restarting all: lookup %s: %v errno %d", name, err, r.GetErrno())
		}
	}
	// A voter removed through the API leaves the group, which goes on.
	gone := g.nodes[(g.leader()+1)%3]
	if err := c.RemoveMember(ctx, gone.id); err != nil {
		t.Fatalf("removing %s: %v", gone.id, err)
	}
	gone.p.kill()
	st = g.status()
	if len(st.Meta) != 2 {
		t.Fatalf("after removing %s: %+v", gone.id, st.Meta)
	}
	if r := mk("c"); r.Errno != 0 {
		t.Fatalf("mkdir after removing a member: errno %d", r.Errno)
	}
}

type statusJSON struct {
	Leader  string `json:"leader"`
	Objects struct {
		Total, Degraded, Unreadable uint64
	} `json:"objects"`
	GC struct {
		Pending uint64 `json:"pending"`
	} `json:"gc"`
	Heal struct {
		Pending       uint64            `json:"pending"`
		PendingBytes  uint64            `json:"pending_bytes"`
		Corrupt       uint64            `json:"corrupt"`
		Rate          float64           `json:"rate"`
		ETA           *int64            `json:"eta"`
		LastError     string            `json:"last_error"`
		RebuiltShards uint64            `json:"rebuilt_shards"`
		RebuiltBytes  uint64            `json:"rebuilt_bytes"`
		ReadBytes     uint64            `json:"read_bytes"`
		MovedShards   uint64            `json:"moved_shards"`
		Failures      map[string]uint64 `json:"failures"`
	} `json:"heal"`
	Stores []struct {
		ID     string `json:"id"`
		Addr   string `json:"addr"`
		State  string `json:"state"`
		Free   int64  `json:"free_bytes"`
		Total  int64  `json:"total_bytes"`
		Shards uint64 `json:"shards"`
	} `json:"stores"`
	Meta []struct {
		ID       string   `json:"id"`
		Addr     string   `json:"addr"`
		State    string   `json:"state"`
		Features []string `json:"features"`
	} `json:"meta"`
	Packs bool `json:"packs"`
}

// status runs `ecfs status --json`.
func (g *metaGroup) status() statusJSON {
	g.t.Helper()
	code, out, errs := runEcfs(g.t, append([]string{"status", "--meta", strings.Join(g.addrs(), ","), "--secret-file", g.secretFile, "--json"},
		tlsArgsOf(g.extra)...)...)
	if code != 0 {
		g.t.Fatalf("ecfs status: exit %d: %s", code, errs)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		g.t.Fatalf("ecfs status --json: %v: %s", err, out)
	}
	return st
}
