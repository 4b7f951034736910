package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/protobuf/proto"
)

// Store states.
const (
	StoreUp       = "up"
	StoreSuspect  = "suspect"
	StoreDown     = "down"
	StoreDraining = "draining"
	// storeRemoved, in a StoreStateOp, forgets a store that holds no shard.
	storeRemoved = "removed"
)

// ErrNoQuorum means fewer stores are up than a write needs.
var ErrNoQuorum = errors.New("too few stores up for the write quorum")

// maxStoreDisks bounds the disks a store's record keeps.
const maxStoreDisks = 64

// applyStore records a registration or heartbeat: the store is up as of
// the leader's time in the command.
func (f *FSM) applyStore(op *metapb.StoreOp, now int64) *metapb.Result {
	in := op.Info
	if in == nil || in.Id == "" || in.Addr == "" {
		return errnoResult(22) // EINVAL
	}
	s := &metapb.StoreInfo{
		Id: in.Id, Addr: in.Addr, Host: in.Host, Zone: in.Zone,
		TotalBytes: in.TotalBytes, FreeBytes: in.FreeBytes, State: StoreUp, LastHeartbeat: now,
	}
	for _, d := range in.Disks {
		if len(s.Disks) == maxStoreDisks {
			break
		}
		s.Disks = append(s.Disks, &metapb.DiskInfo{Fs: d.Fs, TotalBytes: d.TotalBytes, FreeBytes: d.FreeBytes})
	}
	old := f.stores[in.Id]
	if old != nil && old.State == StoreDraining {
		s.State = StoreDraining // a heartbeat does not undo a drain
	}
	f.stores[in.Id] = s
	if old != nil && healClass(old.State) != healClass(s.State) {
		f.reassessStore(f.storeIndex(in.Id))
	}
	for _, c := range in.Corrupt {
		f.markBad(c.Object, c.Index, in.Id)
	}
	return &metapb.Result{}
}

func (f *FSM) applyStoreState(op *metapb.StoreStateOp) *metapb.Result {
	s := f.stores[op.Id]
	if s == nil {
		return errnoResult(2) // ENOENT
	}
	switch op.State {
	case StoreUp, StoreSuspect, StoreDown, StoreDraining:
		if s.State != op.State {
			changes := healClass(s.State) != healClass(op.State)
			s.State = op.State
			if changes {
				f.reassessStore(f.storeIndex(op.Id))
			}
		}
		return &metapb.Result{}
	case storeRemoved:
		// Only a store no record places a shard on goes (a drained one);
		// it comes back as a new store if it ever reports again.
		if i, ok := f.storeIdx[op.Id]; ok && int(i) < len(f.onStore) && f.onStore[i] > 0 {
			return errnoResult(syscall.EBUSY)
		}
		delete(f.stores, op.Id)
		return &metapb.Result{}
	}
	return errnoResult(22)
}

// Stores returns the stores sorted by id.
func (f *FSM) Stores() []*metapb.StoreInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*metapb.StoreInfo, 0, len(f.stores))
	for _, s := range f.stores {
		out = append(out, proto.Clone(s).(*metapb.StoreInfo))
	}
	slices.SortFunc(out, func(a, b *metapb.StoreInfo) int { return cmp.Compare(a.Id, b.Id) })
	return out
}

// Scheme is the filesystem's erasure-coding scheme (nil before init).
func (f *FSM) Scheme() *metapb.InitOp {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.scheme == nil {
		return nil
	}
	return proto.Clone(f.scheme).(*metapb.InitOp)
}

// healClass groups store states by what they mean for the shards on the
// store: a change within a class (up and suspect) changes no object's need
// for the healer, so it costs no look at the store's objects.
func healClass(state string) string {
	switch state {
	case StoreUp, StoreSuspect:
		return StoreUp
	}
	return state
}

// MinFreeBytes is the free space below which a store gets no new shards
// (from writes or the healer) until it reports more: a store that is full,
// or nearly, would refuse them.
const MinFreeBytes = 8 << 20

// placeable reports whether new shards may go to st: it is up and, if it
// reports its capacity, has room.
func placeable(st *metapb.StoreInfo) bool {
	return st != nil && st.State == StoreUp && (st.TotalBytes <= 0 || st.FreeBytes >= MinFreeBytes)
}

// place chooses the stores of one object's k+m shards among the up stores:
// rendezvous hashing on the object id weighted by free space, distinct
// hosts first, then distinct zones. With fewer than k+m up stores but at
// least quorum, the remaining shards stay unplaced (nil entries); with fewer
// than quorum it fails with ErrNoQuorum.
func place(stores []*metapb.StoreInfo, object uint64, shards, quorum int) ([]*metapb.StoreInfo, error) {
	type cand struct {
		st    *metapb.StoreInfo
		score float64
	}
	var cands []cand
	for _, st := range stores {
		if !placeable(st) {
			continue
		}
		w := float64(max(st.FreeBytes, 1))
		u := (float64(hash64(object, st.Id)>>11) + 0.5) / (1 << 53) // in (0, 1)
		cands = append(cands, cand{st, w / -math.Log(u)})
	}
	if len(cands) < quorum {
		return nil, fmt.Errorf("%w: %d up, a write needs %d", ErrNoQuorum, len(cands), quorum)
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.st.Id, b.st.Id)
	})
	out := make([]*metapb.StoreInfo, 0, shards)
	used := map[string]bool{}
	hosts, zones := map[string]bool{}, map[string]bool{}
	pick := func(ok func(*metapb.StoreInfo) bool) {
		for _, c := range cands {
			if len(out) == shards {
				return
			}
			if !used[c.st.Id] && ok(c.st) {
				used[c.st.Id] = true
				hosts[c.st.Host], zones[c.st.Zone] = true, true
				out = append(out, c.st)
			}
		}
	}
	pick(func(st *metapb.StoreInfo) bool { return !hosts[st.Host] && !zones[st.Zone] })
	pick(func(st *metapb.StoreInfo) bool { return !hosts[st.Host] })
	pick(func(*metapb.StoreInfo) bool { return true })
	for len(out) < shards {
		out = append(out, nil)
	}
	return out, nil
}

func hash64(object uint64, id string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(object >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(id))
	x := h.Sum64()
	// fnv's high bits mix poorly: finish with a splitmix64 round.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
