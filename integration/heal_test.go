package integration

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
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
	waitStoresUp(t, g, 7)
	o, data, p := committedFile(t, ctx, c, mc, "data", 4<<20)
	objs := newObjects(t, c, 0)
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
	o.Placement = placement
	if _, _, err := objs.ReadAt(ctx, o, buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("read with the rebuilt shard and 3 others: %v", err)
	}
}
