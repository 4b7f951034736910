package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
)

// Read reads file ino at off into p: committed data, with what this mount
// wrote and has not committed yet laid over it (read-after-write). It
// returns fewer bytes only at the end of the file.
func (f *FS) Read(ctx context.Context, ino uint64, p []byte, off int64) (int, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	in := f.inode(ino)
	in.mu.Lock()
	if in.attr == nil {
		in.mu.Unlock()
		if _, errno := f.GetAttr(ctx, ino); errno != 0 {
			return 0, errno
		}
		in.mu.Lock()
	}
	size := in.size()
	if uint64(off) >= size {
		in.mu.Unlock()
		return 0, 0
	}
	p = p[:min(uint64(len(p)), size-uint64(off))]
	var over []*buf
	for _, u := range in.pending {
		over = append(over, u.buf)
	}
	for _, b := range in.dirty {
		over = append(over, b)
	}
	in.mu.Unlock()
	if errno := f.readCommitted(ctx, in, p, off); errno != 0 {
		return 0, errno
	}
	// Under the lock: a buffer still dirty may be written (and grown) by a
	// concurrent Write; sealed ones no longer change.
	in.mu.Lock()
	for _, b := range over {
		b.overlay(p, off)
	}
	in.mu.Unlock()
	return len(p), 0
}

// readahead is how many blocks past a sequential read are fetched ahead.
const readahead = 2

// readCommitted fills p with the committed content of the file at off.
// Sequential reads go through whole-block reads (read ahead); others read
// just the bytes asked for.
func (f *FS) readCommitted(ctx context.Context, in *inode, p []byte, off int64) syscall.Errno {
	first, last := uint64(off/BlockSize), uint64((off+int64(len(p))-1)/BlockSize)
	in.mu.Lock()
	size := in.size()
	seq := size > 256<<10 && (off == in.lastRead || len(p) >= 128<<10)
	in.lastRead = off + int64(len(p))
	ver := in.cacheVer
	in.mu.Unlock()
	if !seq {
		return f.readRange(ctx, in, p, off)
	}
	for blk := first; blk <= last; blk++ {
		data, errno := f.block(ctx, in, blk, ver, size)
		if errno != 0 {
			return errno
		}
		bstart := int64(blk) * BlockSize
		lo, hi := max(off, bstart), min(off+int64(len(p)), bstart+BlockSize)
		n := 0
		if lo-bstart < int64(len(data)) {
			n = copy(p[lo-off:hi-off], data[lo-bstart:min(hi-bstart, int64(len(data)))])
		}
		clear(p[lo-off+int64(n) : hi-off])
	}
	for blk := last + 1; blk <= last+readahead && int64(blk)*BlockSize < int64(size); blk++ {
		go f.block(context.WithoutCancel(ctx), in, blk, ver, size)
	}
	return 0
}

// maxCachedBlocks bounds the whole blocks a file keeps read ahead.
const maxCachedBlocks = 8

// blockFetch is a whole-block read in progress or done.
type blockFetch struct {
	done  chan struct{}
	data  []byte
	errno syscall.Errno
}

// block returns the committed content of block blk up to the file's size
// (what lies past it reads as zeros), from the cache when version ver is
// still current.
func (f *FS) block(ctx context.Context, in *inode, blk uint64, ver uint64, size uint64) ([]byte, syscall.Errno) {
	bstart := blk * BlockSize
	if bstart >= size {
		return nil, 0
	}
	length := min(BlockSize, size-bstart)
	in.mu.Lock()
	if in.cacheVer != ver {
		in.mu.Unlock()
		data := make([]byte, length)
		return data, f.readRange(ctx, in, data, int64(bstart))
	}
	if in.fetches == nil {
		in.fetches = map[uint64]*blockFetch{}
	}
	bf := in.fetches[blk]
	if bf == nil {
		if len(in.fetches) >= maxCachedBlocks {
			for b := range in.fetches {
				if b < blk {
					delete(in.fetches, b)
				}
			}
			for b := range in.fetches {
				if len(in.fetches) < maxCachedBlocks {
					break
				}
				delete(in.fetches, b)
			}
		}
		bf = &blockFetch{done: make(chan struct{})}
		in.fetches[blk] = bf
		in.mu.Unlock()
		bf.data = make([]byte, length)
		bf.errno = f.readRange(ctx, in, bf.data, int64(bstart))
		close(bf.done)
		if bf.errno != 0 {
			in.mu.Lock()
			if in.fetches[blk] == bf {
				delete(in.fetches, blk)
			}
			in.mu.Unlock()
		}
	} else {
		in.mu.Unlock()
	}
	select {
	case <-bf.done:
	case <-ctx.Done():
		return nil, syscall.EINTR
	}
	return bf.data, bf.errno
}

// readTask is one object range to read into dst.
type readTask struct {
	object uint64
	objOff int64
	dst    []byte
}

// readRange fills p with the committed content at off, reading only the
// object ranges that hold it.
func (f *FS) readRange(ctx context.Context, in *inode, p []byte, off int64) syscall.Errno {
	errno := f.readRangeOnce(ctx, in, p, off, true)
	if errno == errStaleSlices {
		// An object of the cached slices is gone: the block was rewritten
		// (compacted, or overwritten elsewhere) and its old objects
		// deleted. Read the slices again.
		in.mu.Lock()
		in.invalidate()
		in.mu.Unlock()
		errno = f.readRangeOnce(ctx, in, p, off, false)
	}
	return errno
}

// errStaleSlices is readRangeOnce's answer when an object the slices name
// has no record any more (and it may say so).
const errStaleSlices = syscall.Errno(0x7fff)

// readRangeOnce is readRange with the slices as cached; with mayBeStale, a
// missing object record is answered errStaleSlices.
func (f *FS) readRangeOnce(ctx context.Context, in *inode, p []byte, off int64, mayBeStale bool) syscall.Errno {
	first, last := uint64(off/BlockSize), uint64((off+int64(len(p))-1)/BlockSize)
	if len(p) == 0 {
		return 0
	}
	sl, inline, errno := f.blockSlices(ctx, in, first, last)
	if errno != 0 {
		return errno
	}
	var tasks []readTask
	for blk := first; blk <= last; blk++ {
		bstart := int64(blk) * BlockSize
		lo, hi := max(off, bstart)-bstart, min(off+int64(len(p)), bstart+BlockSize)-bstart
		uncovered := []span{{int(lo), int(hi)}}
		ss := sl[blk]
		for i := len(ss) - 1; i >= 0 && len(uncovered) > 0; i-- {
			s := ss[i]
			slo, shi := int(s.Off), int(s.Off+s.Len)
			var rest []span
			for _, u := range uncovered {
				a, b := max(u.lo, slo), min(u.hi, shi)
				if a >= b {
					rest = append(rest, u)
					continue
				}
				tasks = append(tasks, readTask{object: s.Object, objOff: int64(s.ObjOff) + int64(a-slo),
					dst: p[bstart+int64(a)-off : bstart+int64(b)-off]})
				if u.lo < a {
					rest = append(rest, span{u.lo, a})
				}
				if b < u.hi {
					rest = append(rest, span{b, u.hi})
				}
			}
			uncovered = rest
		}
		for _, u := range uncovered {
			dst := p[bstart+int64(u.lo)-off : bstart+int64(u.hi)-off]
			clear(dst)
			if blk == 0 && u.lo < len(inline) {
				copy(dst, inline[u.lo:min(u.hi, len(inline))])
			}
		}
	}
	if len(tasks) == 0 {
		return 0
	}
	ids := make([]uint64, 0, len(tasks))
	for _, t := range tasks {
		ids = append(ids, t.object)
	}
	objs, err := f.objCache.get(ctx, f, ids)
	if err != nil {
		if mayBeStale && errors.Is(err, errNoRecord) {
			return errStaleSlices
		}
		return f.ioErr("object lookup", err)
	}
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.readObject(ctx, objs[t.object], t.objOff, t.dst)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if mayBeStale && errors.Is(err, errNoRecord) && ctx.Err() == nil {
			return errStaleSlices
		}
	}
	for i, err := range errs {
		if err != nil {
			f.log.Error("read failed", "ino", in.ino, "object", tasks[i].object, "err", err)
			if ctx.Err() != nil {
				return syscall.EINTR
			}
			return syscall.EIO
		}
	}
	return 0
}

// readObject reads len(dst) bytes of obj at off. A failure is tried once
// more with the object's record read again from the leader: the record may
// come from a member that is behind, or the healer may have moved shards
// since it was cached. The shards either attempt found corrupt or missing
// are reported to the healer (report.go), without waiting.
func (f *FS) readObject(ctx context.Context, obj *store.Object, off int64, dst []byte) error {
	n, bad, err := f.objs.ReadAt(ctx, *obj, dst, off)
	f.reportBad(uint64(obj.ID), bad)
	if err != nil && ctx.Err() == nil {
		fresh, rerr := f.objCache.refresh(ctx, f, uint64(obj.ID))
		if rerr != nil {
			return fmt.Errorf("%w (and reading its record again: %w)", err, rerr)
		}
		n, bad, err = f.objs.ReadAt(ctx, *fresh, dst, off)
		f.reportBad(uint64(fresh.ID), bad)
	}
	if err != nil {
		return err
	}
	clear(dst[n:]) // a slice never points past its object; be safe anyway
	return nil
}

// blockSlices returns the slices of blocks first..last of the file and its
// inline data, from the cache when it is current.
func (f *FS) blockSlices(ctx context.Context, in *inode, first, last uint64) (map[uint64][]*metapb.BlockWrite, []byte, syscall.Errno) {
	in.mu.Lock()
	out := make(map[uint64][]*metapb.BlockWrite, last-first+1)
	var missing []uint64
	for blk := first; blk <= last; blk++ {
		ss, ok := in.slices[blk]
		if !ok {
			missing = append(missing, blk)
		}
		out[blk] = ss
	}
	inline, have := in.inline, in.haveInline
	ver := in.cacheVer
	in.mu.Unlock()
	if len(missing) == 0 && have {
		return out, inline, 0
	}
	f.jr.waitFor(in.ino) // the file's own changes written behind, not everyone's
	r, errno := f.query(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: in.ino, Blocks: missing}}})
	if errno != 0 {
		return nil, nil, errno
	}
	for _, b := range r.Blocks {
		out[b.Block] = b.Slices
	}
	in.mu.Lock()
	if in.cacheVer == ver {
		if in.slices == nil {
			in.slices = map[uint64][]*metapb.BlockWrite{}
		}
		if len(in.slices) > 4096 {
			clear(in.slices)
		}
		for _, b := range r.Blocks {
			in.slices[b.Block] = b.Slices
		}
		in.inline, in.haveInline = r.Inline, true
	}
	in.mu.Unlock()
	return out, r.Inline, 0
}

// errNoRecord: an object has no record (it was deleted).
var errNoRecord = errors.New("no object record")

// objectCache keeps object records (immutable but for shard moves).
type objectCache struct {
	mu sync.Mutex
	m  map[uint64]*store.Object
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
func (c *objectCache) get(ctx context.Context, f *FS, ids []uint64) (map[uint64]*store.Object, error) {
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
	if err := c.fetch(ctx, f, missing, true, out); err != nil {
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
	if err := c.fetch(ctx, f, behind, false, out); err != nil {
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
func (c *objectCache) refresh(ctx context.Context, f *FS, id uint64) (*store.Object, error) {
	c.drop(id)
	out := make(map[uint64]*store.Object, 1)
	if err := c.fetch(ctx, f, []uint64{id}, false, out); err != nil {
		return nil, err
	}
	if out[id] == nil {
		return nil, fmt.Errorf("object %016x: %w", id, errNoRecord)
	}
	return out[id], nil
}

// fetch asks the service for the records of ids (any member may answer
// when stale, else the leader) and adds those it has to out and the cache.
func (c *objectCache) fetch(ctx context.Context, f *FS, ids []uint64, stale bool, out map[uint64]*store.Object) error {
	r, errno := f.query(ctx, &metapb.ReadReq{Stale: stale, Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: ids}}})
	if errno != 0 {
		return fmt.Errorf("reading object records: %w", errno)
	}
	for _, rec := range r.Objects {
		o := &store.Object{ID: store.ObjectID(rec.Id), Scheme: f.scheme, Length: rec.Length, Placement: rec.Stores}
		out[rec.Id] = o
		c.put(rec.Id, o)
	}
	return nil
}

// placer hands out placements for new objects, fetched in batches, and
// skips the ones that name too many stores that just failed.
type placer struct {
	fs    *FS
	mu    sync.Mutex
	queue []*metapb.Placement
	at    time.Time
	down  map[string]time.Time // store addr → failed until
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
// failing, asking the service for more as needed.
func (p *placer) get(ctx context.Context, quorum int) (*metapb.Placement, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for tries := 0; tries < 8; tries++ {
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
		r, err := p.fs.meta.Place(cctx, placeBatch)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("asking for a placement: %w", err)
		}
		p.queue, p.at = r.Placements, time.Now()
	}
	return nil, fmt.Errorf("no placement with %d working stores", quorum)
}
