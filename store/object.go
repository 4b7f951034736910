package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ecfs/ecfs/codec"
)

// Object is what the object layer needs to know of an immutable object: the
// metadata service keeps it; the object layer only uses it.
type Object struct {
	ID     ObjectID
	Scheme codec.Scheme
	Length int64
	// Placement[i] is the address of the store holding shard i; "" for a
	// shard that has no store (it is missing until the healer places it).
	Placement []string
}

func (o *Object) check() error {
	if err := o.Scheme.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	if len(o.Placement) != o.Scheme.Shards() {
		return fmt.Errorf("%w: object %s: placement of %d stores for %d shards", ErrInvalidArgument, o.ID, len(o.Placement), o.Scheme.Shards())
	}
	if o.Length < 0 || o.Length > int64(o.Scheme.BlockSize) {
		return fmt.Errorf("%w: object %s: length %d outside 0..%d", ErrInvalidArgument, o.ID, o.Length, o.Scheme.BlockSize)
	}
	return nil
}

// Defaults of ObjectsConfig.
const (
	DefaultHedgeAfter    = 300 * time.Millisecond
	DefaultStragglerWait = time.Second
	DefaultMaxInflight   = 64
	DefaultShardTimeout  = 30 * time.Second
)

// ObjectsConfig configures the object layer.
type ObjectsConfig struct {
	// Client talks to the stores; required.
	Client *Client
	// HedgeAfter is how long a shard read may take before the reader
	// fetches other shards to reconstruct around it; default 300ms.
	HedgeAfter time.Duration
	// StragglerWait is how long a write that reached its quorum still waits
	// for the remaining shards before reporting them missing; default 1s.
	StragglerWait time.Duration
	// ShardTimeout bounds one shard request, so a store that accepts and
	// never answers cannot hold a write forever; default 30s.
	ShardTimeout time.Duration
	// MaxInflight bounds the shard requests in flight to one store; default 64.
	MaxInflight int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Objects writes and reads erasure-coded objects. It is safe for concurrent
// use.
type Objects struct {
	cfg ObjectsConfig
	log *slog.Logger

	mu     sync.Mutex
	codecs map[codec.Scheme]*codec.Codec
	sems   map[string]chan struct{} // per store: a slow store holds only its own slots
	slow   map[string]time.Time     // stores that were slow, read around until then
}

// NewObjects returns an object layer.
func NewObjects(cfg ObjectsConfig) (*Objects, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("store: object layer needs a client")
	}
	if cfg.HedgeAfter <= 0 {
		cfg.HedgeAfter = DefaultHedgeAfter
	}
	if cfg.StragglerWait <= 0 {
		cfg.StragglerWait = DefaultStragglerWait
	}
	if cfg.ShardTimeout <= 0 {
		cfg.ShardTimeout = DefaultShardTimeout
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Objects{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "objects"),
		codecs: map[codec.Scheme]*codec.Codec{},
		sems:   map[string]chan struct{}{},
		slow:   map[string]time.Time{},
	}, nil
}

func (o *Objects) codec(s codec.Scheme) (*codec.Codec, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c, ok := o.codecs[s]; ok {
		return c, nil
	}
	c, err := codec.New(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	o.codecs[s] = c
	return c, nil
}

// AvoidFor is how long reads go around a store after it was slower than
// HedgeAfter (it is still used when nothing else is left).
const AvoidFor = 10 * time.Second

func (o *Objects) avoid(addr string) {
	o.mu.Lock()
	o.slow[addr] = time.Now().Add(AvoidFor)
	o.mu.Unlock()
}

func (o *Objects) avoided(addr string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	until, ok := o.slow[addr]
	if ok && time.Now().After(until) {
		delete(o.slow, addr)
		return false
	}
	return ok
}

// acquire takes one of the MaxInflight request slots of the store at addr.
func (o *Objects) acquire(ctx context.Context, addr string) (release func(), err error) {
	o.mu.Lock()
	sem, ok := o.sems[addr]
	if !ok {
		sem = make(chan struct{}, o.cfg.MaxInflight)
		o.sems[addr] = sem
	}
	o.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Quorum returns the write quorum to use for scheme s when q is asked for:
// 0 means the default k+1; it is never below k nor above k+m.
func Quorum(s codec.Scheme, q int) int {
	if q == 0 {
		q = s.K + 1
	}
	return min(max(q, s.K), s.Shards())
}

// Write encodes data as object obj (obj.Length is ignored and taken from
// data) and stores its shards on obj.Placement in parallel. It returns once
// at least quorum shards (see Quorum) are stored, after waiting up to
// StragglerWait for the rest; Results[i] is the outcome of shard i (unplaced,
// failed and straggling shards have an error: they are missing). Below the
// quorum it returns a *WriteError (wrapping ErrWriteQuorum) and removes, best
// effort, the shards it did store.
func (o *Objects) Write(ctx context.Context, obj Object, data []byte, quorum int) ([]ShardResult, error) {
	obj.Length = int64(len(data))
	if err := obj.check(); err != nil {
		return nil, err
	}
	c, err := o.codec(obj.Scheme)
	if err != nil {
		return nil, err
	}
	quorum = Quorum(obj.Scheme, quorum)
	enc, err := c.Encode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	n := obj.Scheme.Shards()
	results := make([]ShardResult, n)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan ShardResult, n)
	pending := 0
	for i, addr := range obj.Placement {
		results[i] = ShardResult{Index: i, Addr: addr, Err: ErrUnplaced}
		if addr == "" {
			continue
		}
		pending++
		go func(i int, addr string) {
			ctx, cancel := context.WithTimeout(pctx, o.cfg.ShardTimeout)
			defer cancel()
			release, err := o.acquire(ctx, addr)
			if err == nil {
				err = o.cfg.Client.Put(ctx, addr, ShardKey{obj.ID, i}, obj.Scheme, obj.Length, enc.Shards[i], enc.Sums[i])
				release()
			}
			done <- ShardResult{Index: i, Addr: addr, Err: err}
		}(i, addr)
	}
	ok := 0
	var straggle <-chan time.Time
	for pending > 0 {
		select {
		case r := <-done:
			pending--
			results[r.Index] = r
			if r.Err == nil {
				ok++
			}
			if ok == quorum && pending > 0 {
				t := time.NewTimer(o.cfg.StragglerWait)
				defer t.Stop()
				straggle = t.C
			}
			continue
		case <-straggle:
		case <-ctx.Done():
		}
		break
	}
	if pending > 0 {
		cancel()
		for ; pending > 0; pending-- { // the puts end at once now
			r := <-done
			if r.Err == nil {
				ok++
				results[r.Index] = r
			} else {
				results[r.Index] = ShardResult{Index: r.Index, Addr: r.Addr, Err: fmt.Errorf("%w: %s: no answer in time: %v", ErrUnavailable, r.Addr, r.Err)}
			}
		}
	}
	if ok < quorum {
		o.cleanup(ctx, obj.ID, results)
		return results, &WriteError{Object: obj.ID, Quorum: quorum, Results: results}
	}
	return results, nil
}

// cleanup deletes the shards of a failed write, best effort, within a few
// seconds even if ctx is already done.
func (o *Objects) cleanup(ctx context.Context, id ObjectID, results []ShardResult) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range results {
		if r.Err != nil {
			continue
		}
		wg.Add(1)
		go func(r ShardResult) {
			defer wg.Done()
			if err := o.cfg.Client.Delete(ctx, r.Addr, ShardKey{id, r.Index}); err != nil {
				o.log.Warn("could not remove shard of a failed write; GC will", "object", id, "shard", r.Index, "store", r.Addr, "err", err)
			}
		}(r)
	}
	wg.Wait()
}

// Delete removes every placed shard of an object. Shards already gone are not
// an error; the first other failure is returned after trying them all.
func (o *Objects) Delete(ctx context.Context, obj Object) error {
	var first error
	for i, addr := range obj.Placement {
		if addr == "" {
			continue
		}
		err := o.cfg.Client.Delete(ctx, addr, ShardKey{obj.ID, i})
		if err != nil && !isNotFound(err) && first == nil {
			first = err
		}
	}
	return first
}

// Rebuild recreates shards of obj on new stores: it reads the object (from
// any k good shards, reconstructing as needed), encodes it again and writes
// shard shards[i] to to[i]. Results[i] is the outcome for shards[i]. The
// object's placement in obj is where it is read from.
func (o *Objects) Rebuild(ctx context.Context, obj Object, shards []int, to []string) ([]ShardResult, error) {
	if len(shards) != len(to) {
		return nil, fmt.Errorf("%w: %d shards to rebuild onto %d stores", ErrInvalidArgument, len(shards), len(to))
	}
	if err := obj.check(); err != nil {
		return nil, err
	}
	data := make([]byte, obj.Length)
	if _, _, err := o.ReadAt(ctx, obj, data, 0); err != nil {
		return nil, err
	}
	c, err := o.codec(obj.Scheme)
	if err != nil {
		return nil, err
	}
	enc, err := c.Encode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	results := make([]ShardResult, len(shards))
	var wg sync.WaitGroup
	for i, idx := range shards {
		if idx < 0 || idx >= obj.Scheme.Shards() || to[i] == "" {
			results[i] = ShardResult{Index: idx, Addr: to[i], Err: fmt.Errorf("%w: shard %d to %q", ErrInvalidArgument, idx, to[i])}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := o.cfg.Client.Put(ctx, to[i], ShardKey{obj.ID, idx}, obj.Scheme, obj.Length, enc.Shards[idx], enc.Sums[idx])
			results[i] = ShardResult{Index: idx, Addr: to[i], Err: err}
		}()
	}
	wg.Wait()
	return results, nil
}
