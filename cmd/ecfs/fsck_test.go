package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

func TestFsckCommandLine(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"fsck", "--help"}, 0, "young_orphans", ""},
		{"no meta", []string{"fsck", "--secret-file", secret}, 2, "", "--meta is required"},
		{"no secret", []string{"fsck", "--meta", "127.0.0.1:1"}, 2, "", "--secret-file is required"},
		{"bad timeout", []string{"fsck", "--meta", "127.0.0.1:1", "--secret-file", secret, "--timeout", "0s"}, 2, "", "--timeout must be positive"},
		{"extra", []string{"fsck", "x"}, 2, "", "unexpected argument"},
		{"unreachable", []string{"fsck", "--meta", "127.0.0.1:1", "--secret-file", secret, "--timeout", "1s"}, 2, "", "no answer within --timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d (want %d), stdout %q (want %q), stderr %q (want %q)", code, tc.code, out.String(), tc.stdout, errb.String(), tc.stderr)
			}
		})
	}
}

func TestFsckPrint(t *testing.T) {
	var out bytes.Buffer
	printFsck(&out, newFsckReport(&metapb.FsckResp{
		Objects: 5, Files: 4, ShardsListed: 30, YoungOrphans: 1, Repaired: 1,
		Counts: map[string]uint64{cluster.FsckMissing: 1, cluster.FsckDangling: 2},
		Problems: []*metapb.FsckProblem{
			{Kind: cluster.FsckMissing, Object: 0x1f, Index: 2, Store: "s1", Detail: "recorded on this store, not there; reported bad", Repaired: true},
			{Kind: cluster.FsckDangling, Object: 9, Index: -1, Ino: 12, Detail: "lost"},
		},
		Skipped: []string{"s7 (h:1): down"},
	}))
	want := `checked 5 objects, 4 files, 30 shards on the stores; 1 young orphan shards (within the orphan grace)
  missing      1
  length       0
  rotten       0
  orphan       0
  dangling     2
  unreferenced 0
problems (2 of 3):
  missing      000000000000001f shard=2 store=s1 ino=- repaired: recorded on this store, not there; reported bad
  dangling     0000000000000009 shard=- store=- ino=12: lost
stores not checked:
  s7 (h:1): down
3 problem(s) found, 1 repaired
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestFsckDevCluster runs ecfs fsck against the embedded cluster of ecfs
// dev: clean, then with a shard deleted and one cut short, repaired, and
// clean again once the healer rewrote them.
func TestFsckDevCluster(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scheme, _ := codec.ParseScheme("4+2")
	c, err := startDevCluster(ctx, dir, scheme, log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	mc, err := cluster.NewClient([]string{c.MetaAddr}, c.Secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mc.Close)
	shards := store.NewClient(store.ClientConfig{Secret: c.Secret})
	t.Cleanup(shards.Close)
	objects, err := store.NewObjects(store.ObjectsConfig{Client: shards})
	if err != nil {
		t.Fatal(err)
	}

	// One file of one object.
	session, _, err := mc.OpenSession(ctx, "test", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := mc.Place(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	p := pl.Placements[0]
	data := bytes.Repeat([]byte("fsck checks this. "), 60_000)
	commitFile(t, ctx, mc, objects, scheme, session, "f", p, data)
	// A write in flight: shards of the second object, not committed.
	o2 := store.Object{ID: store.ObjectID(pl.Placements[1].Object), Scheme: scheme, Placement: pl.Placements[1].Addrs}
	if _, err := objects.Write(ctx, o2, data[:1000], 0); err != nil {
		t.Fatal(err)
	}

	fsck := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append([]string{"fsck", "--meta", c.MetaAddr, "--secret-file", c.SecretFile, "--timeout", "30s"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	fsckJSON := func(args ...string) (int, fsckReport) {
		t.Helper()
		code, out, errb := fsck(append(args, "--json")...)
		var rep fsckReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("exit %d, output %q, stderr %q: %v", code, out, errb, err)
		}
		return code, rep
	}

	code, out, errb := fsck()
	if code != 0 || !strings.Contains(out, "checked 1 objects, 1 files, 12 shards on the stores; 6 young orphan shards") ||
		!strings.HasSuffix(out, "no problems found\n") || errb != "" {
		t.Fatalf("clean: exit %d, stdout:\n%s\nstderr: %s", code, out, errb)
	}

	// Shard 0 deleted, shard 1 cut short.
	k0 := store.ShardKey{Object: store.ObjectID(p.Object), Index: 0}
	if err := shards.Delete(ctx, p.Addrs[0], k0); err != nil {
		t.Fatal(err)
	}
	k1 := store.ShardKey{Object: store.ObjectID(p.Object), Index: 1}
	var path string
	for i, s := range c.Stores {
		if s.ID == p.StoreIds[1] {
			path = filepath.Join(c.StoreDirs[i], "disk", k1.RelPath())
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	code, rep := fsckJSON()
	if code != 1 || rep.Counts["missing"] != 1 || rep.Counts["length"] != 1 || rep.Repaired != 0 || len(rep.Problems) != 2 ||
		rep.Objects != 1 || rep.Files != 1 || rep.YoungOrphans != 6 || len(rep.Skipped) != 0 {
		t.Fatalf("exit %d: %+v", code, rep)
	}
	for _, pr := range rep.Problems {
		if pr.Object != k0.Object.String() || pr.Repaired || (pr.Kind == "missing") != (pr.Index == 0 && pr.Store == p.StoreIds[0]) {
			t.Errorf("problem %+v", pr)
		}
	}

	code, out, errb = fsck("--repair")
	if code != 1 || !strings.Contains(out, "2 problem(s) found, 2 repaired") || strings.Count(out, " repaired: ") != 2 ||
		!strings.Contains(errb, "2 problem(s) found, 2 repaired") {
		t.Fatalf("repair: exit %d, stdout:\n%s\nstderr: %s", code, out, errb)
	}
	// Both are the healer's now (marked bad): not fsck's problems.
	if code, rep = fsckJSON(); code != 0 {
		t.Fatalf("after the repair: exit %d, %+v", code, rep)
	}
	// The healer rewrites them.
	deadline := time.Now().Add(time.Minute)
	for {
		rec, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{p.Object}}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Objects) == 1 && rec.Objects[0].Bad == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the repair: %v", rec.Objects)
		}
		time.Sleep(100 * time.Millisecond) // polling the healer's progress
	}
	if code, rep = fsckJSON(); code != 0 {
		t.Fatalf("after healing: exit %d, %+v", code, rep)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != fsckShardSize(t, scheme, int64(len(data))) {
		t.Fatalf("shard 1 after healing: %v, %v", fi, err)
	}
}

// fsckShardSize is the size on disk of a shard of an object of n bytes, as
// the wiring computes it.
func fsckShardSize(t *testing.T, sc codec.Scheme, n int64) int64 {
	t.Helper()
	v, err := fsckStores{}.ShardFileSize(sc.String(), n)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
