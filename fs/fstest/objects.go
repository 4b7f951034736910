package fstest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/store"
)

// Objects is an in-memory object layer; it implements fs.Objects with the
// semantics of store.Objects, keeping each object's bytes (not its shards)
// by id, and which store address holds each of its shards. Every mount of
// a test shares one, as they share the stores. It is safe for concurrent
// use.
//
// A shard can be made corrupt or missing (Corrupt, Lose), a store
// unreachable (FailStore), every write fail (FailWrites). Reads then
// behave as store.Objects' reconstruction does: the exact bytes while k
// shards are fine, with the bad shards the read met in its results;
// store.ErrDataLoss (a *store.ReadError) once fewer than k are.
type Objects struct {
	mu         sync.Mutex
	objs       map[store.ObjectID]*object
	failWrites bool
	down       map[string]bool // addresses of stores that answer nothing
	latency    time.Duration

	writes atomic.Int64
	reads  atomic.Int64
}

type object struct {
	obj    store.Object // as written: Placement[i] is "" where shard i was not stored
	data   []byte
	broken []error // per shard: nil, or what a read of it gets
}

// NewObjects returns an empty object layer.
func NewObjects() *Objects {
	return &Objects{objs: map[store.ObjectID]*object{}, down: map[string]bool{}}
}

// FailWrites makes every later write fail (on) as one that missed its
// quorum: each placed shard's result is an ErrUnavailable, the error a
// *store.WriteError; nothing is stored. off undoes it.
func (o *Objects) FailWrites(on bool) {
	o.mu.Lock()
	o.failWrites = on
	o.mu.Unlock()
}

// FailStore makes the store at addr answer nothing (on) until it is called
// again with off: writes of shards placed on it fail (ErrUnavailable in
// that shard's result; the write still succeeds if the quorum holds, and
// the shard is missing afterwards), and reads go around it (listing it
// with ErrUnavailable among the shards that failed).
func (o *Objects) FailStore(addr string, on bool) {
	o.mu.Lock()
	if on {
		o.down[addr] = true
	} else {
		delete(o.down, addr)
	}
	o.mu.Unlock()
}

// SetLatency makes each Write and ReadAt take d more (less if its context
// ends first).
func (o *Objects) SetLatency(d time.Duration) {
	o.mu.Lock()
	o.latency = d
	o.mu.Unlock()
}

// Corrupt makes shard index of object id fail its checksum on reads
// (store.ErrDataLoss), as bit rot on the store's disk does. It reports
// whether the object has that shard.
func (o *Objects) Corrupt(id uint64, index int) bool {
	return o.breakShard(id, index, fmt.Errorf("%w: fstest: shard %d of object %s is corrupt", store.ErrDataLoss, index, store.ObjectID(id)))
}

// Lose makes shard index of object id missing from its store
// (store.ErrNotFound on reads). It reports whether the object has that
// shard.
func (o *Objects) Lose(id uint64, index int) bool {
	return o.breakShard(id, index, fmt.Errorf("%w: fstest: shard %d of object %s", store.ErrNotFound, index, store.ObjectID(id)))
}

func (o *Objects) breakShard(id uint64, index int, err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	ob := o.objs[store.ObjectID(id)]
	if ob == nil || index < 0 || index >= len(ob.broken) || ob.obj.Placement[index] == "" {
		return false
	}
	ob.broken[index] = err
	return true
}

// Delete removes every shard of object id: reads of it fail with
// store.ErrNotFound in each shard's result. It reports whether it was
// there.
func (o *Objects) Delete(id uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.objs[store.ObjectID(id)]
	delete(o.objs, store.ObjectID(id))
	return ok
}

// Data returns a copy of object id's bytes, and whether it is stored.
func (o *Objects) Data(id uint64) ([]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ob := o.objs[store.ObjectID(id)]
	if ob == nil {
		return nil, false
	}
	return append([]byte(nil), ob.data...), true
}

// Len counts the objects stored.
func (o *Objects) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.objs)
}

// Writes counts the Write calls made, failed ones too.
func (o *Objects) Writes() int64 { return o.writes.Load() }

// Reads counts the ReadAt calls made, failed ones too.
func (o *Objects) Reads() int64 { return o.reads.Load() }

// check validates obj as store.Objects does.
func check(obj store.Object) error {
	if err := obj.Scheme.Validate(); err != nil {
		return fmt.Errorf("%w: %v", store.ErrInvalidArgument, err)
	}
	if len(obj.Placement) != obj.Scheme.Shards() {
		return fmt.Errorf("%w: object %s: placement of %d stores for %d shards", store.ErrInvalidArgument, obj.ID, len(obj.Placement), obj.Scheme.Shards())
	}
	if obj.Length < 0 || obj.Length > int64(obj.Scheme.BlockSize) {
		return fmt.Errorf("%w: object %s: length %d outside 0..%d", store.ErrInvalidArgument, obj.ID, obj.Length, obj.Scheme.BlockSize)
	}
	return nil
}

func (o *Objects) delay(ctx context.Context) error {
	o.mu.Lock()
	d := o.latency
	o.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Write stores data as object obj (obj.Length is taken from data), as
// store.Objects.Write: results[i] is shard i's outcome (ErrUnplaced where
// obj.Placement[i] is ""); below the quorum (store.Quorum) it stores
// nothing and returns a *store.WriteError (ErrWriteQuorum).
func (o *Objects) Write(ctx context.Context, obj store.Object, data []byte, quorum int) ([]store.ShardResult, error) {
	o.writes.Add(1)
	obj.Length = int64(len(data))
	if err := check(obj); err != nil {
		return nil, err
	}
	quorum = store.Quorum(obj.Scheme, quorum)
	ctxErr := o.delay(ctx)
	if ctxErr == nil {
		ctxErr = ctx.Err()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	results := make([]store.ShardResult, obj.Scheme.Shards())
	stored := obj
	stored.Placement = make([]string, len(obj.Placement))
	ok := 0
	for i, addr := range obj.Placement {
		r := store.ShardResult{Index: i, Addr: addr}
		switch {
		case addr == "":
			r.Err = store.ErrUnplaced
		case ctxErr != nil:
			r.Err = fmt.Errorf("%w: %s: no answer in time: %v", store.ErrUnavailable, addr, ctxErr)
		case o.failWrites || o.down[addr]:
			r.Err = fmt.Errorf("%w: %s: fstest: injected", store.ErrUnavailable, addr)
		default:
			stored.Placement[i] = addr
			ok++
		}
		results[i] = r
	}
	if ok < quorum {
		return results, &store.WriteError{Object: obj.ID, Quorum: quorum, Results: results}
	}
	o.objs[obj.ID] = &object{obj: stored, data: append([]byte(nil), data...), broken: make([]error, len(results))}
	return results, nil
}

// ReadAt reads len(p) bytes of obj at off (fewer at the object's end), as
// store.Objects.ReadAt: from the data shards that hold the range; when one
// of them fails, from the other shards in index order until k are fine.
// bad lists the shards that failed on the way (store.ErrNotFound for a
// shard its store does not hold, as under a stale placement;
// store.ErrDataLoss for a corrupt one; store.ErrUnavailable for a store
// that is down). With fewer than k fine shards it fails with a
// *store.ReadError (ErrDataLoss).
func (o *Objects) ReadAt(ctx context.Context, obj store.Object, p []byte, off int64) (int, []store.ShardResult, error) {
	o.reads.Add(1)
	if err := check(obj); err != nil {
		return 0, nil, err
	}
	if off < 0 || off > obj.Length {
		return 0, nil, fmt.Errorf("%w: offset %d outside object %s of %d bytes", store.ErrInvalidArgument, off, obj.ID, obj.Length)
	}
	want := min(int64(len(p)), obj.Length-off)
	if want == 0 {
		return 0, nil, nil
	}
	if err := o.delay(ctx); err != nil {
		return 0, nil, fmt.Errorf("object %s: %w", obj.ID, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, nil, fmt.Errorf("object %s: %w", obj.ID, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ob := o.objs[obj.ID]
	// shardErr is what a read of shard i from obj.Placement[i] gets.
	shardErr := func(i int) error {
		addr := obj.Placement[i]
		switch {
		case addr == "":
			return store.ErrUnplaced
		case o.down[addr]:
			return fmt.Errorf("%w: %s: fstest: injected", store.ErrUnavailable, addr)
		case ob == nil || ob.obj.Placement[i] != addr:
			return &store.RemoteError{Addr: addr, Code: store.CodeNotFound, Message: fmt.Sprintf("shard %s/%d not found", obj.ID, i)}
		case ob.obj.Length != obj.Length || ob.obj.Scheme != obj.Scheme:
			return fmt.Errorf("%w: %s: shard %d is of an object of %d bytes (%s), expected %d (%s)", store.ErrDataLoss, addr, i, ob.obj.Length, ob.obj.Scheme, obj.Length, obj.Scheme)
		}
		return ob.broken[i]
	}
	k := obj.Scheme.K
	failed := map[int]error{}
	good, asked := 0, map[int]bool{}
	// The data shards holding [off, off+want).
	size := obj.Scheme.ShardSize(obj.Length)
	end := off + want
	for i := off / size; i < int64(k) && i*size < end; i++ {
		asked[int(i)] = true
		if err := shardErr(int(i)); err != nil {
			failed[int(i)] = err
		} else {
			good++
		}
	}
	if len(failed) > 0 {
		// Reconstruction: k fine shards, the others asked in index order.
		for i := 0; i < obj.Scheme.Shards() && good < k; i++ {
			if asked[i] {
				continue
			}
			if err := shardErr(i); err != nil {
				failed[i] = err
			} else {
				good++
			}
		}
	}
	var bad []store.ShardResult
	for i := range obj.Scheme.Shards() {
		if err, ok := failed[i]; ok {
			bad = append(bad, store.ShardResult{Index: i, Addr: obj.Placement[i], Err: err})
		}
	}
	if len(failed) > 0 && good < k {
		return 0, bad, &store.ReadError{Object: obj.ID, Need: k, Good: good, Failed: bad}
	}
	copy(p[:want], ob.data[off:end])
	return int(want), bad, nil
}
