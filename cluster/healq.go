package cluster

import (
	"cmp"
	"math/bits"
	"slices"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// The heal queue is the set of objects that may need the healer: an object
// is in it while one of its shards is unplaced, known bad (reported rotten
// or missing), or on a store that is down, draining or gone. It is derived
// state, kept by every member as it applies the log (so a new leader has
// it at once) and rebuilt from the objects on restore; it is not in the
// snapshot. Only the events that can change an object's need touch it: a
// commit recording the object, a report, a relocation, GC, and a store
// changing state (which looks at that store's objects: a scan, but once
// per state change, not per round).

// shardNeed is what one shard of an object needs.
type shardNeed uint8

const (
	shardOK      shardNeed = iota // healthy, where it belongs
	shardMove                     // healthy, on a draining store: copy it elsewhere
	shardRewrite                  // bad, on a store that is up: rebuild it there (or elsewhere)
	shardRebuild                  // unplaced, or its store is down or gone: rebuild elsewhere
	shardWait                     // on a suspect store: neither counted lost nor touched
)

// need classifies shard i of o. Callers hold f.mu.
func (f *FSM) need(o *object, i int) shardNeed {
	s := o.stores[i]
	if s == 0 {
		return shardRebuild
	}
	st := f.stores[f.storeIDs[s]]
	if st == nil || st.State == StoreDown {
		return shardRebuild
	}
	if o.bad&(1<<uint(i)) != 0 {
		return shardRewrite
	}
	switch st.State {
	case StoreDraining:
		return shardMove
	case StoreSuspect:
		return shardWait
	}
	return shardOK
}

// needsWork reports whether any shard of o needs the healer.
func (f *FSM) needsWork(o *object) bool {
	for i := range o.stores {
		if n := f.need(o, i); n != shardOK && n != shardWait {
			return true
		}
	}
	return false
}

// reassess puts object id in the heal queue or takes it out.
func (f *FSM) reassess(id uint64) {
	o := f.objects[id]
	if o == nil || f.gcQueued[id] || !f.needsWork(o) {
		delete(f.heal, id)
		return
	}
	f.heal[id] = struct{}{}
}

// reassessStore reassesses every object with a shard on store index s
// (after the store changed state).
func (f *FSM) reassessStore(s uint32) {
	for id, o := range f.objects {
		if slices.Contains(o.stores, s) {
			f.reassess(id)
		}
	}
}

// countShards adds d to the shard counts of o's stores.
func (f *FSM) countShards(o *object, d int64) {
	for _, s := range o.stores {
		if s != 0 {
			for int(s) >= len(f.onStore) {
				f.onStore = append(f.onStore, 0)
			}
			f.onStore[s] += d
		}
	}
}

// queueGC adds objects nothing references any more to the GC queue, but
// for packed objects with commits still to come: those are queued, if still
// unreferenced, when the last comes or their session ends (pack.go).
func (f *FSM) queueGC(ids []uint64) {
	for _, id := range ids {
		if _, waiting := f.packs[id]; waiting {
			continue
		}
		if !f.gcQueued[id] {
			f.gcQueued[id] = true
			f.gc = append(f.gc, id)
		}
		delete(f.heal, id)
	}
}

// rebuildDerived recomputes the heal queue, the GC set and the shard counts
// from the objects (after a restore).
func (f *FSM) rebuildDerived() {
	f.heal, f.gcQueued, f.onStore = map[uint64]struct{}{}, map[uint64]bool{}, nil
	for _, id := range f.gc {
		f.gcQueued[id] = true
	}
	for id := range f.gcLater {
		f.gcQueued[id] = true
	}
	f.frag = map[fragKey]int64{}
	f.ns.EachFragmented(CompactMinSlices, func(ino namespace.Ino, block uint64) {
		f.frag[fragKey{uint64(ino), block}] = 0
	})
	for id, o := range f.objects {
		f.countShards(o, 1)
		f.reassess(id)
	}
}

// markBad records shard index of object as bad if it is still on the store
// named by store (id or address): a report about a shard moved or rebuilt
// since is stale and ignored. It returns whether it changed anything.
func (f *FSM) markBad(object uint64, index uint32, store string) bool {
	o := f.objects[object]
	if o == nil || int(index) >= len(o.stores) || index >= 64 || o.stores[index] == 0 {
		return false
	}
	id := f.storeIDs[o.stores[index]]
	if st := f.stores[id]; id != store && (st == nil || st.Addr != store) {
		return false
	}
	if o.bad&(1<<index) != 0 {
		return false
	}
	o.bad |= 1 << index
	f.reassess(object)
	return true
}

func (f *FSM) applyReport(op *metapb.ReportOp) *metapb.Result {
	for _, b := range op.Shards {
		f.markBad(b.Object, b.Index, b.Store)
	}
	return &metapb.Result{}
}

// healJob is one object with shards to rebuild or move.
type healJob struct {
	object  uint64
	length  int64
	healthy int         // shards that are whole where they are (draining ones included)
	from    []string    // addresses to read from; "" where a shard is not to be read
	addrs   []string    // every shard's store address as recorded ("" unplaced or unknown)
	fromID  []string    // store ids as recorded ("" unplaced)
	needs   []shardNeed // per shard
}

// healQueueStats summarises the heal queue.
type healQueueStats struct {
	pending, pendingBytes uint64
	byRisk                []uint64 // pending objects by healthy shards beyond k
	corrupt               uint64   // bad shards
	degraded, unreadable  uint64
}

// healCandidates scans the heal queue: it returns up to n objects the
// healer can work on, those with the fewest healthy shards first (then by
// id), skipping those skip says to, and the queue's figures. An object can
// be worked on when at least k of its shards are healthy and some shard
// can go somewhere: rewritten in place, or to a store it does not use.
func (f *FSM) healCandidates(n int, skip func(uint64) bool) ([]healJob, healQueueStats) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var st healQueueStats
	if f.scheme == nil {
		return nil, st
	}
	k, total := int(f.scheme.K), int(f.scheme.K+f.scheme.M)
	st.byRisk = make([]uint64, total-k+1)
	up := 0
	for _, s := range f.stores {
		if placeable(s) {
			up++
		}
	}
	// buckets[h]: candidates with h healthy shards, at most n each.
	buckets := make([][]healJob, total+1)
	for id := range f.heal {
		o := f.objects[id]
		if o == nil {
			continue
		}
		healthy, inPlace, elsewhere, usedUp := 0, 0, 0, 0
		for i, s := range o.stores {
			switch f.need(o, i) {
			case shardOK, shardWait:
				healthy++
				if placeable(f.stores[f.storeIDs[s]]) {
					usedUp++
				}
			case shardMove:
				healthy++
				elsewhere++
			case shardRewrite:
				inPlace++
				if placeable(f.stores[f.storeIDs[s]]) {
					usedUp++
				}
			case shardRebuild:
				elsewhere++
			}
		}
		st.corrupt += uint64(bits.OnesCount64(o.bad))
		if healthy < total {
			st.degraded++
		}
		if healthy < k {
			st.unreadable++
			continue
		}
		if inPlace == 0 && (elsewhere == 0 || up-usedUp <= 0) {
			continue // nowhere to put anything now
		}
		st.pending++
		st.pendingBytes += uint64(o.length)
		st.byRisk[min(healthy-k, total-k)]++
		if skip != nil && skip(id) {
			continue
		}
		if b := buckets[healthy]; n > 0 && (len(b) < n || id < b[len(b)-1].object) {
			buckets[healthy] = insertJob(b, f.job(id, o, healthy), n)
		}
	}
	var jobs []healJob
	for _, b := range buckets {
		for _, j := range b {
			if len(jobs) == n {
				return jobs, st
			}
			jobs = append(jobs, j)
		}
	}
	return jobs, st
}

// insertJob inserts j into b (sorted by object id), keeping at most n.
func insertJob(b []healJob, j healJob, n int) []healJob {
	i, _ := slices.BinarySearchFunc(b, j.object, func(x healJob, id uint64) int { return cmp.Compare(x.object, id) })
	b = slices.Insert(b, i, j)
	if len(b) > n {
		b = b[:n]
	}
	return b
}

func (f *FSM) job(id uint64, o *object, healthy int) healJob {
	j := healJob{object: id, length: o.length, healthy: healthy,
		from: make([]string, len(o.stores)), fromID: make([]string, len(o.stores)), needs: make([]shardNeed, len(o.stores)),
		addrs: make([]string, len(o.stores))}
	for i, s := range o.stores {
		sid := f.storeIDs[s]
		j.fromID[i] = sid
		if st := f.stores[sid]; st != nil && s != 0 {
			j.addrs[i] = st.Addr
		}
		j.needs[i] = f.need(o, i)
		switch j.needs[i] {
		case shardOK, shardWait, shardMove:
			j.from[i] = j.addrs[i] // read from where it is
		}
	}
	return j
}

// ShardsOn returns how many shards the records place on each store, by id.
func (f *FSM) ShardsOn() map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]int64, len(f.stores))
	for id := range f.stores {
		if i, ok := f.storeIdx[id]; ok && int(i) < len(f.onStore) {
			out[id] = f.onStore[i]
		} else {
			out[id] = 0
		}
	}
	return out
}
