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
		o := &object{length: r.Length, stores: make([]uint32, len(r.Stores))}
		for i, s := range r.Stores {
			o.stores[i] = f.storeIndex(s)
		}
		f.objects[r.Id] = o
	}
}

func (f *FSM) applyGCDone(op *metapb.GCDoneOp) *metapb.Result {
	done := map[uint64]bool{}
	for _, id := range op.Objects {
		done[id] = true
		delete(f.objects, id)
	}
	f.gc = slices.DeleteFunc(f.gc, func(id uint64) bool { return done[id] })
	return &metapb.Result{}
}

// objectRecord renders an object with store ids (addrs false) or addresses.
func (f *FSM) objectRecord(id uint64, o *object, addrs bool) *metapb.ObjectRecord {
	r := &metapb.ObjectRecord{Id: id, Length: o.length, Stores: make([]string, len(o.stores))}
	for i, s := range o.stores {
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
// shards on up stores (degraded: the healer's work) and those with fewer
// than k (unreadable until stores come back), and the objects waiting for
// GC. Objects waiting for GC are not counted as degraded.
type ObjectHealth struct {
	Total, Degraded, Unreadable, GCPending int
	// HealPending counts objects with fewer healthy shards than k+m or
	// the number of up stores, whichever is less: what the healer can
	// still fix.
	HealPending int
}

// ObjectHealth scans every object record.
func (f *FSM) ObjectHealth() ObjectHealth {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := ObjectHealth{GCPending: len(f.gc)}
	if f.scheme == nil {
		return h
	}
	up := make([]bool, len(f.storeIDs))
	nup := 0
	for i, id := range f.storeIDs {
		if st := f.stores[id]; st != nil && (st.State == StoreUp || st.State == StoreSuspect) {
			up[i] = true
		}
	}
	for _, st := range f.stores {
		if st.State == StoreUp {
			nup++
		}
	}
	queued := make(map[uint64]bool, len(f.gc))
	for _, id := range f.gc {
		queued[id] = true
	}
	k, n := int(f.scheme.K), int(f.scheme.K+f.scheme.M)
	for id, o := range f.objects {
		if queued[id] {
			continue
		}
		h.Total++
		good := 0
		for _, s := range o.stores {
			if s != 0 && up[s] {
				good++
			}
		}
		if good < n {
			h.Degraded++
		}
		if good < min(n, nup) {
			h.HealPending++
		}
		if good < k {
			h.Unreadable++
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
				s.log.Warn("GC could not delete an object's shards; will retry", "object", o.Id, "err", err)
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
