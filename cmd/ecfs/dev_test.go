package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// TestDevClusterRestartsWithItsState starts the embedded cluster of `ecfs
// dev` (without the mount), stores a file through the metadata API and the
// object layer, stops it, starts it again from the same directory, and
// finds the same file, data, secret and stores.
func TestDevClusterRestartsWithItsState(t *testing.T) {
	base := runtime.NumGoroutine()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	scheme, _ := codec.ParseScheme("4+2")
	var said bytes.Buffer // what startDevCluster says
	start := func() *devCluster {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := startDevCluster(sctx, dir, scheme, log, &said)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	client := func(c *devCluster) *cluster.Client {
		t.Helper()
		mc, err := cluster.NewClient([]string{c.MetaAddr}, c.Secret)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mc.Close)
		return mc
	}
	// upStores checks the metadata service's view: scheme 4+2 and exactly the
	// cluster's stores up at their current addresses. It returns their ids.
	upStores := func(c *devCluster, mc *cluster.Client) []string {
		t.Helper()
		st, err := mc.StatusOf(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.Scheme != "4+2" || c.Scheme != "4+2" || st.State != "leader" {
			t.Fatalf("scheme %q (cluster says %q), state %q", st.Scheme, c.Scheme, st.State)
		}
		addrs := map[string]string{}
		for _, s := range c.Stores {
			addrs[s.ID] = s.Advertised
		}
		var ids []string
		for _, s := range st.Stores {
			if s.State != cluster.StoreUp || addrs[s.Id] != s.Addr {
				t.Errorf("store %s: %s at %s, want up at %q", s.Id, s.State, s.Addr, addrs[s.Id])
			}
			ids = append(ids, s.Id)
		}
		if len(ids) != devStores || len(c.Stores) != devStores {
			t.Fatalf("%d stores registered, %d running; want %d", len(ids), len(c.Stores), devStores)
		}
		slices.Sort(ids)
		return ids
	}

	c := start()
	if fi, err := os.Stat(c.SecretFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", fi, err)
	}
	for i, s := range c.Stores {
		if want := filepath.Join(dir, "store-"+string(rune('1'+i))); c.StoreDirs[i] != want || s.Server.ID() != s.ID {
			t.Fatalf("store %d in %s", i, c.StoreDirs[i])
		}
	}
	var desc bytes.Buffer
	c.describe(&desc)
	if !strings.Contains(desc.String(), selfCommand()+" status --meta "+c.MetaAddr+" --secret-file "+c.SecretFile) {
		t.Errorf("description lacks the status command:\n%s", desc.String())
	}
	mc := client(c)
	ids := upStores(c, mc)

	// A file with data: create, place, write the shards, commit.
	session, _, err := mc.OpenSession(ctx, "test", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := mc.Place(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := pl.Placements[0]
	data := bytes.Repeat([]byte("ecfs dev keeps this. "), 50_000)
	shards := store.NewClient(store.ClientConfig{Secret: c.Secret})
	t.Cleanup(shards.Close)
	objects, err := store.NewObjects(store.ObjectsConfig{Client: shards})
	if err != nil {
		t.Fatal(err)
	}
	ino := commitFile(t, ctx, mc, objects, scheme, session, "hello", p, data)

	// The directory is taken while the cluster runs.
	if _, err := startDevCluster(ctx, dir, scheme, log, io.Discard); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second cluster on the same directory: %v", err)
	}

	secret, oldAddrs := c.Secret, []string{c.MetaAddr}
	for _, s := range c.Stores {
		oldAddrs = append(oldAddrs, s.Addr)
	}
	mc.Close()
	c.Close()
	for _, a := range oldAddrs {
		if conn, err := net.Dial("tcp", a); err == nil {
			conn.Close()
			t.Errorf("%s still listens after Close", a)
		}
	}

	c = start()
	if c.Secret != secret {
		t.Fatal("the secret changed across a restart")
	}
	// The same ports (printed commands and scripts keep working).
	newAddrs := []string{c.MetaAddr}
	for _, s := range c.Stores {
		newAddrs = append(newAddrs, s.Addr)
	}
	if !slices.Equal(newAddrs, oldAddrs) {
		t.Errorf("addresses after the restart %v, before %v", newAddrs, oldAddrs)
	}
	mc = client(c)
	if got := upStores(c, mc); !slices.Equal(got, ids) {
		t.Fatalf("stores after the restart %v, before %v", got, ids)
	}
	var running []string
	for _, s := range c.Stores {
		running = append(running, s.ID)
	}
	if slices.Sort(running); !slices.Equal(running, ids) {
		t.Fatalf("running stores %v, want %v", running, ids)
	}
	lk, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "hello"}}})
	if err != nil || lk.Errno != 0 || lk.Attr.Ino != ino || lk.Attr.Size != uint64(len(data)) {
		t.Fatalf("lookup after the restart: %v %v", lk, err)
	}
	rec, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{p.Object}}}})
	if err != nil || rec.Errno != 0 || len(rec.Objects) != 1 {
		t.Fatalf("object record after the restart: %v %v", rec, err)
	}
	got := make([]byte, len(data))
	o := store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Length: int64(len(data)), Placement: rec.Objects[0].Stores}
	if n, bad, err := objects.ReadAt(ctx, o, got, 0); err != nil || n != len(data) || len(bad) != 0 || !bytes.Equal(got, data) {
		t.Fatalf("reading the data back: n %d, bad %v, err %v", n, bad, err)
	}
	mc.Close()
	shards.Close()
	c.Close()

	// A port taken meanwhile: another is chosen, and said.
	busy, err := net.Listen("tcp", c.MetaAddr)
	if err != nil {
		t.Fatal(err)
	}
	said.Reset()
	c = start()
	busy.Close()
	if c.MetaAddr == oldAddrs[0] || !strings.Contains(said.String(), "taken") {
		t.Errorf("meta API at %s with its port taken; said %q", c.MetaAddr, said.String())
	}
	c.Close()

	// Nothing is left running.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines left running, %d before:\n%s", runtime.NumGoroutine(), base, buf.String())
		}
		time.Sleep(50 * time.Millisecond) // polling, not synchronisation
	}
}

func TestDevCommandLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"help", []string{"dev", "--help"}, 0, ""},
		{"bad scheme", []string{"dev", "--ec", "4", dir}, 2, "--ec"},
		{"bad mount option", []string{"dev", "-o", "meta=x", dir}, 2, "unknown option"},
		{"mount point that cannot be made", []string{"dev", "--data-dir", dir + "/d", file + "/nope"}, 1, "mount point"},
		{"mount point is a file", []string{"dev", "--data-dir", dir + "/d", file}, 1, "not a directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.msg) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, errb.String(), tc.msg)
			}
			if tc.code == 0 && !strings.Contains(out.String(), "DIR/store-N") {
				t.Fatalf("help: %s", out.String())
			}
		})
	}
	if _, err := os.Stat(dir + "/d"); err == nil {
		t.Error("a refused command line created the data directory")
	}
}

func TestDevHelpers(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"store-2", "store-11", "store-x", "other"} {
		os.Mkdir(filepath.Join(dir, d), 0o700)
	}
	if n := existingStores(dir); n != 11 {
		t.Errorf("existingStores = %d, want 11", n)
	}
	path := filepath.Join(dir, "secret")
	s1, err := devSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := devSecret(path)
	if err != nil || s1 != s2 || len(s1) != 64 {
		t.Fatalf("secrets %q then %q, %v", s1, s2, err)
	}
	for in, want := range map[string]string{"/a/b-c.d": "/a/b-c.d", "/a b": "'/a b'", "it's": `'it'\''s'`} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	t.Setenv("XDG_DATA_HOME", "/xdg")
	if d, _ := defaultDevDataDir(); d != "/xdg/ecfs-dev" {
		t.Errorf("default data dir %s", d)
	}
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d, _ := defaultDevDataDir(); d != "/home/u/.local/share/ecfs-dev" {
		t.Errorf("default data dir %s", d)
	}
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// commitFile creates file name in the root and commits data as one object
// written to placement p under session.
func commitFile(t *testing.T, ctx context.Context, mc *cluster.Client, objects *store.Objects, scheme codec.Scheme,
	session uint64, name string, p *metapb.Placement, data []byte) (ino uint64) {
	t.Helper()
	f, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: namespace.RootIno, Name: name, Type: uint32(namespace.TypeFile), Mode: 0o644}}})
	if err != nil || f.Errno != 0 {
		t.Fatal(f, err)
	}
	if _, err := objects.Write(ctx, store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Placement: p.Addrs}, data, 0); err != nil {
		t.Fatal(err)
	}
	r, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
		Session: session, Ino: f.Attr.Ino, NewSize: uint64(len(data)),
		Writes:  []*metapb.BlockWrite{{Len: uint32(len(data)), Object: p.Object}},
		Objects: []*metapb.ObjectRecord{{Id: p.Object, Length: int64(len(data)), Stores: p.StoreIds}},
	}}})
	if err != nil || r.Errno != 0 {
		t.Fatal(r, err)
	}
	return f.Attr.Ino
}
