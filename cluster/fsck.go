package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// fsck, run by the leader on an operator's request (ecfs fsck), checks the
// namespace against the object records and the records against the shards
// on the stores, and with repair hands what can be fixed to the healer and
// the GC. What the healer already knows (shards marked bad, unplaced, or on
// a store that is not up or draining) is not a problem of fsck's: the heal
// status shows it.

// Kinds of fsck problems (metapb.FsckProblem.Kind).
const (
	FsckMissing      = "missing"      // recorded on an up store, not there
	FsckLength       = "length"       // there, of the wrong size for the object's length
	FsckRotten       = "rotten"       // the store found it corrupt (its /v1/corrupt list)
	FsckOrphan       = "orphan"       // on a store, no record places it there, older than the grace
	FsckDangling     = "dangling"     // a file's slice names an object with no record: data lost
	FsckUnreferenced = "unreferenced" // a record no file references nor is to (no pack commit to come), not queued for GC
)

// FsckKinds lists the kinds of problems in the order reports show them.
var FsckKinds = []string{FsckMissing, FsckLength, FsckRotten, FsckOrphan, FsckDangling, FsckUnreferenced}

// ErrShardNotFound is what FsckStores.StatShard wraps for a shard that is
// not on the store.
var ErrShardNotFound = errors.New("shard not found")

// FsckStores is what fsck needs of the stores; cmd/ecfs wires it to the
// store client (cluster imports no store code).
type FsckStores interface {
	// ListShards calls fn for every shard on the store at addr with its
	// size on disk (header included) and modification time.
	ListShards(ctx context.Context, addr string, fn func(object uint64, index int, size int64, mtime time.Time)) error
	// Corrupt lists the shards the store found corrupt and still holds.
	Corrupt(ctx context.Context, addr string) ([]*metapb.ShardRef, error)
	// VerifyShard has the store read and check every chunk of a shard:
	// false if one is corrupt (the store then lists it as corrupt).
	VerifyShard(ctx context.Context, addr string, object uint64, index int) (bool, error)
	// StatShard returns nil if the shard is on the store, an error
	// wrapping ErrShardNotFound if it is not, another error if it cannot
	// tell.
	StatShard(ctx context.Context, addr string, object uint64, index int) error
	// DeleteShard deletes a shard; one already gone is not an error.
	DeleteShard(ctx context.Context, addr string, object uint64, index int) error
	// ShardFileSize is the size on disk of a shard of an object of
	// objectLen bytes coded with scheme (as metapb.InitOp.Scheme names it).
	ShardFileSize(scheme string, objectLen int64) (int64, error)
}

const (
	// fsckMaxListed bounds the problems an answer lists (all are counted).
	fsckMaxListed = 1000
	// fsckBatchShards bounds the recorded shards fsck holds at once (24
	// bytes each): the stores are checked in groups of about this many.
	fsckBatchShards = 1 << 21
	// fsckOpBatch bounds the shards or objects of one proposed command.
	fsckOpBatch = 1000
	// fsckSizeCache bounds the cache of shard file sizes by object length.
	fsckSizeCache = 1 << 16
)

// EnableFsck lets this member serve fsck requests (AdminReq.Fsck) through
// st. Shards no record places on their store are only reported (and with
// repair deleted) once older than orphanGrace (10 minutes if 0): a write
// may still commit them. One fsck runs at a time; a second waits.
func (s *Server) EnableFsck(st FsckStores, orphanGrace time.Duration) {
	if orphanGrace <= 0 {
		orphanGrace = 10 * time.Minute
	}
	one := make(chan struct{}, 1)
	s.fsck = func(ctx context.Context, req *metapb.FsckReq) (*metapb.FsckResp, error) {
		select {
		case one <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-one }()
		c := &fscker{s: s, st: st, grace: orphanGrace, repair: req.GetRepair(), verify: req.GetVerify(),
			resp:   &metapb.FsckResp{Counts: map[string]uint64{}},
			listed: map[string][]*metapb.FsckProblem{}, sizes: map[int64]int64{}}
		return c.run(ctx)
	}
}

// fscker is one fsck run.
type fscker struct {
	s      *Server
	st     FsckStores
	grace  time.Duration
	repair bool
	verify bool
	scheme string // the filesystem's, "" before init

	resp    *metapb.FsckResp
	listed  map[string][]*metapb.FsckProblem // by kind, the first fsckMaxListed of each
	sizes   map[int64]int64                  // shard file size by object length (-1: unknown)
	healNow bool                             // shards were reported bad
}

// fsckShard is a shard a record places on the store being checked.
type fsckShard struct {
	object uint64
	want   int64 // its size on disk; -1: unknown
	index  uint32
	seen   bool // listed
}

// fsckFound is a shard the listing found something wrong with.
type fsckFound struct {
	object     uint64
	index      int
	size, want int64
	mtime      time.Time
	kind       string
}

func (c *fscker) run(ctx context.Context) (*metapb.FsckResp, error) {
	start := time.Now()
	// Every entry committed before the request is applied here.
	if err := c.s.barrier.wait(ctx); err != nil {
		return nil, err
	}
	for _, k := range FsckKinds {
		c.resp.Counts[k] = 0
	}
	unref := c.checkNamespace()
	c.queueUnreferenced(ctx, unref)
	if err := c.checkStores(ctx); err != nil {
		return nil, err
	}
	if c.healNow {
		c.s.HealNow()
	}
	c.resp.Problems = c.pick()
	var total uint64
	for _, n := range c.resp.Counts {
		total += n
	}
	c.s.log.Info("fsck done", "repair", c.repair, "problems", total, "repaired", c.resp.Repaired,
		"objects", c.resp.Objects, "files", c.resp.Files, "shards_listed", c.resp.ShardsListed,
		"skipped_stores", len(c.resp.Skipped), "took", time.Since(start).Round(time.Millisecond))
	return c.resp, nil
}

// add counts a problem and keeps it if fewer than fsckMaxListed of its kind
// are kept.
func (c *fscker) add(p *metapb.FsckProblem) {
	c.resp.Counts[p.Kind]++
	if p.Repaired {
		c.resp.Repaired++
	}
	if len(c.listed[p.Kind]) < fsckMaxListed {
		c.listed[p.Kind] = append(c.listed[p.Kind], p)
	}
}

// pick chooses the problems the answer lists: at most fsckMaxListed, taken
// from each kind in turn (so a flood of one kind hides no other), sorted by
// kind, store, object and shard.
func (c *fscker) pick() []*metapb.FsckProblem {
	var out []*metapb.FsckProblem
	for i := 0; len(out) < fsckMaxListed; i++ {
		took := false
		for _, k := range FsckKinds {
			if l := c.listed[k]; i < len(l) && len(out) < fsckMaxListed {
				out = append(out, l[i])
				took = true
			}
		}
		if !took {
			break
		}
	}
	order := map[string]int{}
	for i, k := range FsckKinds {
		order[k] = i
	}
	slices.SortFunc(out, func(a, b *metapb.FsckProblem) int {
		return cmp.Or(cmp.Compare(order[a.Kind], order[b.Kind]), cmp.Compare(a.Store, b.Store),
			cmp.Compare(a.Object, b.Object), cmp.Compare(a.Index, b.Index), cmp.Compare(a.Ino, b.Ino))
	})
	return out
}

// checkNamespace finds the slices naming objects with no record (dangling)
// and the records no slice names (unreferenced), which it returns. Objects
// queued for GC are neither. It walks the namespace under the state's read
// lock (applies wait meanwhile), holding 8 bytes and a bit per record.
func (c *fscker) checkNamespace() (unref []uint64) {
	f := c.s.fsm
	f.mu.RLock()
	ids := make([]uint64, 0, len(f.objects)-min(len(f.gcQueued), len(f.objects)))
	for id := range f.objects {
		if !f.gcQueued[id] {
			ids = append(ids, id)
		}
	}
	if f.scheme != nil {
		c.scheme = f.scheme.Scheme
	}
	f.mu.RUnlock()
	slices.Sort(ids) // outside the lock: the walk below checks each id again
	used := make([]uint64, (len(ids)+63)/64)

	f.mu.RLock()
	defer f.mu.RUnlock()
	f.ns.EachFileObjects(func(ino uint64, objects []uint64) {
		c.resp.Files++
		for _, o := range objects {
			if f.objects[o] == nil {
				if !f.gcQueued[o] {
					c.add(&metapb.FsckProblem{Kind: FsckDangling, Object: o, Index: -1, Ino: ino,
						Detail: "a slice of the file names an object with no record: its data is lost"})
				}
				continue
			}
			if i, ok := slices.BinarySearch(ids, o); ok {
				used[i/64] |= 1 << (i % 64)
			}
		}
	})
	for i, id := range ids {
		// Recorded and not queued then; deleted or queued since: no longer
		// ours. A packed object with commits to come is not unreferenced:
		// a file is still to reference it.
		if _, waiting := f.packs[id]; waiting || used[i/64]&(1<<(i%64)) != 0 || f.objects[id] == nil || f.gcQueued[id] {
			continue
		}
		unref = append(unref, id)
	}
	c.resp.Objects = uint64(len(ids))
	return unref
}

// queueUnreferenced reports the unreferenced records and, with repair,
// queues them for GC.
func (c *fscker) queueUnreferenced(ctx context.Context, unref []uint64) {
	for len(unref) > 0 {
		batch := unref[:min(len(unref), fsckOpBatch)]
		unref = unref[len(batch):]
		detail, repaired := "no file references the record and GC does not know it", false
		if c.repair {
			_, err := c.s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(),
				Op: &metapb.Command_GcQueue{GcQueue: &metapb.GCQueueOp{Objects: batch}}})
			if err != nil {
				detail += fmt.Sprintf("; could not queue it for GC: %v", err)
			} else {
				detail += "; queued for GC"
				repaired = true
			}
		}
		for _, id := range batch {
			c.add(&metapb.FsckProblem{Kind: FsckUnreferenced, Object: id, Index: -1, Detail: detail, Repaired: repaired})
		}
	}
}

// checkStores lists the shards of every store that is up or draining, in
// groups of about fsckBatchShards recorded shards. It fails only when ctx
// ends; a store that cannot be checked is listed in Skipped.
func (c *fscker) checkStores(ctx context.Context) error {
	var check []*metapb.StoreInfo
	for _, st := range c.s.fsm.Stores() {
		switch st.State {
		case StoreUp, StoreDraining:
			check = append(check, st)
		case StoreDown:
			c.skip(st, "down (the healer rebuilds its shards elsewhere)")
		case StoreSuspect:
			c.skip(st, "suspect (missed heartbeats; checked once it is up again)")
		default:
			c.skip(st, st.State)
		}
	}
	on := c.s.fsm.ShardsOn()
	for len(check) > 0 {
		n, sum := 0, int64(0)
		for n < len(check) && (n == 0 || sum+on[check[n].Id] <= fsckBatchShards) {
			sum += on[check[n].Id]
			n++
		}
		batch := check[:n]
		check = check[n:]
		exp := c.expected(batch)
		for i, st := range batch {
			c.checkStore(ctx, st, exp[i])
			exp[i] = nil
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *fscker) skip(st *metapb.StoreInfo, why string) {
	c.resp.Skipped = append(c.resp.Skipped, fmt.Sprintf("%s (%s): %s", st.Id, st.Addr, why))
}

// shardSize is the size on disk of a shard of an object of length bytes,
// -1 if unknown. Callers hold the state's lock.
func (c *fscker) shardSize(length int64) int64 {
	if n, ok := c.sizes[length]; ok {
		return n
	}
	n := int64(-1)
	if c.scheme != "" {
		if v, err := c.st.ShardFileSize(c.scheme, length); err == nil {
			n = v
		}
	}
	if len(c.sizes) < fsckSizeCache {
		c.sizes[length] = n
	}
	return n
}

// expected returns, for each store of batch, the shards the records place
// there, sorted by object and index: those not known bad and not of objects
// queued for GC (the healer and the GC see to those).
func (c *fscker) expected(batch []*metapb.StoreInfo) [][]fsckShard {
	f := c.s.fsm
	out := make([][]fsckShard, len(batch))
	f.mu.RLock()
	pos := make([]int, len(f.storeIDs)) // store index -> position in batch + 1
	for i, st := range batch {
		if si, ok := f.storeIdx[st.Id]; ok {
			pos[si] = i + 1
		}
	}
	for id, o := range f.objects {
		if f.gcQueued[id] {
			continue
		}
		for i, s := range o.stores {
			if s == 0 || int(s) >= len(pos) || pos[s] == 0 || (i < 64 && o.bad&(1<<uint(i)) != 0) {
				continue
			}
			b := pos[s] - 1
			out[b] = append(out[b], fsckShard{object: id, index: uint32(i), want: c.shardSize(o.length)})
		}
	}
	f.mu.RUnlock()
	for _, e := range out {
		slices.SortFunc(e, func(a, b fsckShard) int {
			return cmp.Or(cmp.Compare(a.object, b.object), cmp.Compare(a.index, b.index))
		})
	}
	return out
}

// findShard finds shard index of object in exp (sorted).
func findShard(exp []fsckShard, object uint64, index int) (int, bool) {
	if index < 0 || int64(index) > int64(^uint32(0)) {
		return 0, false
	}
	return slices.BinarySearchFunc(exp, fsckShard{object: object, index: uint32(index)}, func(a, b fsckShard) int {
		return cmp.Or(cmp.Compare(a.object, b.object), cmp.Compare(a.index, b.index))
	})
}

// fsckPlaced reports whether the records place shard index of object on
// store storeID, not known bad, and the object is not queued for GC: a
// problem found there is still fsck's to report.
func (f *FSM) fsckPlaced(object uint64, index int, storeID string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	o := f.objects[object]
	if o == nil || f.gcQueued[object] || index < 0 || index >= len(o.stores) || o.stores[index] == 0 {
		return false
	}
	if index < 64 && o.bad&(1<<uint(index)) != 0 {
		return false
	}
	return f.storeIDs[o.stores[index]] == storeID
}

// checkStore checks one store against exp, the shards recorded there.
// Each problem is confirmed against the records as they are now (a shard
// moved, rewritten or deleted meanwhile is not one), a missing shard also
// by asking the store once more; with repair, the bad shards are reported
// to the healer (as a reader would) and the orphans deleted.
func (c *fscker) checkStore(ctx context.Context, st *metapb.StoreInfo, exp []fsckShard) {
	corrupt, err := c.st.Corrupt(ctx, st.Addr)
	if err != nil {
		c.skip(st, fmt.Sprintf("asking for its corrupt shards: %v", err))
		return
	}
	var listed, young uint64
	var found []fsckFound
	now := time.Now()
	err = c.st.ListShards(ctx, st.Addr, func(object uint64, index int, size int64, mtime time.Time) {
		listed++
		if i, ok := findShard(exp, object, index); ok {
			e := &exp[i]
			e.seen = true
			if e.want >= 0 && size != e.want {
				found = append(found, fsckFound{kind: FsckLength, object: object, index: index, size: size, want: e.want})
			}
			return
		}
		// Not expected: recorded since, known bad, queued for GC, or
		// nobody's.
		if !c.s.fsm.shardOrphan(object, index, st.Id) {
			return
		}
		if now.Sub(mtime) > c.grace {
			found = append(found, fsckFound{kind: FsckOrphan, object: object, index: index, mtime: mtime})
		} else {
			young++
		}
	})
	if err != nil {
		c.skip(st, fmt.Sprintf("listing its shards: %v", err))
		return
	}
	c.resp.ShardsListed += listed
	c.resp.YoungOrphans += young
	for _, e := range exp {
		if !e.seen {
			found = append(found, fsckFound{kind: FsckMissing, object: e.object, index: int(e.index)})
		}
	}
	for _, r := range corrupt {
		found = append(found, fsckFound{kind: FsckRotten, object: r.Object, index: int(r.Index)})
	}
	if c.verify {
		found = append(found, c.verifyStore(ctx, st, exp, corrupt)...)
	}

	var bad []*metapb.BadShard
	var probs []*metapb.FsckProblem // the problems bad stands for
	reported := map[[2]uint64]bool{}
	for _, p := range found {
		pb := &metapb.FsckProblem{Kind: p.kind, Object: p.object, Index: int32(min(p.index, 1<<31-1)), Store: st.Id}
		switch p.kind {
		case FsckOrphan:
			age := now.Sub(p.mtime).Round(time.Second)
			pb.Detail = fmt.Sprintf("no record places it on this store; %s old", age)
			if c.repair {
				// As the orphan GC does: a commit may have claimed it since.
				if !c.s.fsm.shardOrphan(p.object, p.index, st.Id) {
					continue
				}
				if err := c.st.DeleteShard(ctx, st.Addr, p.object, p.index); err != nil {
					pb.Detail += fmt.Sprintf("; could not delete it: %v", err)
				} else {
					pb.Detail += "; deleted"
					pb.Repaired = true
				}
			}
			c.add(pb)
			continue
		case FsckMissing:
			if !c.s.fsm.fsckPlaced(p.object, p.index, st.Id) {
				continue // moved, deleted or reported meanwhile
			}
			err := c.st.StatShard(ctx, st.Addr, p.object, p.index)
			if err == nil {
				continue // written after the listing passed its place
			}
			if !errors.Is(err, ErrShardNotFound) {
				c.s.log.Warn("fsck could not tell whether a shard is on its store", "store", st.Id,
					"object", p.object, "shard", p.index, "err", err)
				continue
			}
			pb.Detail = "recorded on this store, not there"
		case FsckLength:
			if !c.s.fsm.fsckPlaced(p.object, p.index, st.Id) {
				continue
			}
			pb.Detail = fmt.Sprintf("%d bytes on disk, want %d for the object's length", p.size, p.want)
		case FsckRotten:
			if !c.s.fsm.fsckPlaced(p.object, p.index, st.Id) {
				continue // not recorded here, or already known bad
			}
			pb.Detail = "the store found it corrupt"
		}
		if key := [2]uint64{p.object, uint64(p.index)}; !reported[key] {
			reported[key] = true
			bad = append(bad, &metapb.BadShard{Object: p.object, Index: uint32(p.index), Store: st.Id, Reason: p.kind})
		}
		probs = append(probs, pb)
	}
	if c.repair {
		c.reportBad(ctx, bad, probs)
	}
	for _, pb := range probs {
		c.add(pb)
	}
}

// reportBad records the bad shards of one store (ReportOp), so the healer
// rewrites them, and marks the problems about them repaired, or says why
// not.
func (c *fscker) reportBad(ctx context.Context, bad []*metapb.BadShard, probs []*metapb.FsckProblem) {
	failed := map[[2]uint64]error{}
	for len(bad) > 0 {
		batch := bad[:min(len(bad), fsckOpBatch)]
		bad = bad[len(batch):]
		_, err := c.s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(),
			Op: &metapb.Command_Report{Report: &metapb.ReportOp{Shards: batch}}})
		if err != nil {
			for _, b := range batch {
				failed[[2]uint64{b.Object, uint64(b.Index)}] = err
			}
			continue
		}
		c.healNow = true
	}
	for _, pb := range probs {
		if err := failed[[2]uint64{pb.Object, uint64(pb.Index)}]; err != nil {
			pb.Detail += fmt.Sprintf("; could not report it to the healer: %v", err)
			continue
		}
		pb.Detail += "; reported bad: the healer rewrites it"
		pb.Repaired = true
	}
}

// verifyStore has store st check every shard the records place on it that
// was listed with the right size and is not known corrupt already, four at
// a time, and returns those found rotten.
func (c *fscker) verifyStore(ctx context.Context, st *metapb.StoreInfo, exp []fsckShard, corrupt []*metapb.ShardRef) []fsckFound {
	known := make(map[[2]uint64]bool, len(corrupt))
	for _, r := range corrupt {
		known[[2]uint64{r.Object, uint64(r.Index)}] = true
	}
	var (
		mu    sync.Mutex
		found []fsckFound
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 4)
	)
	for _, e := range exp {
		if !e.seen || known[[2]uint64{e.object, uint64(e.index)}] {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok, err := c.st.VerifyShard(ctx, st.Addr, e.object, int(e.index))
			if err != nil || ok {
				return // a shard gone meanwhile, or a store not answering: not rot
			}
			mu.Lock()
			found = append(found, fsckFound{kind: FsckRotten, object: e.object, index: int(e.index)})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return found
}
