package cluster

import (
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Packed objects. A mount may write the data of several small files into
// one object, then commit each file with its own CommitOp (pack > 1, the
// same record), in order but possibly in different entries, with other
// changes in between: a member file may be unlinked, or overwritten, before
// the next member is committed. So an object no file references yet, or any
// more, is kept while commits naming it are still to come (a packWait), and
// goes to GC when the last of them is applied or refused by the namespace,
// or when its session ends, if no file references it then.

// packWait is a packed object's commits still to come, from session sess.
// State: in snapshots, as ObjectRecord.pack_pending and pack_session.
type packWait struct {
	left uint32
	sess uint64
}

// packBegin counts a commit of a packed object from a live session, before
// the commit is applied: it checks the command, records the object unless
// it is recorded (the first member's record; the healer may have changed it
// since, so a later one never replaces it) and counts the commit down, even
// if the namespace then refuses it (the data was stored, and the record
// must exist for GC to delete its shards). Refused, the commit counts
// nothing: EINVAL for a malformed one (not exactly one record, a write
// naming another object, another session's pack), ESTALE for an object
// already queued for GC (its shards may be gone: the commit would lose its
// data silently).
func (f *FSM) packBegin(op *metapb.CommitOp) syscall.Errno {
	if len(op.Objects) != 1 || op.Objects[0].GetId() == 0 {
		return syscall.EINVAL
	}
	rec := op.Objects[0]
	for _, w := range op.Writes {
		if w.Object != rec.Id {
			return syscall.EINVAL
		}
	}
	w, waiting := f.packs[rec.Id]
	if waiting && w.sess != op.Session {
		return syscall.EINVAL
	}
	if f.gcQueued[rec.Id] {
		return syscall.ESTALE
	}
	if f.objects[rec.Id] == nil {
		f.recordObjects(op.Objects)
	}
	if !waiting {
		w = packWait{left: op.Pack, sess: op.Session}
	}
	if w.left > 0 {
		w.left--
	}
	f.packs[rec.Id] = w
	return 0
}

// packEnd ends the count of a commit packBegin counted, once the commit was
// applied: when it was the last to come, the object goes to GC if no file
// references it, and packEnd returns it.
func (f *FSM) packEnd(op *metapb.CommitOp) []uint64 {
	id := op.Objects[0].Id
	if w, ok := f.packs[id]; !ok || w.left > 0 {
		return nil
	}
	delete(f.packs, id)
	return f.queueUnreferenced([]uint64{id})
}

// dropSessionPacks forgets the commits still to come from session sess
// (which ended: they never will) and queues for GC those objects no file
// references, which it returns (sorted).
func (f *FSM) dropSessionPacks(sess uint64) []uint64 {
	var ids []uint64
	for id, w := range f.packs {
		if w.sess == sess {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids) // the GC queue is state: every replica must append alike
	for _, id := range ids {
		delete(f.packs, id)
	}
	return f.queueUnreferenced(ids)
}

// queueUnreferenced queues for GC the objects of ids that no file
// references, and returns them.
func (f *FSM) queueUnreferenced(ids []uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		if f.ns.ObjectRefs(id) == 0 {
			out = append(out, id)
		}
	}
	f.queueGC(out)
	return out
}

// packRecord adds to r, the record of object id in a snapshot, the commits
// still to come if it is a packed object waiting for some.
func (f *FSM) packRecord(id uint64, r *metapb.ObjectRecord) {
	if w, ok := f.packs[id]; ok {
		r.PackPending, r.PackSession = w.left, w.sess
	}
}

// decodePacks rebuilds the waiting packed objects from a snapshot's records.
func decodePacks(recs []*metapb.ObjectRecord) map[uint64]packWait {
	out := map[uint64]packWait{}
	for _, r := range recs {
		if r.PackPending > 0 {
			out[r.Id] = packWait{left: r.PackPending, sess: r.PackSession}
		}
	}
	return out
}
