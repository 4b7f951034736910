package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/fs/internal/lockorder"
	"github.com/ecfs/ecfs/store"
)

// read reads file ino at off into p: committed data, with what this mount
// wrote and has not committed yet laid over it (read-after-write). It
// returns fewer bytes only at the end of the file.
func (d *dataPlane) read(ctx context.Context, ino uint64, p []byte, off int64) (int, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	in := d.inodes.get(ino)
	in.mu.Lock()
	if in.attr == nil {
		in.mu.Unlock()
		if _, errno := d.view.getAttr(ctx, ino); errno != 0 {
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
	whole := overlaid(over, off, int64(len(p)))
	in.mu.Unlock()
	if !whole {
		// (A range this mount wrote whole needs nothing committed: its
		// commit may still wait for the data to be stored.)
		if errno := d.readCommitted(ctx, in, p, off); errno != 0 {
			return 0, errno
		}
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

// overlaid reports whether the buffers bs hold every byte of the file's
// range [off, off+n).
func overlaid(bs []*buf, off, n int64) bool {
	var ext []span // offsets past off, clamped to n
	for _, b := range bs {
		bstart := int64(b.block) * BlockSize
		for _, e := range b.ext {
			lo, hi := max(bstart+int64(e.lo)-off, 0), min(bstart+int64(e.hi)-off, n)
			if lo < hi {
				ext = append(ext, span{int(lo), int(hi)})
			}
		}
	}
	slices.SortFunc(ext, func(a, b span) int { return a.lo - b.lo })
	done := 0 // [0, done) is held
	for _, e := range ext {
		if e.lo > done {
			return false
		}
		done = max(done, e.hi)
	}
	return int64(done) >= n
}

// readahead is how many blocks past a sequential read are fetched ahead.
const readahead = 2

// readCommitted fills p with the committed content of the file at off.
// Sequential reads go through whole-block reads (read ahead); others read
// just the bytes asked for.
func (d *dataPlane) readCommitted(ctx context.Context, in *inode, p []byte, off int64) syscall.Errno {
	first, last := uint64(off/BlockSize), uint64((off+int64(len(p))-1)/BlockSize)
	in.mu.Lock()
	size := in.size()
	seq := size > 256<<10 && (off == in.lastRead || len(p) >= 128<<10)
	held := first == 0 && last == 0 && in.fetches[0] != nil // read ahead (readAheadFiles) or cached
	in.lastRead = off + int64(len(p))
	ver := in.cacheVer
	in.mu.Unlock()
	if off == 0 {
		defer d.readAheadFiles(in) // once this read's slices query prefetched theirs
	}
	if !seq && !held {
		return d.readRange(ctx, in, p, off)
	}
	if held && uint64(off)+uint64(len(p)) >= size {
		defer d.dropAhead(in) // read to its end: the kernel keeps it now
	}
	for blk := first; blk <= last; blk++ {
		data, errno := d.block(ctx, in, blk, ver, size)
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
		go d.block(context.WithoutCancel(ctx), in, blk, ver, size)
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
	ahead bool // started before the file was read (readAheadFiles)
}

// block returns the committed content of block blk up to the file's size
// (what lies past it reads as zeros), from the cache when version ver is
// still current.
func (d *dataPlane) block(ctx context.Context, in *inode, blk uint64, ver uint64, size uint64) ([]byte, syscall.Errno) {
	bstart := blk * BlockSize
	if bstart >= size {
		return nil, 0
	}
	length := min(BlockSize, size-bstart)
	in.mu.Lock()
	if in.cacheVer != ver {
		in.mu.Unlock()
		data := make([]byte, length)
		return data, d.readRange(ctx, in, data, int64(bstart))
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
		d.data.keep(in, blk, bf, int64(length))
		bf.data = make([]byte, length)
		bf.errno = d.readRange(ctx, in, bf.data, int64(bstart))
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
func (d *dataPlane) readRange(ctx context.Context, in *inode, p []byte, off int64) syscall.Errno {
	errno := d.readRangeOnce(ctx, in, p, off, true)
	if errno == errStaleSlices {
		// An object of the cached slices is gone: the block was rewritten
		// (compacted, or overwritten elsewhere) and its old objects
		// deleted. Read the slices again.
		in.mu.Lock()
		in.invalidate()
		in.mu.Unlock()
		errno = d.readRangeOnce(ctx, in, p, off, false)
	}
	return errno
}

// errStaleSlices is readRangeOnce's answer when an object the slices name
// has no record any more (and it may say so).
const errStaleSlices = syscall.Errno(0x7fff)

// readRangeOnce is readRange with the slices as cached; with mayBeStale, a
// missing object record is answered errStaleSlices.
func (d *dataPlane) readRangeOnce(ctx context.Context, in *inode, p []byte, off int64, mayBeStale bool) syscall.Errno {
	first, last := uint64(off/BlockSize), uint64((off+int64(len(p))-1)/BlockSize)
	if len(p) == 0 {
		return 0
	}
	sl, inline, errno := d.blockSlices(ctx, in, first, last)
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
	objs, err := d.objCache.get(ctx, ids)
	if err != nil {
		if mayBeStale && errors.Is(err, errNoRecord) {
			return errStaleSlices
		}
		return d.ioErr("object lookup", err)
	}
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.readObject(ctx, objs[t.object], t.objOff, t.dst)
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
			d.log.Error("read failed", "ino", in.ino, "object", tasks[i].object, "err", err)
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
func (d *dataPlane) readObject(ctx context.Context, obj *store.Object, off int64, dst []byte) error {
	n, bad, err := d.objs.ReadAt(ctx, *obj, dst, off)
	d.reportBad(uint64(obj.ID), bad)
	if err != nil && ctx.Err() == nil {
		fresh, rerr := d.objCache.refresh(ctx, uint64(obj.ID))
		if rerr != nil {
			return fmt.Errorf("%w (and reading its record again: %w)", err, rerr)
		}
		n, bad, err = d.objs.ReadAt(ctx, *fresh, dst, off)
		d.reportBad(uint64(fresh.ID), bad)
	}
	if err != nil {
		return err
	}
	clear(dst[n:]) // a slice never points past its object; be safe anyway
	return nil
}

// blockSlices returns the slices of blocks first..last of the file and its
// inline data, from the cache when it is current.
func (d *dataPlane) blockSlices(ctx context.Context, in *inode, first, last uint64) (map[uint64][]*metapb.BlockWrite, []byte, syscall.Errno) {
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
	d.pipe.waitFor(in.ino) // the file's own changes written behind, not everyone's
	block0 := first == 0 && last == 0
	if block0 {
		if sl, inline, ok := d.fromAhead(in, ver); ok {
			out[0] = sl
			return out, inline, 0
		}
	}
	q := &metapb.SlicesReq{Ino: in.ino, Blocks: missing}
	var own map[uint64]uint64
	if block0 {
		q.Prefetch, own = d.next(in)
		q.Records = len(q.Prefetch) > 0
	}
	r, errno := d.pipe.query(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: q}})
	if errno != 0 {
		return nil, nil, errno
	}
	d.objCache.add(r.Objects)
	d.ahead.put(r.Files, own, then(q.Prefetch))
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

// Reading a directory's small files one after another (prefetch.go) still
// waited for each file's data: a round trip to the stores per file. So the
// first read of a file also starts reading, in the background, the data of
// the next aheadFiles small files (up to aheadMax bytes) whose block 0 is
// known (prefetched or cached): the whole file, as a sequential read's
// block (inode.fetches). Their reads then take it, or wait for it if it is
// still on its way. It is a read cache like the others: any change of the
// file drops it (invalidate). It is dropped too once read to its end.
const (
	aheadFiles = 4
	aheadMax   = 256 << 10
)

// Whole blocks read (ahead of sequential reads, or small files ahead of
// their reads) are kept for the mount at most maxFetched bytes, the oldest
// going first: inodes live as long as the kernel knows them, and each kept
// up to maxCachedBlocks blocks, so reading many large files held every
// file's last blocks.
const maxFetched = 64 << 20

// fetchedBlocks is the blocks the inodes keep read, oldest first (some
// already dropped by their inode: those weigh until they go). Its lock is
// a leaf.
type fetchedBlocks struct {
	mu      lockorder.Mutex
	kept    []keptBlock
	bytes   int64
	running chan struct{} // files whose data is being read ahead
}

// size is the bytes of the blocks kept.
func (a *fetchedBlocks) size() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bytes
}

type keptBlock struct {
	in  *inode
	blk uint64
	bf  *blockFetch
	n   int64
}

func (a *fetchedBlocks) init() {
	a.mu.Init(levelFetched, "fetchedBlocks.mu")
	a.running = make(chan struct{}, aheadFiles)
}

// keep adds block blk of in (n bytes), and drops from their inodes the
// oldest blocks over the bound.
func (a *fetchedBlocks) keep(in *inode, blk uint64, bf *blockFetch, n int64) {
	a.mu.Lock()
	a.kept = append(a.kept, keptBlock{in, blk, bf, n})
	a.bytes += n
	var out []keptBlock
	for a.bytes > maxFetched && len(a.kept) > 1 {
		out = append(out, a.kept[0])
		a.bytes -= a.kept[0].n
		a.kept = a.kept[1:]
	}
	if cap(a.kept) > 4*len(a.kept)+64 { // the slice's front is not reused
		a.kept = slices.Clone(a.kept)
	}
	a.mu.Unlock()
	for _, k := range out {
		k.in.mu.Lock()
		if k.in.fetches[k.blk] == k.bf {
			delete(k.in.fetches, k.blk)
		}
		k.in.mu.Unlock()
	}
}

// readAheadFiles starts reading the data of the small files read after in
// (next), those whose block 0 is known and whose data is not held.
func (d *dataPlane) readAheadFiles(in *inode) {
	in.mu.Lock()
	l := in.wb
	in.mu.Unlock()
	var inos []uint64
	if l == nil {
		inos = d.view.reads.nextFiles(in.ino, aheadFiles, aheadMax)
	} else {
		l.emu.Lock()
		if i := l.find(in); i >= 0 {
			for _, c := range l.inodes[i+1 : min(len(l.inodes), i+1+aheadFiles)] {
				inos = append(inos, c.ino)
			}
		}
		l.emu.Unlock()
	}
	for _, ino := range inos {
		c := d.inodes.lookup(ino)
		if c == nil {
			// A file of a read lease's copy the mount keeps nothing of:
			// its attributes come from the copy, as its open's will.
			a, _ := d.view.reads.getAttr(ino)
			if a == nil {
				continue
			}
			c = d.inodes.get(ino)
			d.inodes.remember(a)
		}
		select {
		case d.data.running <- struct{}{}:
		default:
			return // enough on their way
		}
		if !d.startAhead(c) {
			<-d.data.running
		}
	}
}

// startAhead starts reading c's data if it is small, its block 0's slices
// are known (cached, or prefetched and current) and nothing holds it yet.
// It reports whether it started; the read gives back its running slot.
func (d *dataPlane) startAhead(c *inode) bool {
	c.mu.Lock()
	ok := c.attr != nil && c.attr.Type == uint32(namespace.TypeFile) && c.attr.Size > 0 && c.attr.Size <= aheadMax &&
		len(c.dirty) == 0 && len(c.pending) == 0 && c.fetches[0] == nil
	_, known := c.slices[0]
	var size uint64
	if ok {
		size = c.attr.Size
	}
	ver := c.cacheVer
	c.mu.Unlock()
	if !ok {
		return false
	}
	if !known {
		if _, _, ok := d.fromAhead(c, ver); !ok {
			return false
		}
	}
	c.mu.Lock()
	if c.cacheVer != ver || c.fetches[0] != nil {
		c.mu.Unlock()
		return false
	}
	if c.fetches == nil {
		c.fetches = map[uint64]*blockFetch{}
	}
	bf := &blockFetch{done: make(chan struct{}), ahead: true}
	c.fetches[0] = bf
	c.mu.Unlock()
	d.data.keep(c, 0, bf, int64(size))
	go func() {
		defer func() { <-d.data.running }()
		bf.data = make([]byte, size)
		bf.errno = d.readRange(context.Background(), c, bf.data, 0)
		close(bf.done)
		if bf.errno != 0 {
			c.mu.Lock()
			if c.fetches[0] == bf {
				delete(c.fetches, 0)
			}
			c.mu.Unlock()
		}
	}()
	return true
}

// dropAhead drops in's block 0 read ahead, once read to its end.
func (d *dataPlane) dropAhead(in *inode) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if bf := in.fetches[0]; bf != nil && bf.ahead {
		delete(in.fetches, 0)
	}
}
