package cluster

import (
	"context"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// ShardRebuilder recreates shards of an object on new stores. from holds
// the address of every shard's current store ("" where none is usable), to
// the new store for each index in shards. The wiring in cmd/ecfs connects
// it to the object layer.
type ShardRebuilder interface {
	RebuildShards(ctx context.Context, scheme string, object uint64, length int64, from []string, shards []int, to []string) []error
}

func (f *FSM) applyRelocate(op *metapb.RelocateOp) *metapb.Result {
	o := f.objects[op.Object]
	if o == nil || int(op.Index) >= len(o.stores) {
		return errnoResult(syscall.ENOENT)
	}
	if f.storeIDs[o.stores[op.Index]] != op.From {
		return errnoResult(syscall.ESTALE) // someone moved it meanwhile
	}
	o.stores[op.Index] = f.storeIndex(op.Store)
	return &metapb.Result{}
}

// healJob is one object with shards to rebuild.
type healJob struct {
	object uint64
	length int64
	from   []string // addresses; "" for a missing shard
	fromID []string // store ids as recorded
	bad    []int
}

// healJobs finds up to n objects with shards that have no store or whose
// store is down or draining (suspect stores are waited for).
func (f *FSM) healJobs(n int) []healJob {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.scheme == nil {
		return nil
	}
	queued := make(map[uint64]bool, len(f.gc))
	for _, id := range f.gc {
		queued[id] = true
	}
	var jobs []healJob
	for id, o := range f.objects {
		if len(jobs) == n {
			break
		}
		if queued[id] {
			continue
		}
		j := healJob{object: id, length: o.length, from: make([]string, len(o.stores)), fromID: make([]string, len(o.stores))}
		for i, s := range o.stores {
			sid := f.storeIDs[s]
			j.fromID[i] = sid
			st := f.stores[sid]
			if s == 0 || st == nil || st.State == StoreDown || st.State == StoreDraining {
				j.bad = append(j.bad, i)
				continue
			}
			j.from[i] = st.Addr
		}
		if len(j.bad) > 0 {
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// RunHealer rebuilds missing shards and shards on down or draining stores
// onto other up stores, while this member leads: a few objects every
// interval, each relocation recorded in the log.
func (s *Server) RunHealer(ctx context.Context, r ShardRebuilder, every time.Duration, perRound int) {
	if every <= 0 {
		every = time.Second
	}
	if perRound <= 0 {
		perRound = 16
	}
	s.whileLeader(ctx, every, func() {
		sc := s.fsm.Scheme()
		if sc == nil {
			return
		}
		stores := s.fsm.Stores()
		for _, j := range s.fsm.healJobs(perRound) {
			// New stores: placement for the object, skipping stores it uses.
			ranked, err := place(stores, j.object, len(stores), 1)
			if err != nil {
				return
			}
			used := map[string]bool{}
			for i, id := range j.fromID {
				if j.from[i] != "" {
					used[id] = true
				}
			}
			var shards []int
			var to, toID []string
			for _, idx := range j.bad {
				for _, st := range ranked {
					if st != nil && !used[st.Id] {
						used[st.Id] = true
						shards, to, toID = append(shards, idx), append(to, st.Addr), append(toID, st.Id)
						break
					}
				}
			}
			if len(shards) == 0 {
				continue // no spare store now
			}
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			errs := r.RebuildShards(rctx, sc.Scheme, j.object, j.length, j.from, shards, to)
			cancel()
			for i, idx := range shards {
				if errs[i] != nil {
					s.log.Warn("healer could not rebuild a shard", "object", j.object, "shard", idx, "to", to[i], "err", errs[i])
					continue
				}
				_, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{
					Object: j.object, Index: uint32(idx), Store: toID[i], From: j.fromID[idx]}}})
				if err != nil {
					s.log.Warn("healer could not record a rebuilt shard", "object", j.object, "shard", idx, "err", err)
				}
			}
		}
	})
}
