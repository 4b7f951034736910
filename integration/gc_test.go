package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
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
