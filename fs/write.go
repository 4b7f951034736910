package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/fs/internal/lockorder"
	"github.com/ecfs/ecfs/store"
)

// upload is a sealed buffer on its way to the stores and the commit.
type upload struct {
	*buf
	done   chan struct{}
	inline bool // try to write it inline (decided when sealed, under in.mu)
	// slot is its commit's place in the journal, reserved when it was
	// sealed behind (sealBehind); nil: the commit is decided once the data
	// is stored.
	slot *jop
	// pack: the pack it is stored in (small and written behind), its
	// place there, and whether it opened it (then it stores it).
	pack   *pack
	member packMember
	opened bool
}

func (d *dataPlane) write(ctx context.Context, ino, sess uint64, data []byte, off int64) (int, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if uint64(off)+uint64(len(data)) > 1<<62 {
		return 0, syscall.EFBIG
	}
	if len(data) == 0 {
		return 0, 0 // write(2) of nothing: the size stays
	}
	in := d.inodes.get(ino)
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.werr != nil {
		// A background upload of this file failed: report it now rather
		// than accept more data that cannot be kept either.
		in.werr = nil
		return 0, syscall.EIO
	}
	written := 0
	var credit int64 // budget taken while the lock was let go, not used yet
	defer func() { d.mem.release(credit) }()
	for written < len(data) {
		pos := off + int64(written)
		blk := uint64(pos / BlockSize)
		boff := int(pos % BlockSize)
		n := min(len(data)-written, BlockSize-boff)
		need := d.writeBlock(in, sess, blk, boff, data[written:written+n], &credit)
		if need > 0 {
			// Out of buffer memory: this file's buffers are uploading
			// now. Wait for memory without the inode's lock, which the
			// uploads need to finish; then try the same piece again.
			in.mu.Unlock()
			d.acquire(need)
			in.mu.Lock()
			credit += need
			continue
		}
		written += n
	}
	in.localSize = max(in.localSize, uint64(off)+uint64(len(data)))
	return written, 0
}

// writeBlock copies p into the buffer of block blk at block offset boff,
// paying for buffer growth from *credit or the budget. When the budget has
// no room it uploads the file's buffers and returns the bytes to wait for
// (nothing was written); otherwise 0. A buffer written under another
// session than sess is sealed first: each is committed under its own.
// in.mu is held.
func (d *dataPlane) writeBlock(in *inode, sess, blk uint64, boff int, p []byte, credit *int64) int64 {
	lo, hi := boff, boff+len(p)
	b := in.dirty[blk]
	if b != nil && (b.sess != sess || len(b.ext) >= maxSpans && !covers(b.ext, lo, hi)) {
		d.seal(in, b)
		b = nil
	}
	if b == nil {
		b = &buf{block: blk, sess: sess, base: lo}
	}
	nlo, nhi := min(b.base, lo), max(b.end(), hi)
	if nlo != b.base || nhi > b.base+cap(b.data) {
		// Grow: to the next power of two of the span (at least 8 KiB,
		// at most the block), so appends copy O(log n) times.
		size := growSize(nlo, nhi)
		grow := max(int64(size)-int64(cap(b.data)), 0)
		switch {
		case grow <= *credit:
			*credit -= grow
		case d.mem.tryAcquire(grow - *credit):
			*credit = 0
		default:
			// Upload what this file holds, this buffer too; the caller
			// waits for a new buffer's worth of memory.
			if in.dirty[blk] == b {
				d.seal(in, b)
			}
			d.sealAll(in)
			return int64(growSize(lo, hi))
		}
		nd := make([]byte, nhi-nlo, size)
		copy(nd[b.base-nlo:], b.data)
		b.data, b.base = nd, nlo
		b.acct += grow
	} else if nhi > b.end() {
		b.data = b.data[:nhi-b.base]
	}
	in.dirty[blk] = b
	copy(b.data[lo-b.base:], p)
	b.ext = addSpan(b.ext, lo, hi)
	if len(b.ext) == 1 && b.ext[0] == (span{0, BlockSize}) {
		d.seal(in, b)
	}
	return 0
}

// seal takes buffer b out of the dirty set and starts its upload. Uploads
// of one file commit in the order they were sealed. in.mu is held.
func (d *dataPlane) seal(in *inode, b *buf) {
	d.start(in, b, nil)
}

// goesInline reports whether b is to be written inline. in.mu is held.
func (d *dataPlane) goesInline(in *inode, b *buf) bool {
	return b.block == 0 && b.end() <= d.cfg.InlineMax && in.inlineOK(d.cfg.InlineMax)
}

// start takes b out of the dirty set and starts its upload, its commit
// going to the place slot reserved in the journal (nil: decided when
// stored). in.mu is held.
func (d *dataPlane) start(in *inode, b *buf, slot *jop) {
	delete(in.dirty, b.block)
	u := &upload{buf: b, done: make(chan struct{}), inline: slot == nil && d.goesInline(in, b), slot: slot}
	if slot != nil && d.places.packs.Load() && d.pack.fits(b) {
		// Written behind and small: stored with others (pack.go),
		// gathered in the order they are sealed.
		u.pack, u.member, u.opened = d.pack.add(b)
	}
	prev := in.last
	in.last = u.done
	in.pending = append(in.pending, u)
	go d.runUpload(in, u, prev)
}

// sealAll starts the upload of every buffer of in. in.mu is held.
func (d *dataPlane) sealAll(in *inode) {
	blocks := make([]uint64, 0, len(in.dirty))
	for blk := range in.dirty {
		blocks = append(blocks, blk)
	}
	slices.Sort(blocks)
	for _, blk := range blocks {
		d.seal(in, in.dirty[blk])
	}
}

// sealBehind starts the upload of every buffer of a file written under a
// directory lease without waiting for it (close, or a change of its
// attributes): each slice commit takes its place in the journal now, after
// every change the mount decided before and before every change it decides
// next, and the journal's sender waits there until the data is stored.
// Whoever needs the data applied waits for the journal: fsync, the lease's
// give-back (another mount's access: close-to-open), a read of the file's
// committed slices. The mount's attributes of the file take the new size at
// once. It seals nothing and reports false when the data cannot go that way:
// the file is not the mount's (no lease), a buffer was written under another
// session or goes inline (small files are journaled as they are), or an
// upload of the file still running commits when stored (its commit would
// come after the places reserved now).
func (d *dataPlane) sealBehind(in *inode) bool {
	l := d.view.leases.eligible(in)
	if l == nil {
		return false
	}
	defer l.mu.RUnlock()
	in.jmu.Lock() // no change of the file decided meanwhile goes between
	defer in.jmu.Unlock()
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb != l || in.attr == nil {
		return false
	}
	for _, u := range in.pending {
		if u.slot == nil {
			return false
		}
	}
	blocks := make([]uint64, 0, len(in.dirty))
	for blk, b := range in.dirty {
		if b.sess != l.sess || d.goesInline(in, b) {
			return false
		}
		blocks = append(blocks, blk)
	}
	if len(blocks) == 0 {
		return true
	}
	slices.Sort(blocks)
	now := time.Now().UnixNano()
	for _, blk := range blocks {
		b := in.dirty[blk]
		end := uint64(b.block)*BlockSize + uint64(b.ext[len(b.ext)-1].hi)
		in.changeLocal(func(a *metapb.Attr) {
			a.Size = max(a.Size, end)
			a.Mtime, a.Ctime = now, now
		})
		d.start(in, b, d.pipe.reserve(l.sess, in.ino))
	}
	in.cacheVer = in.attr.Version
	in.hasBlocks = true
	return true
}

// relieve uploads the buffers of every file whose lock is free: called when
// a writer waits for buffer memory.
func (d *dataPlane) relieve() {
	d.pack.flush() // the buffers gathered there hold memory too
	for _, in := range d.inodes.all() {
		if in.mu.TryLock() {
			d.sealAll(in)
			in.mu.Unlock()
		}
	}
}

// runUpload writes u's data as objects (or inline into the inode), waits
// for the uploads sealed before it, and commits.
func (d *dataPlane) runUpload(in *inode, u *upload, prev chan struct{}) {
	ctx := context.Background()
	var (
		res *metapb.Result
		err error
	)
	// The buffer's memory is given back once it is committed (until then
	// it is also a read overlay). No inode lock is taken before that: the
	// budget's releasers must never wait for a lock; writers wait for
	// memory without holding one.
	inline := u.inline
	if inline {
		if prev != nil {
			<-prev
		}
		res, err = d.commitInline(ctx, in, u.buf)
		if errors.Is(err, errNotInline) {
			inline, err = false, nil
		}
	}
	if !inline {
		var cmd *metapb.CommitOp
		if u.pack != nil {
			cmd, err = d.storePacked(ctx, in.ino, u)
		} else {
			d.uploads <- struct{}{} // a slot only while storing: never held waiting for prev
			cmd, err = d.writeObjects(ctx, in.ino, u.buf)
			<-d.uploads
		}
		if prev != nil {
			<-prev
		}
		switch {
		case u.slot != nil && err == nil:
			cmd.Session = u.sess
			d.pipe.fill(u.slot, &metapb.Command{Op: &metapb.Command_Commit{Commit: cmd}})
		case u.slot != nil:
			d.pipe.fill(u.slot, nil)
		case err == nil:
			res, err = d.commit(ctx, in, cmd, u.buf)
		}
	}
	d.mem.release(u.acct)
	in.mu.Lock()
	in.pending = slices.DeleteFunc(in.pending, func(p *upload) bool { return p == u })
	if err != nil {
		d.log.Error("upload failed: the data is reported lost to the writer (EIO on fsync/close)", "ino", in.ino, "block", u.block, "err", err)
		if in.werr == nil {
			in.werr = err
		}
		in.errs++
	} else if res != nil {
		in.setAttr(res.Attr)
	}
	in.invalidate()
	if len(in.pending) == 0 && len(in.dirty) == 0 {
		// Everything written here is committed (or reported lost): the
		// service's size holds, even if another mount truncated since.
		in.localSize = 0
	}
	in.mu.Unlock()
	close(u.done)
}

var errNotInline = errors.New("not inline")

// commitInline writes b into the inode's inline data, one range per
// extent, in one Raft entry each (or through the journal, without waiting
// for it: then the result is nil).
func (d *dataPlane) commitInline(ctx context.Context, in *inode, b *buf) (*metapb.Result, error) {
	ino := in.ino
	if len(b.ext) == 1 {
		e := b.ext[0]
		cmd := &metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{
			Session: b.sess, Ino: ino, Off: uint64(e.lo), Data: b.data[e.lo-b.base : e.hi-b.base]}}}
		if d.view.commit(in, b.sess, cmd, uint64(e.hi), false) {
			return nil, nil
		}
	}
	var res *metapb.Result
	for _, e := range b.ext {
		r, errno := d.view.change(ctx, &metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{
			Session: b.sess, Ino: ino, Off: uint64(e.lo), Data: b.data[e.lo-b.base : e.hi-b.base]}}})
		switch errno {
		case 0:
			res = r
		case syscall.EINVAL, syscall.EFBIG:
			if res == nil {
				return nil, errNotInline
			}
			return nil, fmt.Errorf("inline write of inode %d: %w", ino, errno)
		default:
			return nil, fmt.Errorf("inline write of inode %d: %w", ino, errno)
		}
	}
	return res, nil
}

// writeObjects stores b as one object per scheme block and returns the
// commit that makes it visible: one slice per extent.
func (d *dataPlane) writeObjects(ctx context.Context, ino uint64, b *buf) (*metapb.CommitOp, error) {
	cmd := &metapb.CommitOp{Ino: ino}
	osz := d.scheme.BlockSize
	for start := 0; start < len(b.data); start += osz {
		chunk := b.data[start:min(start+osz, len(b.data))]
		clo, chi := b.base+start, b.base+start+len(chunk)
		var parts []span
		for _, e := range b.ext {
			if lo, hi := max(e.lo, clo), min(e.hi, chi); lo < hi {
				parts = append(parts, span{lo, hi})
			}
		}
		if len(parts) == 0 {
			continue
		}
		rec, err := d.writeObject(ctx, chunk)
		if err != nil {
			return nil, err
		}
		cmd.Objects = append(cmd.Objects, rec)
		for _, p := range parts {
			cmd.Writes = append(cmd.Writes, &metapb.BlockWrite{Block: b.block, Off: uint32(p.lo), Len: uint32(p.hi - p.lo),
				Object: rec.Id, ObjOff: uint32(p.lo - clo)})
		}
	}
	return cmd, nil
}

// storePacked stores u, of file ino, in its pack with other small buffers
// written behind and returns the file's commit. The upload that opened the
// pack waits up to packLinger for others (less if the pack fills, or
// someone waits for the journal, for uploads or for memory) and stores it,
// holding an upload slot; the others wait for it.
func (d *dataPlane) storePacked(ctx context.Context, ino uint64, u *upload) (*metapb.CommitOp, error) {
	pk := u.pack
	if u.opened {
		select {
		case <-d.pipe.waiting: // a wait that began before: over, or counted next
		default:
		}
		if !d.pipe.waited() {
			t := time.NewTimer(d.pack.linger)
			select {
			case <-pk.sealed:
			case <-t.C:
			case <-d.pipe.waiting:
			}
			t.Stop()
		}
		// Sealed before waiting for a slot (whoever hurried it waits
		// for no more members), copied after: packs waiting for a slot
		// hold no copy of their data.
		d.pack.seal(pk)
		d.uploads <- struct{}{}
		pk.rec, pk.err = d.writeObject(ctx, pk.data())
		<-d.uploads
		close(pk.done)
	}
	<-pk.done
	if pk.err != nil {
		return nil, pk.err
	}
	return u.member.commit(ino, pk), nil
}

// writeObject stores data as a new object on a fresh placement, trying
// other placements while the write quorum is not reached, for up to
// Config.WriteTimeout.
func (d *dataPlane) writeObject(ctx context.Context, data []byte) (*metapb.ObjectRecord, error) {
	deadline := time.Now().Add(d.cfg.WriteTimeout)
	quorum := store.Quorum(d.scheme, d.cfg.Quorum)
	var noPlace failures
	for attempt := 0; ; attempt++ {
		p, err := d.places.get(ctx, quorum)
		if err != nil {
			if time.Now().After(deadline) {
				return nil, err
			}
			noPlace.fail(d.log, "no placement yet; retrying", "err", err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		obj := store.Object{ID: store.ObjectID(p.Object), Scheme: d.scheme, Placement: p.Addrs}
		results, err := d.objs.Write(ctx, obj, data, quorum)
		for _, r := range results {
			if r.Err != nil && r.Addr != "" {
				d.places.bad(r.Addr)
			}
		}
		if err == nil {
			rec := &metapb.ObjectRecord{Id: p.Object, Length: int64(len(data)), Stores: make([]string, len(p.StoreIds))}
			for i, r := range results {
				if r.Err == nil {
					rec.Stores[i] = p.StoreIds[i]
				}
			}
			d.objCache.put(p.Object, &store.Object{ID: obj.ID, Scheme: d.scheme, Length: int64(len(data)), Placement: resultAddrs(results)})
			return rec, nil
		}
		if !errors.Is(err, store.ErrWriteQuorum) || time.Now().After(deadline) {
			return nil, err
		}
		d.log.Warn("write quorum not reached; trying another placement", "object", obj.ID, "attempt", attempt, "err", err)
		time.Sleep(min(time.Duration(attempt+1)*200*time.Millisecond, time.Second))
	}
}

func resultAddrs(rs []store.ShardResult) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		if r.Err == nil {
			out[i] = r.Addr
		}
	}
	return out
}

// commit applies a slice commit under the session the data was written
// under (through the journal for an eligible file: then the result is
// nil). The service refuses it (ESTALE) if that session has ended: its
// locks may have gone to another mount since, which may have written.
func (d *dataPlane) commit(ctx context.Context, in *inode, cmd *metapb.CommitOp, b *buf) (*metapb.Result, error) {
	cmd.Session = b.sess
	if d.view.commit(in, b.sess, &metapb.Command{Op: &metapb.Command_Commit{Commit: cmd}}, uint64(b.block)*BlockSize+uint64(b.ext[len(b.ext)-1].hi), true) {
		return nil, nil
	}
	r, errno := d.view.change(ctx, &metapb.Command{Op: &metapb.Command_Commit{Commit: cmd}})
	if errno != 0 {
		return nil, fmt.Errorf("committing slices of inode %d: %w", cmd.Ino, errno)
	}
	return r, nil
}

// flush uploads and commits everything written to ino (settle: behind
// under a lease) and reports, for the descriptor whose error cursor is cur
// (nil: none), a failure it was not told of (errseq), without taking it
// from the descriptor (flushErr).
func (d *dataPlane) flush(ctx context.Context, ino uint64, cur *uint64) syscall.Errno {
	in := d.settle(ino)
	if in == nil {
		return 0
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.werr = nil // told now: the next write need not be refused for it
	return in.flushErr(cur)
}

// settle is wait for close and for a change of attributes: the data of a
// file written under a lease is committed behind (sealBehind), not waited
// for. It returns ino's inode (nil if the mount holds nothing of it).
func (d *dataPlane) settle(ino uint64) *inode {
	in := d.inodes.lookup(ino)
	if in != nil && d.sealBehind(in) {
		return in
	}
	return d.wait(ino)
}

// wait uploads and commits everything written to ino so far and returns
// its inode (nil if the mount holds nothing of it).
func (d *dataPlane) wait(ino uint64) *inode {
	in := d.inodes.lookup(ino)
	if in == nil {
		return nil
	}
	in.mu.Lock()
	d.sealAll(in)
	last := in.last
	var packs []*pack // where the file's data waits for others'
	for _, u := range in.pending {
		if u.pack != nil {
			packs = append(packs, u.pack)
		}
	}
	in.mu.Unlock()
	for _, pk := range packs {
		d.pack.seal(pk)
	}
	if last != nil {
		lockorder.MayWait("waiting for uploads", levelJournal)
		<-last // uploads end by themselves: success, or EIO after WriteTimeout
	}
	return in
}

// acquire takes n bytes of buffer memory, waiting for them; while it
// waits, it asks the files whose lock is free to upload their buffers.
func (d *dataPlane) acquire(n int64) {
	lockorder.MayWait("waiting for buffer memory", levelJournal)
	for !d.mem.tryAcquire(n) {
		d.relieve()
		d.mem.wait(n, 200*time.Millisecond)
	}
}

// flushAll uploads and commits every file (unmount), applies everything
// written behind, and says which files lost data or changes no descriptor
// was told of.
func (d *dataPlane) flushAll(ctx context.Context) error {
	ins := d.inodes.all()
	for _, in := range ins {
		d.wait(in.ino)
	}
	d.pipe.drain()
	var failed []uint64
	for _, in := range ins {
		if d.flush(ctx, in.ino, nil) != 0 {
			failed = append(failed, in.ino)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("fs: data of inodes %v could not be stored", failed)
	}
	return nil
}
