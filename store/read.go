package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ecfs/ecfs/codec"
)

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// span is a chunk-aligned byte range [lo, hi) of a shard.
type span struct{ lo, hi int64 }

// need is one data shard's part of a read: the aligned span to fetch, and
// where the wanted bytes go.
type need struct {
	idx  int
	sp   span
	skip int64  // bytes of the span before the wanted ones
	dst  []byte // the caller's buffer for this shard's bytes
	src  []byte // the verified bytes for dst, once done (may be dst itself)
	done bool
	// recover is set once the direct read failed or was slow: the span is
	// then also rebuilt from other shards.
	recover bool
}

type fetchKey struct {
	idx int
	sp  span
}

type fetch struct {
	done bool
	slow bool // outstanding when a hedge fired: not counted on
	data []byte
	err  error
}

type fetchDone struct {
	key  fetchKey
	data []byte
	err  error
}

// ReadAt reads len(p) bytes of obj at offset off (fewer at the object's end;
// io.EOF is not used: n tells). It reads only the needed chunk-aligned
// ranges of the data shards; when one fails, is corrupt, or is slower than
// HedgeAfter, it reads the same range from other shards and reconstructs.
// Every byte used was verified against its checksum, so the result is the
// exact data or an error wrapping ErrDataLoss (a *ReadError), never other
// bytes. bad lists the shards that failed (corrupt, missing, unreachable):
// the caller reports them for healing.
func (o *Objects) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (n int, bad []ShardResult, err error) {
	if err := obj.check(); err != nil {
		return 0, nil, err
	}
	if off < 0 || off > obj.Length {
		return 0, nil, fmt.Errorf("%w: offset %d outside object %s of %d bytes", ErrInvalidArgument, off, obj.ID, obj.Length)
	}
	want := min(int64(len(p)), obj.Length-off)
	if want == 0 {
		return 0, nil, nil
	}
	c, err := o.codec(obj.Scheme)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &reader{
		o: o, c: c, obj: obj, ctx: ctx,
		fetches: map[fetchKey]*fetch{},
		failed:  map[int]error{},
		events:  make(chan fetchDone, obj.Scheme.Shards()*(obj.Scheme.K+2)),
	}
	r.plan(p[:want], off)
	err = r.run()
	// Reads still going are cancelled and waited for before p is filled:
	// some were reading into p in place.
	cancel()
	r.wg.Wait()
	if err != nil {
		return 0, r.badShards(), err
	}
	for _, nd := range r.needs {
		if len(nd.dst) > 0 && &nd.src[0] != &nd.dst[0] {
			copy(nd.dst, nd.src)
		}
	}
	return int(want), r.badShards(), nil
}

type reader struct {
	o       *Objects
	c       *codec.Codec
	obj     Object
	ctx     context.Context
	needs   []*need
	fetches map[fetchKey]*fetch
	failed  map[int]error // shards that failed once: not asked again
	events  chan fetchDone
	wg      sync.WaitGroup // the fetch goroutines
}

// plan cuts the block range [off, off+len(p)) into per-data-shard spans.
func (r *reader) plan(p []byte, off int64) {
	size := r.obj.Scheme.ShardSize(r.obj.Length)
	end := off + int64(len(p))
	for i := off / size; i < int64(r.obj.Scheme.K) && i*size < end; i++ {
		lo, hi := max(off, i*size)-i*size, min(end, (i+1)*size)-i*size
		sp := span{lo / codec.ChunkSize * codec.ChunkSize, min((hi+codec.ChunkSize-1)/codec.ChunkSize*codec.ChunkSize, size)}
		r.needs = append(r.needs, &need{
			idx:  int(i),
			sp:   sp,
			skip: lo - sp.lo,
			dst:  p[i*size+lo-off : i*size+hi-off],
		})
	}
}

// launch starts reading span k.sp of shard k.idx, into dst if it is not
// nil (then it must be exactly the span's length).
func (r *reader) launch(k fetchKey, dst []byte) {
	f := &fetch{}
	r.fetches[k] = f
	addr := r.obj.Placement[k.idx]
	if addr == "" {
		f.done, f.err = true, ErrUnplaced
		r.failed[k.idx] = f.err
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, r.o.cfg.ShardTimeout)
		defer cancel()
		release, err := r.o.acquire(ctx, addr)
		var rg *Range
		if err == nil {
			rg, err = r.o.cfg.Client.GetInto(ctx, addr, ShardKey{r.obj.ID, k.idx}, k.sp.lo, k.sp.hi-k.sp.lo, dst)
			release()
		}
		if err == nil && (rg.ObjectLen != r.obj.Length || rg.Scheme != r.obj.Scheme) {
			err = fmt.Errorf("%w: %s: shard %d is of an object of %d bytes (%s), expected %d (%s)", ErrDataLoss, addr, k.idx, rg.ObjectLen, rg.Scheme, r.obj.Length, r.obj.Scheme)
		}
		d := fetchDone{key: k, err: err}
		if err == nil {
			d.data = rg.Data
		}
		r.events <- d
	}()
}

func (r *reader) run() error {
	for _, nd := range r.needs {
		if r.o.avoided(r.obj.Placement[nd.idx]) {
			nd.recover = true // read around a store that was just slow
			continue
		}
		var dst []byte
		if nd.skip == 0 && int64(len(nd.dst)) == nd.sp.hi-nd.sp.lo {
			dst = nd.dst // aligned: no copy
		}
		r.launch(fetchKey{nd.idx, nd.sp}, dst)
	}
	hedge := time.NewTimer(r.o.cfg.HedgeAfter)
	defer hedge.Stop()
	for {
		progress, err := r.step()
		if err != nil {
			return err
		}
		if progress {
			continue
		}
		if r.complete() {
			return nil
		}
		select {
		case d := <-r.events:
			f := r.fetches[d.key]
			f.done, f.data, f.err = true, d.data, d.err
			if d.err != nil {
				r.failed[d.key.idx] = d.err
			}
		case <-hedge.C:
			r.hedge()
			hedge.Reset(r.o.cfg.HedgeAfter)
		case <-r.ctx.Done():
			return fmt.Errorf("object %s: %w", r.obj.ID, r.ctx.Err())
		}
	}
}

func (r *reader) complete() bool {
	for _, nd := range r.needs {
		if !nd.done {
			return false
		}
	}
	return true
}

// hedge marks every outstanding fetch slow and every need still waiting
// for its direct read as recovering, so the next step reads other shards.
func (r *reader) hedge() {
	for k, f := range r.fetches {
		if !f.done {
			f.slow = true
			r.o.avoid(r.obj.Placement[k.idx])
		}
	}
	for _, nd := range r.needs {
		if !nd.done {
			nd.recover = true
		}
	}
}

// step uses what has arrived: it copies direct reads, reconstructs spans
// for which k shards are in, and launches the reads still wanted. It reports
// whether it changed anything, or an error when some span cannot be had.
func (r *reader) step() (bool, error) {
	progress := false
	recovering := map[span]bool{}
	for _, nd := range r.needs {
		if nd.done {
			continue
		}
		if f := r.fetches[fetchKey{nd.idx, nd.sp}]; f != nil && f.done && f.err == nil {
			nd.src = f.data[nd.skip:][:len(nd.dst)]
			nd.done, progress = true, true
			continue
		} else if f != nil && f.done {
			nd.recover = true
		}
		if nd.recover {
			recovering[nd.sp] = true
		}
	}
	for sp := range recovering {
		have, inflight, slow := r.count(sp)
		if have >= r.obj.Scheme.K {
			if err := r.reconstruct(sp); err != nil {
				return false, err
			}
			progress = true
			continue
		}
		for have+inflight < r.obj.Scheme.K {
			idx := r.candidate(sp)
			if idx < 0 {
				break
			}
			r.launch(fetchKey{idx, sp}, nil)
			progress = true
			if f := r.fetches[fetchKey{idx, sp}]; !f.done {
				inflight++
			}
		}
		if have+inflight+slow < r.obj.Scheme.K {
			return false, &ReadError{Object: r.obj.ID, Need: r.obj.Scheme.K, Good: have, Failed: r.badShards()}
		}
	}
	return progress, nil
}

// count returns how many shards have arrived for sp, how many reads of it
// are outstanding, and how many of those are slow (not counted on, but not
// given up either).
func (r *reader) count(sp span) (have, inflight, slow int) {
	for k, f := range r.fetches {
		if k.sp != sp {
			continue
		}
		switch {
		case f.done && f.err == nil:
			have++
		case !f.done && !f.slow:
			inflight++
		case !f.done:
			slow++
		}
	}
	return have, inflight, slow
}

// candidate picks the next shard to read sp from: data shards first (no
// decoding needed for them), then parity, and stores that were recently slow
// last; never one that failed or was already asked for sp. -1 when none is
// left.
func (r *reader) candidate(sp span) int {
	for _, slowOK := range []bool{false, true} {
		for i := range r.obj.Scheme.Shards() {
			if _, bad := r.failed[i]; bad {
				continue
			}
			if _, asked := r.fetches[fetchKey{i, sp}]; asked {
				continue
			}
			if slowOK || !r.o.avoided(r.obj.Placement[i]) {
				return i
			}
		}
	}
	return -1
}

// reconstruct rebuilds the data shards' span sp from the k or more shards
// that arrived for it and fills every need of that span.
func (r *reader) reconstruct(sp span) error {
	shards := make([][]byte, r.obj.Scheme.Shards())
	for k, f := range r.fetches {
		if k.sp == sp && f.done && f.err == nil {
			shards[k.idx] = f.data
		}
	}
	if err := r.c.Reconstruct(shards, true); err != nil {
		return fmt.Errorf("%w: object %s: %v", ErrDataLoss, r.obj.ID, err)
	}
	for _, nd := range r.needs {
		if !nd.done && nd.sp == sp {
			nd.src = shards[nd.idx][nd.skip:][:len(nd.dst)]
			nd.done = true
		}
	}
	return nil
}

func (r *reader) badShards() []ShardResult {
	var out []ShardResult
	for i := range r.obj.Scheme.Shards() {
		if err, ok := r.failed[i]; ok && !errors.Is(err, context.Canceled) {
			out = append(out, ShardResult{Index: i, Addr: r.obj.Placement[i], Err: err})
		}
	}
	return out
}
