package store

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecfs/ecfs/codec"
	"github.com/prometheus/client_golang/prometheus"
)

// testSecret is the cluster secret of every test store.
const testSecret = "0123456789abcdef0123456789abcdef"

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testStore is an in-process shard server behind an httptest server.
type testStore struct {
	srv  *Server
	ts   *httptest.Server
	addr string // host:port of ts
	cfg  Config // as given to NewServer (defaults not filled in)
	reg  *prometheus.Registry
}

// diskDir is the only disk of a store created with the default layout.
func (s *testStore) diskDir() string {
	if len(s.cfg.Disks) > 0 {
		return s.cfg.Disks[0]
	}
	return filepath.Join(s.cfg.DataDir, "disk")
}

func (s *testStore) tmpDir() string { return filepath.Join(s.diskDir(), tmpDir) }

type storeOpt func(*Config)

func withMaxShard(n int64) storeOpt  { return func(c *Config) { c.MaxShardSize = n } }
func withReserve(n int64) storeOpt   { return func(c *Config) { c.Reserve = n } }
func withDisks(d ...string) storeOpt { return func(c *Config) { c.Disks = d } }

// testConfig is the configuration of a test store in a fresh directory.
func testConfig(t testing.TB, opts ...storeOpt) Config {
	t.Helper()
	cfg := Config{
		DataDir: t.TempDir(),
		Secret:  testSecret,
		Logger:  discardLogger(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// newTestStore starts a store served over HTTP; wrap, if not nil, wraps its
// handler. Both are shut down when the test ends.
func newTestStoreWrapped(t testing.TB, wrap func(http.Handler) http.Handler, opts ...storeOpt) *testStore {
	t.Helper()
	cfg := testConfig(t, opts...)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	st := serveStore(t, srv, wrap)
	st.cfg, st.reg = cfg, reg
	return st
}

// serveStore serves srv over HTTP until the test ends.
func serveStore(t testing.TB, srv *Server, wrap func(http.Handler) http.Handler) *testStore {
	t.Helper()
	var h http.Handler = srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{srv: srv, ts: ts, addr: u.Host, cfg: srv.cfg}
}

func newTestStore(t testing.TB, opts ...storeOpt) *testStore {
	t.Helper()
	return newTestStoreWrapped(t, nil, opts...)
}

// newTestClient returns a client with the test secret.
func newTestClient(t testing.TB) *Client {
	t.Helper()
	return newClientWithSecret(t, testSecret)
}

func newClientWithSecret(t testing.TB, secret string) *Client {
	t.Helper()
	c := NewClient(ClientConfig{Secret: secret})
	t.Cleanup(c.Close)
	return c
}

// testCtx is a context that ends with the test, bounded so that a hang
// fails instead of blocking the whole run.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustScheme(t testing.TB, s string) codec.Scheme {
	t.Helper()
	sc, err := codec.ParseScheme(s)
	if err != nil {
		t.Fatalf("ParseScheme(%q): %v", s, err)
	}
	return sc
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// testShard returns random shard data for an object of length olen under
// scheme sc, and its chunk checksums.
func testShard(rng *rand.Rand, sc codec.Scheme, olen int64) ([]byte, []uint32) {
	data := randBytes(rng, int(sc.ShardSize(olen)))
	return data, codec.Checksums(data)
}

// putShard stores random data as shard k and returns the data.
func putShard(t testing.TB, c *Client, addr string, k ShardKey, sc codec.Scheme, olen int64, rng *rand.Rand) []byte {
	t.Helper()
	data, sums := testShard(rng, sc, olen)
	if err := c.Put(testCtx(t), addr, k, sc, olen, data, sums); err != nil {
		t.Fatalf("Put %s: %v", k, err)
	}
	return data
}

// shardFilePath finds the file of shard k on the store's disk.
func shardFilePath(t testing.TB, s *testStore, k ShardKey) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.diskDir(), shardsDir, "*", "*", k.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 {
		t.Fatalf("shard %s: %d files found: %v", k, len(m), m)
	}
	return m[0]
}

// fileHeader reads the header of a shard file.
func fileHeader(t testing.TB, path string) *ShardHeader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := ReadShardHeader(f, 1<<30)
	if err != nil {
		t.Fatalf("ReadShardHeader(%s): %v", path, err)
	}
	return h
}

// flipByte inverts the bits of the byte at off in the file.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatalf("read %s at %d: %v", path, off, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// corruptShardData flips the byte at offset off of shard k's data.
func corruptShardData(t testing.TB, s *testStore, k ShardKey, off int64) {
	t.Helper()
	p := shardFilePath(t, s, k)
	flipByte(t, p, fileHeader(t, p).DataOffset()+off)
}

// dirEntries lists the names in dir.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func assertTmpEmpty(t testing.TB, s *testStore) {
	t.Helper()
	if names := dirEntries(t, s.tmpDir()); len(names) != 0 {
		t.Errorf("tmp dir %s holds %v, want nothing", s.tmpDir(), names)
	}
}

// listAll pages through every shard of a store.
func listAll(t testing.TB, c *Client, addr string, limit int) []string {
	t.Helper()
	var keys []string
	after := ""
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatal("listing does not end")
		}
		res, err := c.List(testCtx(t), addr, after, limit)
		if err != nil {
			t.Fatalf("List(after %q): %v", after, err)
		}
		if limit > 0 && len(res.Shards) > limit {
			t.Fatalf("List(limit %d) gave %d shards", limit, len(res.Shards))
		}
		for _, s := range res.Shards {
			keys = append(keys, s.Key)
		}
		if res.Next == "" {
			return keys
		}
		after = res.Next
	}
}

// rawRequest sends a request to the store with the given headers (an
// Authorization is added unless auth is empty) and returns the status, the
// headers and the body.
func rawRequest(t testing.TB, s *testStore, method, path, auth string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testCtx(t), method, s.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// Expect: 100-continue so that a request refused before its body is
	// read never has the body written to a closing connection.
	tr := &http.Transport{ExpectContinueTimeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	if len(body) > 0 {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// gatherCounter returns the value of a counter without labels (or the sum
// over its label sets) from a registry.
func gatherCounter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		v := 0.0
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue()
		}
		return v
	}
	return 0
}
