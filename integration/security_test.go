package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
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

// certs makes a CA in dir and one host certificate, "node", for every
// 127.0.0.x address the tests use, and returns the flags that use them.
func certs(t testing.TB, dir string) []string {
	t.Helper()
	if code, _, errs := runEcfs(t, "certs", "ca", dir); code != 0 {
		t.Fatalf("ecfs certs ca: exit %d: %s", code, errs)
	}
	args := []string{"certs", "host", dir, "node", "localhost"}
	for i := 1; i < 64; i++ {
		args = append(args, fmt.Sprintf("127.0.0.%d", i))
	}
	if code, _, errs := runEcfs(t, args...); code != 0 {
		t.Fatalf("ecfs certs host: exit %d: %s", code, errs)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "node.pem", "node-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Mode().Perm(); m != 0o600 {
			t.Errorf("ecfs certs wrote %s mode %04o, want 0600", f, m)
		}
	}
	return []string{"--tls-cert", filepath.Join(dir, "node.pem"), "--tls-key", filepath.Join(dir, "node-key.pem"), "--tls-ca", filepath.Join(dir, "ca.pem")}
}

// refusedTLS reports why the server at addr refused a TLS client with
// cfg, or "" if it took it: a TLS 1.3 server's refusal of the client's
// certificate arrives with the first read.
func refusedTLS(addr, alpn string, cfg *tls.Config) string {
	cfg = cfg.Clone()
	if alpn != "" {
		cfg.NextProtos = []string{alpn} // gRPC's servers insist on "h2"
	}
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err.Error()
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "" // it waits for more: it took the connection
		}
		return err.Error()
	}
	return ""
}

// refusedPlain reports whether the server at addr refused a plaintext
// client: it closes the connection (or answers a TLS alert) instead of a
// protocol answer.
func refusedPlain(addr string) (bool, string) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return false, err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = c.Write([]byte("GET /v1/capacity HTTP/1.1\r\nHost: x\r\n\r\n"))
	b, _ := io.ReadAll(c)
	// A TLS server answers plaintext HTTP with a 400 "client sent an HTTP
	// request to an HTTPS server" (Go's http.Server) or an alert record
	// (0x15) and closes; never with a shard API answer.
	s := string(b)
	return !strings.Contains(s, "X-Ecfs") && !strings.Contains(s, "200 OK"), s
}

// TestTLSCluster: 3 meta members, 6 stores and 2 mounts with certificates
// from `ecfs certs` copy a source tree that reads back identical through
// the other mount; the tools reach the service with the certificate.
// Every port (metadata API, Raft, shard API) refuses a plaintext client,
// one without a certificate and one with a certificate of another CA, and
// counts the refusals.
func TestTLSCluster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tlsArgs := certs(t, filepath.Join(dir, "pki"))
	fc := newFSClusterWith(t, 3, 6, append([]string{"--suspect-after", "1s", "--down-after", "3s"}, tlsArgs...),
		append([]string{"--heartbeat", "250ms"}, tlsArgs...))
	m1, m2 := fc.mount(), fc.mount()
	src := makeTree(t, 8)
	sh(t, m1.dir, "cp -a "+src+" cpa")
	n := compareTrees(t, src, filepath.Join(m2.dir, "cpa"), true)
	t.Logf("cp -a over TLS: %d paths match through the other mount", n)
	if st := fc.g.status(); len(st.Meta) != 3 || len(st.Stores) != 6 {
		t.Errorf("ecfs status with TLS: %d members, %d stores", len(st.Meta), len(st.Stores))
	}

	// The client certificates that must be refused.
	good := tlsOf(t, tlsArgs)
	noCert := &tls.Config{RootCAs: good.RootCAs, MinVersion: tls.VersionTLS13}
	otherArgs := certs(t, filepath.Join(dir, "other"))
	other := tlsOf(t, otherArgs)
	other.RootCAs = good.RootCAs // it trusts the cluster's servers; they must not trust it
	type port struct{ what, addr, alpn string }
	var ports []port
	for _, m := range fc.g.nodes {
		ports = append(ports, port{"meta API " + m.id, m.api, "h2"}, port{"Raft " + m.id, m.raft, ""})
	}
	for _, s := range fc.c.stores {
		ports = append(ports, port{"store " + s.addr, s.addr, "http/1.1"})
	}
	for _, p := range ports {
		if why := refusedTLS(p.addr, p.alpn, good); why != "" {
			t.Errorf("%s refused the cluster's own certificate: %s", p.what, why)
		}
		if why := refusedTLS(p.addr, p.alpn, noCert); why == "" {
			t.Errorf("%s took a TLS client without a certificate", p.what)
		}
		if why := refusedTLS(p.addr, p.alpn, other); why == "" {
			t.Errorf("%s took a client certificate of another CA", p.what)
		}
		if ok, got := refusedPlain(p.addr); !ok {
			t.Errorf("%s answered a plaintext client: %q", p.what, got)
		}
	}
	// Clients as the product builds them, without TLS or with another CA's
	// certificate, get nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, opt := range []struct {
		what string
		cfg  *tls.Config
	}{{"plaintext", nil}, {"another CA", other}} {
		c, err := cluster.NewClient(fc.g.addrs(), fc.g.secret, cluster.WithTLS(opt.cfg))
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := c.StatusOf(cctx, 0); err == nil {
			t.Errorf("a %s metadata client got an answer", opt.what)
		}
		ccancel()
		c.Close()
		sc := store.NewClient(store.ClientConfig{Secret: fc.g.secret, TLS: opt.cfg})
		if _, err := sc.Capacity(ctx, fc.c.stores[0].addr); err == nil {
			t.Errorf("a %s store client got an answer", opt.what)
		}
		sc.Close()
	}
	code, _, errs := runEcfs(t, "status", "--meta", strings.Join(fc.g.addrs(), ","), "--secret-file", fc.g.secretFile, "--timeout", "2s")
	if code == 0 || !strings.Contains(errs, "if the cluster uses TLS") {
		t.Errorf("ecfs status without the certificate: exit %d: %s", code, errs)
	}
	t.Logf("ecfs status without TLS: %s", strings.TrimSpace(errs))

	// Counted where they were refused.
	for _, m := range fc.g.nodes {
		if v := counters(t, m.http, "ecfs_meta_api_refused_total")[`reason="tls"`]; v < 3 {
			t.Errorf("%s counts %v refused API handshakes, want at least 3", m.id, v)
		}
		if v := counters(t, m.http, "ecfs_meta_raft_refused_connections_total")[`reason="tls"`]; v < 3 {
			t.Errorf("%s counts %v refused Raft handshakes, want at least 3", m.id, v)
		}
	}
	for _, s := range fc.c.stores {
		if v := counters(t, s.http, "ecfs_store_tls_failures_total")[""]; v < 3 {
			t.Errorf("store %s counts %v refused handshakes, want at least 3", s.addr, v)
		}
	}
}
