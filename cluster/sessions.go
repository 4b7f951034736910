package cluster

import (
	"cmp"
	"context"
	"slices"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/locks"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// mountSession is a mount's lease. Its id is its fencing token: ids only
// grow, and a command from a session that expired is refused.
type mountSession struct {
	ttl     int64
	expires int64
	name    string
}

func (f *FSM) applySessionOpen(op *metapb.SessionOp, now int64) *metapb.Result {
	if op.TtlNs <= 0 {
		return errnoResult(syscall.EINVAL)
	}
	id := f.nextSession
	f.nextSession++
	s := &mountSession{ttl: op.TtlNs, expires: now + op.TtlNs, name: op.Name}
	f.mounts[id] = s
	return &metapb.Result{SessionId: id, Expires: s.expires}
}

func (f *FSM) applyRenew(op *metapb.RenewOp, now int64) *metapb.Result {
	s := f.mounts[op.Session]
	if s == nil {
		return errnoResult(syscall.ESTALE)
	}
	s.expires = now + s.ttl
	return &metapb.Result{SessionId: op.Session, Expires: s.expires}
}

// applyExpire ends a session if its deadline passed as of now (a renewal
// ordered before this command wins).
func (f *FSM) applyExpire(id uint64, now int64, force bool) *metapb.Result {
	s := f.mounts[id]
	if s == nil {
		return errnoResult(syscall.ESTALE)
	}
	if !force && s.expires >= now {
		return errnoResult(syscall.EAGAIN)
	}
	delete(f.mounts, id)
	f.releaseSessionLocks(id)
	f.dropSessionLeases(id)
	f.dropSessionReads(id)
	closed := f.ns.CloseSession(id)
	f.queueGC(closed.Objects)
	// Its packed objects' commits still to come never will.
	freed := append(closed.Objects, f.dropSessionPacks(id)...)
	slices.Sort(freed)
	return &metapb.Result{FreedObjects: slices.Compact(freed)}
}

// liveSession reports whether a command from session id may act: the
// session exists (it has not expired and been ended).
func (f *FSM) liveSession(id uint64) bool { return f.mounts[id] != nil }

// applyCommit applies a CommitOp: refused (ESTALE) from a dead session, in
// which case it counts nothing; a commit of a packed object (pack > 1)
// otherwise counts among its object's commits to come whatever its own
// result (see pack.go).
func (f *FSM) applyCommit(op *metapb.CommitOp, now int64) *metapb.Result {
	if !f.liveSession(op.Session) {
		return errnoResult(syscall.ESTALE)
	}
	packed := op.Pack > 1
	if packed {
		if e := f.packBegin(op); e != 0 {
			return errnoResult(e)
		}
	}
	r := f.commitSlices(op, now, !packed)
	if packed {
		if done := f.packEnd(op); len(done) > 0 {
			r.FreedObjects = append(r.FreedObjects, done...)
			slices.Sort(r.FreedObjects)
			r.FreedObjects = slices.Compact(r.FreedObjects)
		}
	}
	return r
}

// commitSlices applies a CommitOp from a live session: the lock fencing,
// the slices, and, with record, the object records.
func (f *FSM) commitSlices(op *metapb.CommitOp, now int64, record bool) *metapb.Result {
	if op.LockToken != 0 && !f.locks.Holds(op.Ino, locks.Owner{Session: op.Session, ID: op.Owner}, op.LockToken) {
		return errnoResult(syscall.ESTALE)
	}
	writes := make([]namespace.BlockWrite, len(op.Writes))
	for i, w := range op.Writes {
		writes[i] = namespace.BlockWrite{Block: w.Block, Slice: namespace.Slice{Off: w.Off, Len: w.Len, Object: w.Object, ObjOff: w.ObjOff}}
	}
	a, freed, e := f.ns.CommitSlices(op.Ino, writes, op.NewSize, now)
	if e == 0 {
		if record {
			f.recordObjects(op.Objects)
		}
		f.noteFragmented(op.Ino, op.Writes, now)
	}
	f.queueGC(freed)
	r := attrResult(a, e)
	r.FreedObjects = freed
	return r
}

func (f *FSM) applyOpen(op *metapb.OpenOp) *metapb.Result {
	if !f.liveSession(op.Session) {
		return errnoResult(syscall.ESTALE)
	}
	if e := f.ns.Open(op.Ino, op.Handle, op.Session); e != 0 {
		return errnoResult(e)
	}
	return attrResult(f.ns.GetAttr(op.Ino)) // the opener needs them (close-to-open) and saves a read
}

func (f *FSM) applyClose(op *metapb.CloseOp) *metapb.Result {
	r, e := f.ns.Close(op.Handle)
	if e != 0 {
		return errnoResult(e)
	}
	f.queueGC(r.Objects)
	return &metapb.Result{FreedObjects: r.Objects}
}

// expired lists the sessions whose deadline is before now and whose TTL
// has passed since since: the time from which the leader has been able to
// hear every renewal (see RunExpiry).
func (f *FSM) expired(now, since int64) []uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []uint64
	for id, s := range f.mounts {
		if s.expires < now && since+s.ttl < now {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (f *FSM) encodeMounts() []*metapb.MountSession {
	out := make([]*metapb.MountSession, 0, len(f.mounts))
	for id, s := range f.mounts {
		out = append(out, &metapb.MountSession{Id: id, TtlNs: s.ttl, Expires: s.expires, Name: s.name})
	}
	slices.SortFunc(out, func(a, b *metapb.MountSession) int { return cmp.Compare(a.Id, b.Id) })
	return out
}

func decodeMounts(in []*metapb.MountSession) map[uint64]*mountSession {
	out := map[uint64]*mountSession{}
	for _, s := range in {
		out[s.Id] = &mountSession{ttl: s.TtlNs, expires: s.Expires, name: s.Name}
	}
	return out
}

// RunExpiry ends the sessions whose lease ran out, while this member leads:
// their locks and open files are released. It returns when ctx ends.
func (s *Server) RunExpiry(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	// A session is expired only once the leader has been able to hear its
	// renewals for a whole TTL (a grace period, as Chubby gives): from
	// when this member began to lead in the current term, or from when it
	// woke up from a stall (SIGSTOP, a long GC pause: the loop missed its
	// ticks), since renewals sent meanwhile could not reach it. Otherwise
	// an election or a frozen leader would end every mount's session (and
	// give its locks away) although each renewed in time.
	var term uint64
	var since, last time.Time
	s.whileLeader(ctx, every, func() {
		t := time.Now()
		if cur := s.node.raft.CurrentTerm(); cur != term || t.Sub(last) > 4*every+time.Second {
			if !last.IsZero() && cur == term {
				s.log.Warn("the session expiry loop stalled: every session gets a full TTL again", "stalled", t.Sub(last).Round(time.Millisecond))
			}
			term, since = cur, t
		}
		last = t
		now := t.UnixNano()
		for _, id := range s.fsm.expired(now, since.UnixNano()) {
			r, err := s.commit.propose(ctx, &metapb.Command{Now: now, Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: id}}})
			if err == nil && r.Errno == 0 {
				s.log.Info("session expired", "session", id)
			}
		}
	})
}
