package cluster

import (
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

func (f *FSM) applyInline(op *metapb.InlineOp, now int64) *metapb.Result {
	if !f.liveSession(op.Session) {
		return errnoResult(syscall.ESTALE)
	}
	return attrResult(f.ns.WriteInline(op.Ino, op.Off, op.Data, now))
}

// readStatfs reports the usable capacity: what the up stores have, times
// k/(k+m), since every byte is stored as k+m shards of 1/k of it. A file
// system several stores share (ecfs dev's six on one disk) counts once.
func (f *FSM) readStatfs() *metapb.ReadResp {
	var total, free uint64
	shared := map[string][2]int64{} // file system -> total, free (the largest reported)
	for _, s := range f.stores {
		if s.State != StoreUp {
			continue
		}
		if len(s.Disks) == 0 { // a store that does not say
			total += uint64(max(s.TotalBytes, 0))
			free += uint64(max(s.FreeBytes, 0))
			continue
		}
		for _, d := range s.Disks {
			if d.Fs == "" {
				total += uint64(max(d.TotalBytes, 0))
				free += uint64(max(d.FreeBytes, 0))
				continue
			}
			v := shared[d.Fs]
			shared[d.Fs] = [2]int64{max(v[0], d.TotalBytes), max(v[1], d.FreeBytes)}
		}
	}
	for _, v := range shared {
		total += uint64(max(v[0], 0))
		free += uint64(max(v[1], 0))
	}
	if f.scheme != nil {
		k, n := uint64(f.scheme.K), uint64(f.scheme.K+f.scheme.M)
		total, free = total/n*k, free/n*k
	}
	inodes, _ := f.ns.Counts()
	return &metapb.ReadResp{TotalBytes: total, FreeBytes: free, Inodes: inodes}
}

func (f *FSM) readSlices(q *metapb.SlicesReq) *metapb.ReadResp {
	r := &metapb.ReadResp{}
	for _, b := range q.Blocks {
		sl, e := f.ns.Slices(q.Ino, b)
		if e != 0 {
			return &metapb.ReadResp{Errno: uint32(e)}
		}
		bs := &metapb.BlockSlices{Block: b}
		for _, s := range sl {
			bs.Slices = append(bs.Slices, &metapb.BlockWrite{Block: b, Off: s.Off, Len: s.Len, Object: s.Object, ObjOff: s.ObjOff})
		}
		r.Blocks = append(r.Blocks, bs)
	}
	in, e := f.ns.ReadInline(q.Ino)
	if e != 0 && e != syscall.EINVAL {
		return &metapb.ReadResp{Errno: uint32(e)}
	}
	r.Inline = in
	for _, ino := range q.Prefetch[:min(len(q.Prefetch), maxPrefetch)] {
		if fs := f.fileSlices(ino); fs != nil {
			r.Files = append(r.Files, fs)
		}
	}
	if q.Records {
		var ids []uint64
		for _, fs := range r.Files {
			for _, s := range fs.Slices {
				ids = append(ids, s.Object)
			}
		}
		slices.Sort(ids)
		for _, id := range slices.Compact(ids) {
			if o := f.objects[id]; o != nil {
				r.Objects = append(r.Objects, f.objectRecord(id, o, true))
			}
		}
	}
	return r
}

// maxPrefetch bounds SlicesReq.prefetch.
const maxPrefetch = 64

// fileSlices is a regular file's block 0 for a prefetch (nil for anything
// else).
func (f *FSM) fileSlices(ino uint64) *metapb.FileSlices {
	a, e := f.ns.GetAttr(ino)
	if e != 0 || a.Type != namespace.TypeFile {
		return nil
	}
	sl, e := f.ns.Slices(ino, 0)
	if e != 0 {
		return nil
	}
	in, e := f.ns.ReadInline(ino)
	if e != 0 && e != syscall.EINVAL {
		return nil
	}
	out := &metapb.FileSlices{Ino: ino, Version: a.Version, Inline: in}
	for _, s := range sl {
		out.Slices = append(out.Slices, &metapb.BlockWrite{Block: 0, Off: s.Off, Len: s.Len, Object: s.Object, ObjOff: s.ObjOff})
	}
	return out
}
