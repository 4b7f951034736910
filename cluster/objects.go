package cluster

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// object is an immutable object as the state machine keeps it: length and
// the store of each shard, as indexes into FSM.storeIDs (0: missing).
type object struct {
	length int64
	stores []uint32
	bad    uint64 // shards reported bad, until rewritten (bit i: shard i)
}

// storeIndex interns a store id, so an object costs 4 bytes per shard.
func (f *FSM) storeIndex(id string) uint32 {
	if id == "" {
		return 0
	}
	if i, ok := f.storeIdx[id]; ok {
		return i
	}
	f.storeIDs = append(f.storeIDs, id)
	i := uint32(len(f.storeIDs) - 1)
	f.storeIdx[id] = i
	return i
}

func (f *FSM) recordObjects(recs []*metapb.ObjectRecord) {
	for _, r := range recs {
		o := &object{length: r.Length, stores: make([]uint32, len(r.Stores)), bad: r.Bad}
		for i, s := range r.Stores {
			o.stores[i] = f.storeIndex(s)
		}
		if old := f.objects[r.Id]; old != nil {
			f.countShards(old, -1)
		}
		f.objects[r.Id] = o
		f.countShards(o, 1)
		f.reassess(r.Id)
	}
}

func (f *FSM) applyGCDone(op *metapb.GCDoneOp) *metapb.Result {
	done := map[uint64]bool{}
	for _, id := range op.Objects {
		done[id] = true
		if o := f.objects[id]; o != nil {
			f.countShards(o, -1)
		}
		delete(f.objects, id)
		if _, later := f.gcLater[id]; !later {
			// Set for GC is in gc or gcLater, as a restore rebuilds it:
			// one freed again (by compaction) since it was queued stays.
			delete(f.gcQueued, id)
		}
		delete(f.heal, id)
		delete(f.packs, id) // never there: a waiting pack is not queued
	}
	f.gc = slices.DeleteFunc(f.gc, func(id uint64) bool { return done[id] })
	return &metapb.Result{}
}

// objectRecord renders an object with store ids (addrs false) or addresses.
func (f *FSM) objectRecord(id uint64, o *object, addrs bool) *metapb.ObjectRecord {
	r := &metapb.ObjectRecord{Id: id, Length: o.length, Stores: make([]string, len(o.stores)), Bad: o.bad}
	for i, s := range o.stores {
		if addrs {
			// A query's answer marks every shard not to be relied on.
			if n := f.need(o, i); n == shardRewrite || n == shardRebuild {
				r.Bad |= 1 << uint(i)
			}
		}
		if s == 0 {
			continue
		}
		sid := f.storeIDs[s]
		if !addrs {
			r.Stores[i] = sid
		} else if st := f.stores[sid]; st != nil {
			r.Stores[i] = st.Addr
		}
	}
	return r
}

func (f *FSM) readObjects(q *metapb.ObjectsReq) *metapb.ReadResp {
	r := &metapb.ReadResp{}
	for _, id := range q.Ids {
		if o := f.objects[id]; o != nil {
			r.Objects = append(r.Objects, f.objectRecord(id, o, true))
		}
	}
	return r
}

func (f *FSM) encodeObjects() []*metapb.ObjectRecord {
	ids := slices.Sorted(maps.Keys(f.objects))
	out := make([]*metapb.ObjectRecord, len(ids))
	for i, id := range ids {
		out[i] = f.objectRecord(id, f.objects[id], false)
		f.packRecord(id, out[i])
	}
	return out
}

// gcBatch returns up to n objects waiting for deletion, with their shards'
// addresses.
func (f *FSM) gcBatch(n int) []*metapb.ObjectRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*metapb.ObjectRecord
	for _, id := range f.gc {
		if len(out) == n {
			break
		}
		o := f.objects[id]
		if o == nil {
			o = &object{} // never recorded (a commit without a record): nothing to delete
		}
		out = append(out, f.objectRecord(id, o, true))
	}
	slices.SortFunc(out, func(a, b *metapb.ObjectRecord) int { return cmp.Compare(a.Id, b.Id) })
	return out
}

// ObjectHealth counts the recorded objects, those with fewer than k+m
// healthy shards (degraded) and those with fewer than k (unreadable until
// stores come back), and the objects waiting for GC. Objects waiting for
// GC are not counted. It looks at the heal queue only: an object outside it
// has every shard where it belongs.
type ObjectHealth struct {
	Total, Degraded, Unreadable, GCPending int
	// HealPending counts the objects the healer can still make whole (or
	// move off draining stores) with the stores up now.
	HealPending int
	// Corrupt counts the shards known bad and not yet rebuilt.
	Corrupt int
}

// ObjectHealth summarises the objects' health from the heal queue.
func (f *FSM) ObjectHealth() ObjectHealth {
	_, st := f.healCandidates(0, nil)
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := ObjectHealth{GCPending: len(f.gc), Total: len(f.objects),
		Degraded: int(st.degraded), Unreadable: int(st.unreadable), HealPending: int(st.pending), Corrupt: int(st.corrupt)}
	for id := range f.gcQueued {
		if f.objects[id] != nil {
			h.Total--
		}
	}
	return h
}

// ShardDeleter deletes the shards of an object from the stores at addrs
// ("" entries have none). Shards already gone are not an error. The wiring
// in cmd/ecfs connects it to the object layer.
type ShardDeleter interface {
	DeleteShards(ctx context.Context, object uint64, addrs []string) error
}

// RunGC deletes the shards of objects nothing references any more, while
// this member leads, and records each deletion in the log. An object whose
// stores cannot be reached stays queued and is tried again.
func (s *Server) RunGC(ctx context.Context, d ShardDeleter, every time.Duration) {
	if every <= 0 {
		every = 2 * time.Second
	}
	s.whileLeader(ctx, every, func() {
		var done []uint64
		for _, o := range s.fsm.gcBatch(256) {
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := d.DeleteShards(dctx, o.Id, o.Stores)
			cancel()
			if err != nil {
				s.limited.warn("GC could not delete an object's shards; will retry", "object", o.Id, "err", err)
				continue
			}
			done = append(done, o.Id)
		}
		if len(done) == 0 {
			return
		}
		if _, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_GcDone{GcDone: &metapb.GCDoneOp{Objects: done}}}); err != nil {
			s.log.Warn("GC could not record deletions; will redo them", "err", err)
		}
	})
}

// ShardStore lists a store's shards and deletes one: what the orphan GC
// needs of the stores (cmd/ecfs wires it to the store client).
type ShardStore interface {
	// ListShards calls fn for every shard on the store at addr.
	ListShards(ctx context.Context, addr string, fn func(object uint64, index int, mtime time.Time)) error
	DeleteShard(ctx context.Context, addr string, object uint64, index int) error
}

// shardOrphan reports whether no object record places shard index of
// object on store storeID: a shard of a write whose commit never came
// (the writer died, or gave up), a straggler that landed after its write
// was recorded without it, or one left by a deletion that failed halfway.
func (f *FSM) shardOrphan(object uint64, index int, storeID string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	o := f.objects[object]
	if o == nil {
		return true
	}
	if index < 0 || index >= len(o.stores) || o.stores[index] == 0 {
		return true
	}
	return f.storeIDs[o.stores[index]] != storeID
}

// RunOrphanGC, while this member leads, lists every up or draining store's shards each
// interval and deletes those no record points at once they are older than
// grace. The grace period must be longer than a write can take from its
// first shard to its commit (a mount retries a commit for its
// --meta-timeout), or a shard about to be committed would be lost.
func (s *Server) RunOrphanGC(ctx context.Context, st ShardStore, every, grace time.Duration) {
	if every <= 0 || grace <= 0 {
		return
	}
	s.whileLeader(ctx, every, func() {
		// Everything committed before this point is applied: a member that
		// just became leader may still be applying its log.
		if err := s.node.Raft().Barrier(time.Minute).Error(); err != nil {
			return
		}
		for _, info := range s.fsm.Stores() {
			if info.State != StoreUp && info.State != StoreDraining {
				continue // a draining store is emptied of orphans too
			}
			var orphans [][2]uint64
			lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			err := st.ListShards(lctx, info.Addr, func(object uint64, index int, mtime time.Time) {
				if time.Since(mtime) > grace && s.fsm.shardOrphan(object, index, info.Id) {
					orphans = append(orphans, [2]uint64{object, uint64(index)})
				}
			})
			cancel()
			if err != nil {
				s.limited.warn("orphan GC could not list a store's shards", "store", info.Id, "addr", info.Addr, "err", err)
				continue
			}
			for _, o := range orphans {
				// Check again: a commit may have claimed it since the listing.
				if !s.fsm.shardOrphan(o[0], int(o[1]), info.Id) {
					continue
				}
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := st.DeleteShard(dctx, info.Addr, o[0], int(o[1]))
				cancel()
				if err != nil {
					s.limited.warn("orphan GC could not delete a shard", "store", info.Id, "object", o[0], "shard", o[1], "err", err)
					continue
				}
				s.log.Info("deleted an orphan shard", "store", info.Id, "object", o[0], "shard", o[1])
			}
		}
	})
}
