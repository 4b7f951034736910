package integration

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// TestStoresRegisterAndPlacementFollowsHealth: 6 stores register with a
// meta group; placement spreads an object over 6 distinct up stores; a
// killed store turns suspect then down and gets no new shards; below the
// write quorum placement refuses.
func TestStoresRegisterAndPlacementFollowsHealth(t *testing.T) {
	g := newMetaGroup(t, 1, "--suspect-after", "1s", "--down-after", "3s")
	c := newStoresWith(t, t.TempDir(), g.secretFile, g.secret, 6,
		"--meta", strings.Join(g.addrs(), ","), "--heartbeat", "200ms")
	mc := g.client()
	defer mc.Close()
	storeState := func() map[string]string {
		out := map[string]string{}
		for _, s := range g.status().Stores {
			out[s.Addr] = s.State
		}
		return out
	}
	waitFor(t, "6 stores up", 20*time.Second, func() error {
		st := storeState()
		for _, s := range c.stores {
			if st[s.addr] != "up" {
				return fmt.Errorf("store %s is %q", s.addr, st[s.addr])
			}
		}
		return nil
	})
	objs := newObjects(t, c, 300*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pl, err := mc.Place(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := codec.ParseScheme(pl.Scheme)
	if err != nil || scheme.Shards() != 6 {
		t.Fatalf("scheme %q: %v", pl.Scheme, err)
	}
	first := map[string]int{}
	for _, p := range pl.Placements {
		seen := map[string]bool{}
		for _, a := range p.Addrs {
			if a == "" || seen[a] {
				t.Fatalf("object %d placed on %v: want 6 distinct stores", p.Object, p.Addrs)
			}
			seen[a] = true
		}
		first[p.Addrs[0]]++
		// The placement is usable as it is: write and read the object.
		data := objData(store.ObjectID(p.Object), 1<<20)
		o := store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Length: int64(len(data)), Placement: p.Addrs}
		if _, err := objs.Write(ctx, o, data, 0); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(data))
		if _, _, err := objs.ReadAt(ctx, o, buf, 0); err != nil || !bytes.Equal(buf, data) {
			t.Fatalf("read back object %d: %v", p.Object, err)
		}
	}
	if len(first) < 3 {
		t.Errorf("the first shard of 20 objects went to only %d stores: placement does not spread", len(first))
	}

	dead := c.stores[0].addr
	c.stores[0].p.kill()
	waitFor(t, "the killed store to be down", 15*time.Second, func() error {
		if s := storeState()[dead]; s != "down" {
			return fmt.Errorf("killed store is %q", s)
		}
		return nil
	})
	pl, err = mc.Place(ctx, 10)
	if err != nil {
		t.Fatalf("placement with 5 of 6 stores up: %v", err)
	}
	for _, p := range pl.Placements {
		unplaced := 0
		for _, a := range p.Addrs {
			if a == dead {
				t.Fatalf("object %d placed on the down store", p.Object)
			}
			if a == "" {
				unplaced++
			}
		}
		if unplaced != 1 {
			t.Fatalf("object %d: %d unplaced shards with 5 of 6 stores up, want 1", p.Object, unplaced)
		}
	}
	c.stores[1].p.kill()
	waitFor(t, "placement to refuse below the write quorum", 15*time.Second, func() error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := mc.Place(pctx, 1)
		if err == nil {
			return fmt.Errorf("placement still succeeds with 4 of 6 stores up")
		}
		if !strings.Contains(err.Error(), "too few stores up") {
			return fmt.Errorf("unexpected error: %v", err)
		}
		return nil
	})
}

// TestStoreWithWrongSecretForMetaExits: a store whose secret the metadata
// service refuses exits 1 with one clear line instead of serving unseen.
func TestStoreWithWrongSecretForMetaExits(t *testing.T) {
	g := newMetaGroup(t, 1)
	dir := t.TempDir()
	other, _ := writeSecret(t, dir)
	p := startProc(t, "store", "--data-dir", dir+"/s", "--addr", freeAddr(t, "127.0.0.31"), "--http-addr", "",
		"--secret-file", other, "--meta", strings.Join(g.addrs(), ","), "--log-level", "error")
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the store kept running with a secret the metadata service refuses")
	}
	if p.err == nil || !strings.Contains(p.logs.String(), "refused this store's cluster secret") {
		t.Fatalf("exit %v, output %q", p.err, p.logs.String())
	}
	if n := strings.Count(strings.TrimSpace(p.logs.String()), "\n"); n != 0 {
		t.Fatalf("want one line, got %d: %q", n+1, p.logs.String())
	}
}

// TestMetaJoinWithWrongSecretExits: a member that cannot join because the
// group refuses its secret exits 1 with one clear line.
func TestMetaJoinWithWrongSecretExits(t *testing.T) {
	g := newMetaGroup(t, 1)
	dir := t.TempDir()
	other, _ := writeSecret(t, dir)
	code, _, stderr := runEcfs(t, "meta", "--id", "x", "--data-dir", dir+"/m", "--raft-addr", freeAddr(t, "127.0.0.32"),
		"--api-addr", freeAddr(t, "127.0.0.32"), "--secret-file", other, "--join", g.addrs()[0], "--join-timeout", "10s", "--log-level", "error")
	if code != 1 || !strings.Contains(stderr, "wrong cluster secret") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
