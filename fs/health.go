package fs

import (
	"context"
	"fmt"
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// healthName is a read-only virtual xattr of every regular file that says
// whether its data is safe (getfattr -n ecfs.health FILE):
//
//	inline              the data lives in the inode (replicated by Raft)
//	empty               the file has no data object
//	K+M H/N STATE       of its object with the fewest healthy shards, e.g.
//	                    "4+2 6/6 ok", "4+2 5/6 degraded", "4+2 3/6 unreadable"
//
// H counts the shards of that object that can be relied on: placed, not
// reported rotten or missing, and not on a store that is down or gone; N is
// k+m. STATE is ok when H == N, unreadable when H < k, else degraded (the
// healer rebuilds what is missing). It is computed from what is committed,
// asked of the leader on every call (nothing is cached, here or in the
// kernel, which does not cache xattrs): data this mount still buffers, not
// yet flushed, is not counted, and an object the healer rebuilt shows as
// healthy at once. Other file types have no such xattr (ENODATA); setting or
// removing it is EPERM, and listxattr does not list it.
const healthName = "ecfs.health"

const (
	healthSliceBatch  = 1024 // blocks per slices query
	healthObjectBatch = 256  // ids per object-record query
)

// health computes the value of ecfs.health for ino.
func (d *dataPlane) health(ctx context.Context, ino uint64) ([]byte, syscall.Errno) {
	for attempt := 0; ; attempt++ {
		// The attributes as committed (not this mount's view, which counts
		// data it buffers), after this mount's changes to ino were sent.
		a, errno := attrOf(d.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}}))
		if errno != 0 {
			return nil, errno
		}
		if a.Type != uint32(namespace.TypeFile) {
			return nil, syscall.ENODATA
		}
		ids, inline, errno := d.fileObjects(ctx, ino, a.Size)
		if errno != 0 {
			return nil, errno
		}
		if len(ids) == 0 {
			if len(inline) > 0 {
				return []byte("inline"), 0
			}
			return []byte("empty"), 0
		}
		worst, norecord, errno := d.worstObject(ctx, ids)
		if errno != 0 {
			return nil, errno
		}
		if norecord && attempt == 0 {
			// The file changed between the two queries (an overwrite, a
			// truncate: the objects it dropped may be gone already). Once
			// more; an object with no record then is one reads fail on.
			continue
		}
		k, n := d.scheme.K, d.scheme.Shards()
		state := "degraded"
		switch {
		case worst == n:
			state = "ok"
		case worst < k:
			state = "unreadable"
		}
		return fmt.Appendf(nil, "%d+%d %d/%d %s", d.scheme.K, d.scheme.M, worst, n, state), 0
	}
}

// fileObjects returns the distinct objects the committed slices of file
// ino (of the given size) point at, sorted, and its inline data.
func (d *dataPlane) fileObjects(ctx context.Context, ino, size uint64) ([]uint64, []byte, syscall.Errno) {
	if size == 0 {
		return nil, nil, 0
	}
	nblocks := (size + BlockSize - 1) / BlockSize
	seen := map[uint64]struct{}{}
	var inline []byte
	for first := uint64(0); first < nblocks; first += healthSliceBatch {
		blocks := make([]uint64, 0, min(healthSliceBatch, nblocks-first))
		for b := first; b < nblocks && b < first+healthSliceBatch; b++ {
			blocks = append(blocks, b)
		}
		r, errno := d.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: ino, Blocks: blocks}}})
		if errno != 0 {
			return nil, nil, errno
		}
		for _, b := range r.Blocks {
			for _, s := range b.Slices {
				seen[s.Object] = struct{}{}
			}
		}
		inline = r.Inline
	}
	ids := make([]uint64, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, inline, 0
}

// worstObject returns the fewest healthy shards any of ids has, as the
// leader records them, and whether some id has no record (counted as 0).
func (d *dataPlane) worstObject(ctx context.Context, ids []uint64) (worst int, norecord bool, errno syscall.Errno) {
	worst = d.scheme.Shards()
	for len(ids) > 0 {
		batch := ids[:min(len(ids), healthObjectBatch)]
		ids = ids[len(batch):]
		r, errno := d.pipe.query(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: batch}}})
		if errno != 0 {
			return 0, false, errno
		}
		if len(r.Objects) < len(batch) {
			norecord, worst = true, 0
		}
		for _, rec := range r.Objects {
			worst = min(worst, d.healthyShards(rec))
		}
	}
	return worst, norecord, 0
}

// healthyShards counts the shards of rec that can be relied on: placed
// and not marked bad (rotten, missing, on a store that is down or gone).
func (d *dataPlane) healthyShards(rec *metapb.ObjectRecord) int {
	h := 0
	for i := range d.scheme.Shards() {
		if i >= len(rec.Stores) || rec.Stores[i] == "" {
			continue
		}
		if i < 64 && rec.Bad&(1<<i) != 0 {
			continue
		}
		h++
	}
	return h
}
