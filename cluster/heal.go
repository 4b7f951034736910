package cluster

import (
	"context"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// ShardRebuilder recreates shards of an object on new stores. from holds
// the address of every shard's current store ("" where none is usable), to
// the new store for each index in shards. The wiring in cmd/ecfs connects
// it to the object layer.
type ShardRebuilder interface {
	RebuildShards(ctx context.Context, scheme string, object uint64, length int64, from []string, shards []int, to []string) []error
}

// applyRelocate records a rebuilt or moved shard: shard index of the object
// is now on op.Store (which may be the store it was on: rewritten in place)
// and is good.
func (f *FSM) applyRelocate(op *metapb.RelocateOp) *metapb.Result {
	o := f.objects[op.Object]
	if o == nil || int(op.Index) >= len(o.stores) || op.Store == "" {
		return errnoResult(syscall.ENOENT)
	}
	if f.storeIDs[o.stores[op.Index]] != op.From {
		return errnoResult(syscall.ESTALE) // someone moved it meanwhile
	}
	f.countShards(o, -1)
	o.stores[op.Index] = f.storeIndex(op.Store)
	o.bad &^= 1 << op.Index
	f.countShards(o, 1)
	f.reassess(op.Object)
	return &metapb.Result{}
}
