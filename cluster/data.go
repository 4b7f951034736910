package cluster

import (
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
)

func (f *FSM) applyInline(op *metapb.InlineOp, now int64) *metapb.Result {
	if !f.liveSession(op.Session) {
		return errnoResult(syscall.ESTALE)
	}
	return attrResult(f.ns.WriteInline(op.Ino, op.Off, op.Data, now))
}

// readStatfs reports the usable capacity: what the up stores have, times
// k/(k+m), since every byte is stored as k+m shards of 1/k of it.
func (f *FSM) readStatfs() *metapb.ReadResp {
	var total, free uint64
	for _, s := range f.stores {
		if s.State == StoreUp {
			total += uint64(max(s.TotalBytes, 0))
			free += uint64(max(s.FreeBytes, 0))
		}
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
	return r
}
