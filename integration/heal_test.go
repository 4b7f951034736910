package integration

import (
	"bytes"
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

// TestHealerRebuildsShardsOfADownStore: 7 stores, an object on 6 of them;
// the store of one shard dies and turns down; the leader rebuilds that shard
// on the spare store and records it; with 2 more original stores killed,
// the object still reads back exactly, which needs the rebuilt shard.
func TestHealerRebuildsShardsOfADownStore(t *testing.T) {
	g := newMetaGroup(t, 1, "--suspect-after", "500ms", "--down-after", "1500ms", "--heal-interval", "200ms")
	c := newStoresWith(t, t.TempDir(), g.secretFile, g.secret, 7,
		"--meta", strings.Join(g.addrs(), ","), "--heartbeat", "200ms")
	mc := g.client()
	defer mc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitFor(t, "7 stores up", 20*time.Second, func() error {
		up := 0
		for _, s := range g.status().Stores {
			if s.State == "up" {
				up++
			}
		}
		if up != 7 {
			return fmt.Errorf("%d stores up", up)
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
	data := objData(store.ObjectID(p.Object), 4<<20)
	objs := newObjects(t, c, 0)
	if _, err := objs.Write(ctx, store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Placement: p.Addrs}, data, 0); err != nil {
		t.Fatal(err)
	}
	if r, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
		Session: session, Ino: f.Attr.Ino, NewSize: uint64(len(data)),
		Writes:  []*metapb.BlockWrite{{Len: uint32(len(data)), Object: p.Object}},
		Objects: []*metapb.ObjectRecord{{Id: p.Object, Length: int64(len(data)), Stores: p.StoreIds}},
	}}}); err != nil || r.Errno != 0 {
		t.Fatal(err, r)
	}
	byAddr := map[string]*storeNode{}
	for _, s := range c.stores {
		byAddr[s.addr] = s
	}
	dead := p.Addrs[1]
	byAddr[dead].p.kill()
	var placement []string
	waitFor(t, "the healer to move the shard off the dead store", 30*time.Second, func() error {
		rec, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: []uint64{p.Object}}}})
		if err != nil || len(rec.Objects) != 1 {
			return fmt.Errorf("record: %v %v", rec, err)
		}
		placement = rec.Objects[0].Stores
		if placement[1] == dead || placement[1] == "" {
			return fmt.Errorf("shard 1 still on %q", placement[1])
		}
		if st := g.status(); st.Objects.Degraded != 0 {
			return fmt.Errorf("status: %+v", st.Objects)
		}
		return nil
	})
	t.Logf("shard 1 moved from %s to %s", dead, placement[1])
	// Leave exactly k shards: the rebuilt one and 3 originals.
	byAddr[placement[2]].p.kill()
	byAddr[placement[3]].p.kill()
	buf := make([]byte, len(data))
	o := store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Length: int64(len(data)), Placement: placement}
	if _, _, err := objs.ReadAt(ctx, o, buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("read with the rebuilt shard and 3 others: %v", err)
	}
}
