package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// TestCommitThenUnlinkDeletesShards: an object written where the meta
// service placed it and committed into a file is recorded with its stores;
// unlinking the file makes the leader's GC delete every shard.
func TestCommitThenUnlinkDeletesShards(t *testing.T) {
	g := newMetaGroup(t, 1, "--gc-interval", "200ms")
	c := newStoresWith(t, t.TempDir(), g.secretFile, g.secret, 6,
		"--meta", strings.Join(g.addrs(), ","), "--heartbeat", "200ms")
	mc := g.client()
	defer mc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitStoresUp(t, g, 6)
	o, _, p := committedFile(t, ctx, c, mc, "data", 3<<20)
	rec, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{p.Object}}}})
	if err != nil || len(rec.Objects) != 1 || strings.Join(rec.Objects[0].Stores, ",") != strings.Join(p.Addrs, ",") {
		t.Fatalf("object record: %v %v, want stores %v", rec, err, p.Addrs)
	}
	shardsLeft := func() int {
		n := 0
		for _, s := range c.stores {
			if _, err := c.client.Stat(ctx, s.addr, store.ShardKey{Object: o.ID, Index: indexOn(p.Addrs, s.addr)}); err == nil {
				n++
			}
		}
		return n
	}
	if n := shardsLeft(); n != 6 {
		t.Fatalf("%d shards on the stores before the unlink, want 6", n)
	}
	if st := g.status(); st.Objects.Total != 1 || st.Objects.Degraded != 0 {
		t.Fatalf("status before the unlink: objects %+v, want 1 healthy", st.Objects)
	}
	u, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "data"}}})
	if err != nil || u.Errno != 0 || len(u.FreedObjects) != 1 || u.FreedObjects[0] != p.Object {
		t.Fatalf("unlink: %v %v", u, err)
	}
	waitFor(t, "GC to delete the shards", 20*time.Second, func() error {
		if n := shardsLeft(); n != 0 {
			return fmt.Errorf("%d shards left", n)
		}
		return nil
	})
	waitFor(t, "GC to record the deletion", 10*time.Second, func() error {
		if st := g.status(); st.Objects.Total != 0 || st.GC.Pending != 0 {
			return fmt.Errorf("status: objects %+v, gc %+v", st.Objects, st.GC)
		}
		rec, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{p.Object}}}})
		if err != nil {
			return err
		}
		if len(rec.Objects) != 0 {
			return fmt.Errorf("object still recorded")
		}
		return nil
	})
}

func indexOn(addrs []string, addr string) int {
	for i, a := range addrs {
		if a == addr {
			return i
		}
	}
	return -1
}

// TestOrphanShardsDeletedAfterGrace: shards no record points at (a write
// that never committed, a shard of a recorded object on a store its record
// does not name) are deleted once older than the grace period; the shards
// of a committed file stay.
func TestOrphanShardsDeletedAfterGrace(t *testing.T) {
	g := newMetaGroup(t, 1, "--orphan-interval", "300ms", "--orphan-grace", "2s")
	c := newStoresWith(t, t.TempDir(), g.secretFile, g.secret, 7,
		"--meta", strings.Join(g.addrs(), ","), "--heartbeat", "200ms")
	mc := g.client()
	defer mc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitStoresUp(t, g, 7)
	o, data, p := committedFile(t, ctx, c, mc, "kept", 1<<20)
	// An uncommitted write: a fresh placement, shards written, no commit.
	pr, err := mc.Place(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	lost := store.Object{ID: store.ObjectID(pr.Placements[0].Object), Scheme: o.Scheme, Placement: pr.Placements[0].Addrs}
	objs := newObjects(t, c, 0)
	if _, err := objs.Write(ctx, lost, make([]byte, 100000), 0); err != nil {
		t.Fatal(err)
	}
	// A straggler: shard 0 of the committed object on a store its record
	// does not name.
	var other string
	for _, a := range c.addrs() {
		if indexOn(p.Addrs, a) < 0 {
			other = a
		}
	}
	cd, err := codec.New(o.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := cd.Encode(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.client.Put(ctx, other, store.ShardKey{Object: o.ID, Index: 0}, o.Scheme, int64(len(data)), enc.Shards[0], enc.Sums[0]); err != nil {
		t.Fatal(err)
	}
	count := func(id store.ObjectID) int {
		n := 0
		for _, a := range c.addrs() {
			for i := range 6 {
				if _, err := c.client.Stat(ctx, a, store.ShardKey{Object: id, Index: i}); err == nil {
					n++
				}
			}
		}
		return n
	}
	if n := count(lost.ID); n != 6 {
		t.Fatalf("%d shards of the uncommitted write, want 6", n)
	}
	if n := count(o.ID); n != 7 {
		t.Fatalf("%d shards of the committed object with the straggler, want 7", n)
	}
	waitFor(t, "orphan GC to delete the orphans", 30*time.Second, func() error {
		if n := count(lost.ID); n != 0 {
			return fmt.Errorf("%d shards of the uncommitted write left", n)
		}
		if _, err := c.client.Stat(ctx, other, store.ShardKey{Object: o.ID, Index: 0}); err == nil {
			return fmt.Errorf("the straggler is still there")
		}
		return nil
	})
	if n := count(o.ID); n != 6 {
		t.Fatalf("%d shards of the committed object left, want its 6", n)
	}
	got := make([]byte, len(data))
	if _, _, err := objs.ReadAt(ctx, o, got, 0); err != nil || string(got) != string(data) {
		t.Fatalf("the committed object no longer reads back: %v", err)
	}
}
