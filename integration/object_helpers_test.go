package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// waitStoresUp polls ecfs status until n stores are up.
func waitStoresUp(t testing.TB, g *metaGroup, n int) {
	t.Helper()
	waitFor(t, fmt.Sprint(n, " stores up"), 20*time.Second, func() error {
		up := 0
		for _, s := range g.status().Stores {
			if s.State == "up" {
				up++
			}
		}
		if up != n {
			return fmt.Errorf("%d stores up", up)
		}
		return nil
	})
}

// committedFile writes size bytes as one object where the meta service
// places it and commits it as the content of a new file /name, the way a
// mount does: session, create, place, write the shards, commit with the
// object's record.
func committedFile(t *testing.T, ctx context.Context, c *testCluster, mc *cluster.Client, name string, size int) (store.Object, []byte, *metapb.Placement) {
	t.Helper()
	session, _, err := mc.OpenSession(ctx, "test", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: namespace.RootIno, Name: name, Type: uint32(namespace.TypeFile), Mode: 0o644}}})
	if err != nil || f.Errno != 0 {
		t.Fatal(err, f)
	}
	pl, err := mc.Place(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := pl.Placements[0]
	scheme, err := codec.ParseScheme(pl.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	data := objData(store.ObjectID(p.Object), size)
	o := store.Object{ID: store.ObjectID(p.Object), Scheme: scheme, Length: int64(len(data)), Placement: p.Addrs}
	if _, err := newObjects(t, c, 0).Write(ctx, o, data, 0); err != nil {
		t.Fatal(err)
	}
	r, err := mc.Apply(ctx, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
		Session: session, Ino: f.Attr.Ino, NewSize: uint64(len(data)),
		Writes:  []*metapb.BlockWrite{{Len: uint32(len(data)), Object: p.Object}},
		Objects: []*metapb.ObjectRecord{{Id: p.Object, Length: int64(len(data)), Stores: p.StoreIds}},
	}}})
	if err != nil || r.Errno != 0 || r.Attr.Size != uint64(len(data)) {
		t.Fatalf("commit: %v %v", r, err)
	}
	return o, data, p
}
