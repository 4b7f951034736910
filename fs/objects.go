package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// The data plane's view of objects: their records (cached) and the
// placements of new ones.

// errNoRecord: an object has no record (it was deleted).
var errNoRecord = errors.New("no object record")

// objectCache keeps object records (immutable but for shard moves).
type objectCache struct {
	pipe   *pipeline
	scheme codec.Scheme
	mu     lockorder.Mutex
	m      map[uint64]*store.Object
}

const maxCachedObjects = 1 << 16

func (c *objectCache) put(id uint64, o *store.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedObjects {
		clear(c.m)
	}
	c.m[id] = o
}

func (c *objectCache) drop(id uint64) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// get returns the records of ids, asking the service for those not
// cached. Any member may answer (a stale read, the common case); the
// records missing from its answer are asked of the leader, since a member
// that is behind may not have applied a commit another mount just made.
func (c *objectCache) get(ctx context.Context, ids []uint64) (map[uint64]*store.Object, error) {
	out := make(map[uint64]*store.Object, len(ids))
	var missing []uint64
	c.mu.Lock()
	for _, id := range ids {
		if o, ok := c.m[id]; ok {
			out[id] = o
		} else if !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	if err := c.fetch(ctx, missing, true, out); err != nil {
		return nil, err
	}
	var behind []uint64
	for _, id := range missing {
		if out[id] == nil {
			behind = append(behind, id)
		}
	}
	if len(behind) == 0 {
		return out, nil
	}
	if err := c.fetch(ctx, behind, false, out); err != nil {
		return nil, err
	}
	for _, id := range behind {
		if out[id] == nil {
			return nil, fmt.Errorf("object %016x: %w", id, errNoRecord)
		}
	}
	return out, nil
}

// refresh reads the record of id again, from the leader, and caches it.
func (c *objectCache) refresh(ctx context.Context, id uint64) (*store.Object, error) {
	c.drop(id)
	out := make(map[uint64]*store.Object, 1)
	if err := c.fetch(ctx, []uint64{id}, false, out); err != nil {
		return nil, err
	}
	if out[id] == nil {
		return nil, fmt.Errorf("object %016x: %w", id, errNoRecord)
	}
	return out[id], nil
}

// fetch asks the service for the records of ids (any member may answer
// when stale, else the leader) and adds those it has to out and the cache.
func (c *objectCache) fetch(ctx context.Context, ids []uint64, stale bool, out map[uint64]*store.Object) error {
	r, errno := c.pipe.query(ctx, &metapb.ReadReq{Stale: stale, Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: ids}}})
	if errno != 0 {
		return fmt.Errorf("reading object records: %w", errno)
	}
	for id, o := range c.add(r.Objects) {
		out[id] = o
	}
	return nil
}

// add caches records the service answered, and returns them.
func (c *objectCache) add(recs []*metapb.ObjectRecord) map[uint64]*store.Object {
	out := make(map[uint64]*store.Object, len(recs))
	for _, rec := range recs {
		o := &store.Object{ID: store.ObjectID(rec.Id), Scheme: c.scheme, Length: rec.Length, Placement: rec.Stores}
		out[rec.Id] = o
		c.put(rec.Id, o)
	}
	return out
}

// placer hands out placements for new objects, fetched in batches, and
// skips the ones that name too many stores that just failed.
type placer struct {
	meta  Meta
	mu    lockorder.Mutex
	queue []*metapb.Placement
	at    time.Time
	down  map[string]time.Time // store addr → failed until
	// packs: the service's last answer said every member keeps objects
	// several files share (PlaceResp.packs): small files may be packed.
	packs atomic.Bool
}

const (
	placeBatch = 16
	placeTTL   = 2 * time.Second
	badFor     = 10 * time.Second
)

func (p *placer) bad(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down == nil {
		p.down = map[string]time.Time{}
	}
	p.down[addr] = time.Now().Add(badFor)
}

// usable counts the shards of pl on stores not known to have failed. p.mu
// is held.
func (p *placer) usable(pl *metapb.Placement) int {
	n := 0
	for _, a := range pl.Addrs {
		if a != "" && time.Now().After(p.down[a]) {
			n++
		}
	}
	return n
}

// get returns a placement with at least quorum stores not known to be
// failing, asking the service for more as needed. When two fresh batches
// hold none, the stores marked failing are given another chance: the
// service still places shards on them, so they report as up (a store
// restarted a moment ago, while another is down now, would otherwise
// block every write for badFor).
func (p *placer) get(ctx context.Context, quorum int) (*metapb.Placement, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for tries := 0; tries < 8; tries++ {
		if tries == 2 {
			clear(p.down)
		}
		if time.Since(p.at) > placeTTL {
			p.queue = nil
		}
		for len(p.queue) > 0 {
			pl := p.queue[0]
			p.queue = p.queue[1:]
			if p.usable(pl) >= quorum {
				return pl, nil
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := p.meta.Place(cctx, placeBatch)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("asking for a placement: %w", err)
		}
		p.queue, p.at = r.Placements, time.Now()
		p.packs.Store(r.Packs)
	}
	return nil, fmt.Errorf("no placement with %d working stores", quorum)
}
