package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// CompactMinSlices is the number of slices from which a block is rewritten
// as one object once it has not changed for a while: small random writes
// and appends otherwise leave a block spread over many small objects (a
// read of it costs one object read per slice, and the shadowed bytes of
// older objects are kept).
const CompactMinSlices = 16

type fragKey struct{ ino, block uint64 }

// noteFragmented remembers the blocks of a commit that now have many
// slices, with the time of the change.
func (f *FSM) noteFragmented(ino uint64, writes []*metapb.BlockWrite, now int64) {
	for _, w := range writes {
		if f.ns.SliceCount(namespace.Ino(ino), w.Block) >= CompactMinSlices {
			f.frag[fragKey{ino, w.Block}] = now
		}
	}
}

func (f *FSM) applyCompact(op *metapb.CompactOp, now int64) *metapb.Result {
	if op.Object == nil || op.Object.Id == 0 || f.objects[op.Object.Id] != nil {
		return errnoResult(syscall.EINVAL)
	}
	expect := make([]namespace.Slice, len(op.Expect))
	for i, w := range op.Expect {
		expect[i] = namespace.Slice{Off: w.Off, Len: w.Len, Object: w.Object, ObjOff: w.ObjOff}
	}
	freed, e := f.ns.CompactBlock(namespace.Ino(op.Ino), op.Block, expect, op.Off, op.Off+op.Len, op.Object.Id)
	if e != 0 {
		return errnoResult(e)
	}
	delete(f.frag, fragKey{op.Ino, op.Block})
	f.recordObjects([]*metapb.ObjectRecord{op.Object})
	at := now + max(op.GcDelayNs, 0)
	for _, id := range freed {
		if _, waiting := f.packs[id]; waiting {
			continue // queued when its last commit comes, if unreferenced then
		}
		if !f.gcQueued[id] {
			f.gcQueued[id] = true
			f.gcLater[id] = at
			delete(f.heal, id)
		}
	}
	return &metapb.Result{FreedObjects: freed}
}

// gcDue returns the objects freed by compaction whose time to go has come.
func (f *FSM) gcDue(now int64) []uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.gcDueLocked(now)
}

// gcDueLocked is gcDue with f.mu held.
func (f *FSM) gcDueLocked(now int64) []uint64 {
	var out []uint64
	for id, at := range f.gcLater {
		if at <= now {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// compactJob is one block to rewrite.
type compactJob struct {
	ino, block uint64
	expect     []namespace.Slice
	lo, hi     uint32
	objects    map[uint64]*metapb.ObjectRecord // of the slices, with addresses
}

// compactJobs returns up to n blocks that have had many slices and no
// change for idle, with what is needed to rewrite them. Entries found
// stale (the block was rewritten, truncated or deleted) are dropped; a
// block of a file open somewhere, or with an object whose record is
// missing, is left for later.
func (f *FSM) compactJobs(now int64, idle time.Duration, n int) []compactJob {
	f.mu.Lock() // frag is soft state the leader prunes
	defer f.mu.Unlock()
	var keys []fragKey
	for k, at := range f.frag {
		if now-at >= int64(idle) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b fragKey) int {
		if a.ino != b.ino {
			return cmp.Compare(a.ino, b.ino)
		}
		return cmp.Compare(a.block, b.block)
	})
	var jobs []compactJob
	for _, k := range keys {
		if len(jobs) == n {
			break
		}
		if f.ns.SliceCount(namespace.Ino(k.ino), k.block) < CompactMinSlices {
			delete(f.frag, k)
			continue
		}
		ss, lo, hi, ok := f.ns.Compactable(namespace.Ino(k.ino), k.block)
		if !ok {
			continue
		}
		j := compactJob{ino: k.ino, block: k.block, expect: ss, lo: lo, hi: hi, objects: map[uint64]*metapb.ObjectRecord{}}
		for _, s := range ss {
			o := f.objects[s.Object]
			if o == nil {
				j.objects = nil
				break
			}
			j.objects[s.Object] = f.objectRecord(s.Object, o, true)
		}
		if j.objects != nil {
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// BlockIO reads and writes whole objects for the compactor; cmd/ecfs wires
// it to the object layer.
type BlockIO interface {
	// ReadObject reads len(p) bytes of the object at off.
	ReadObject(ctx context.Context, scheme string, object uint64, length int64, placement []string, p []byte, off int64) error
	// WriteObject writes a new object over placement with the write
	// quorum and reports which shards were stored.
	WriteObject(ctx context.Context, scheme string, object uint64, data []byte, placement []string, quorum int) ([]bool, error)
}

// CompactConfig tunes the compactor.
type CompactConfig struct {
	Every   time.Duration // how often it looks; default 10 s; negative: never
	Idle    time.Duration // a block must not have changed for this long; default 30 s
	GCDelay time.Duration // the old objects go to GC this long after; default 10 min
	PerRun  int           // blocks per round; default 16
}

// RunCompactor rewrites blocks made of many slices as one object each,
// while this member leads, until ctx ends. d deletes the new object's
// shards when the block changed meanwhile (the compaction is refused).
func (s *Server) RunCompactor(ctx context.Context, bio BlockIO, d ShardDeleter, cfg CompactConfig) {
	if cfg.Every < 0 {
		return
	}
	if cfg.Every == 0 {
		cfg.Every = 10 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	if cfg.GCDelay <= 0 {
		cfg.GCDelay = 10 * time.Minute
	}
	if cfg.PerRun <= 0 {
		cfg.PerRun = 16
	}
	log := s.log.With("component", "compactor")
	s.whileLeader(ctx, cfg.Every, func() {
		// Objects freed by earlier compactions whose delay is over.
		if due := s.fsm.gcDue(time.Now().UnixNano()); len(due) > 0 {
			if _, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_GcQueue{GcQueue: &metapb.GCQueueOp{Objects: due}}}); err != nil {
				log.Warn("could not queue compacted objects for GC; will retry", "err", err)
			}
		}
		sc := s.fsm.Scheme()
		if sc == nil {
			return
		}
		var done, stale int
		var firstErr error
		for _, j := range s.fsm.compactJobs(time.Now().UnixNano(), cfg.Idle, cfg.PerRun) {
			err := s.compact(ctx, bio, d, sc, j, cfg.GCDelay)
			switch {
			case err == nil:
				done++
			case errors.Is(err, errCompactStale):
				stale++
			case firstErr == nil:
				firstErr = err
			}
		}
		if done > 0 || firstErr != nil {
			log.Info("compacted blocks", "blocks", done, "changed_meanwhile", stale, "first_error", firstErr)
		}
	})
}

var errCompactStale = errors.New("the block changed meanwhile")

// compact rewrites one block.
func (s *Server) compact(ctx context.Context, bio BlockIO, d ShardDeleter, sc *metapb.InitOp, j compactJob, gcDelay time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	buf := make([]byte, j.hi-j.lo)
	for _, sl := range j.expect {
		if sl.Off >= j.hi {
			continue
		}
		n := min(sl.Len, j.hi-sl.Off)
		rec := j.objects[sl.Object]
		if err := bio.ReadObject(cctx, sc.Scheme, rec.Id, rec.Length, rec.Stores, buf[sl.Off-j.lo:][:n], int64(sl.ObjOff)); err != nil {
			return fmt.Errorf("reading object %016x: %w", rec.Id, err)
		}
	}
	res, err := s.commit.propose(cctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Alloc{Alloc: &metapb.AllocOp{Count: 1}}})
	if err != nil {
		return err
	}
	id := res.FirstId
	chosen, err := place(s.fsm.Stores(), id, int(sc.K+sc.M), int(sc.K+1))
	if err != nil {
		return err
	}
	addrs, ids := make([]string, len(chosen)), make([]string, len(chosen))
	for i, st := range chosen {
		if st != nil {
			addrs[i], ids[i] = st.Addr, st.Id
		}
	}
	stored, err := bio.WriteObject(cctx, sc.Scheme, id, buf, addrs, int(sc.K+1))
	if err != nil {
		return fmt.Errorf("writing object %016x: %w", id, err)
	}
	rec := &metapb.ObjectRecord{Id: id, Length: int64(len(buf)), Stores: make([]string, len(ids))}
	for i := range ids {
		if i < len(stored) && stored[i] {
			rec.Stores[i] = ids[i]
		}
	}
	op := &metapb.CompactOp{Ino: j.ino, Block: j.block, Off: j.lo, Len: j.hi - j.lo, Object: rec, GcDelayNs: int64(gcDelay)}
	for _, sl := range j.expect {
		op.Expect = append(op.Expect, &metapb.BlockWrite{Block: j.block, Off: sl.Off, Len: sl.Len, Object: sl.Object, ObjOff: sl.ObjOff})
	}
	r, err := s.commit.propose(cctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Compact{Compact: op}})
	if err != nil {
		// Unknown outcome: the orphan GC deletes the object if it was not
		// recorded.
		return err
	}
	if r.Errno != 0 {
		// Refused: nothing points at the new object; delete it now.
		_ = d.DeleteShards(cctx, id, addrs)
		if syscall.Errno(r.Errno) == syscall.ESTALE {
			return errCompactStale
		}
		return syscall.Errno(r.Errno)
	}
	return nil
}
