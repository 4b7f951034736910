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
	waitFor(t, "6 stores up", 20*time.Second, func() error {
		if n := len(g.status().Stores); n != 6 {
			return fmt.Errorf("%d stores registered", n)
		}
		return nil
	})
	session, _, err := mc.OpenSession(ctx, "test", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: namespace.RootIno, Name: "data", Type: uint32(namespace.TypeFile), Mode: 0o644}}})
	if err != nil || f.Errno != 0 {
		t.Fatal(err, f)
	}
	pl, err := mc.Place(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := pl.Placements[0]
	scheme, _ := codec.ParseScheme(pl.Scheme)
	data := objData(store.ObjectID(p.Object), 3<<20)
	o := store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Length: int64(len(data)), Placement: p.Addrs}
	if _, err := newObjects(t, c, 0).Write(ctx, o, data, 0); err != nil {
		t.Fatal(err)
	}
	r, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
		Session: session, Ino: f.Attr.Ino, NewSize: uint64(len(data)),
		Writes:  []*metapb.BlockWrite{{Block: 0, Off: 0, Len: uint32(len(data)), Object: p.Object}},
		Objects: []*metapb.ObjectRecord{{Id: p.Object, Length: int64(len(data)), Stores: p.StoreIds}},
	}}})
	if err != nil || r.Errno != 0 || r.Attr.Size != uint64(len(data)) {
		t.Fatalf("commit: %v %v", r, err)
	}
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
