package cluster

import (
	"cmp"
	"errors"
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/locks"
	"github.com/ecfs/ecfs/cluster/metapb"
)

type lockGrant struct {
	session, token uint64
}

// recordGrants keeps the queued requests the lock table just granted, for
// their waiters to find.
func (f *FSM) recordGrants(gs []locks.Grant) {
	for _, g := range gs {
		f.grants[g.ReqID] = lockGrant{session: g.Owner.Session, token: g.Token}
		delete(f.waiting, g.ReqID)
	}
}

func (f *FSM) applyLock(op *metapb.LockOp) *metapb.Result {
	if !f.liveSession(op.Session) {
		return errnoResult(syscall.ESTALE)
	}
	owner := locks.Owner{Session: op.Session, ID: op.Owner}
	typ := locks.LockType(op.Type)
	kind := locks.Kind(op.Kind)
	r := locks.Range{Start: op.Start, End: op.End}
	if kind == locks.KindFlock {
		r = locks.Range{Start: 0, End: locks.ToEOF}
	}
	if typ != locks.Read && typ != locks.Write && typ != locks.Unlock || !r.Valid() {
		return errnoResult(syscall.EINVAL)
	}
	var (
		res     locks.Result
		granted bool
	)
	switch kind {
	case locks.KindPosix:
		res, granted = f.locks.SetLk(op.Ino, owner, r, typ, op.Pid)
	case locks.KindFlock:
		res, granted = f.locks.Flock(op.Ino, owner, typ)
	default:
		return errnoResult(syscall.EINVAL)
	}
	f.recordGrants(res.Grants)
	if granted {
		return &metapb.Result{Token: res.Token}
	}
	if !op.Wait || typ == locks.Unlock {
		return errnoResult(syscall.EAGAIN)
	}
	if op.ReqId == 0 {
		return errnoResult(syscall.EINVAL)
	}
	res, granted, err := f.locks.Wait(op.Ino, owner, kind, r, typ, op.ReqId, op.Pid)
	f.recordGrants(res.Grants)
	switch {
	case errors.Is(err, locks.ErrDeadlock):
		return errnoResult(syscall.EDEADLK)
	case err != nil:
		return errnoResult(syscall.EINVAL)
	case granted:
		return &metapb.Result{Token: res.Token}
	}
	f.waiting[op.ReqId] = op.Session
	return &metapb.Result{Queued: true}
}

func (f *FSM) applyUnlockOwner(op *metapb.UnlockOwnerOp) *metapb.Result {
	owner := locks.Owner{Session: op.Session, ID: op.Owner}
	switch locks.Kind(op.Kind) {
	case locks.KindPosix:
		f.recordGrants(f.locks.ReleaseOwner(op.Ino, owner))
	case locks.KindFlock:
		f.recordGrants(f.locks.ReleaseFlock(op.Ino, owner))
	default:
		return errnoResult(syscall.EINVAL)
	}
	return &metapb.Result{}
}

func (f *FSM) applyCancelWait(op *metapb.CancelWaitOp) *metapb.Result {
	gs, ok := f.locks.CancelWait(op.ReqId)
	f.recordGrants(gs)
	delete(f.waiting, op.ReqId)
	if !ok {
		return errnoResult(syscall.ENOENT)
	}
	return &metapb.Result{}
}

// releaseSessionLocks drops every lock, waiter and kept grant of a session.
func (f *FSM) releaseSessionLocks(session uint64) {
	f.recordGrants(f.locks.ReleaseSession(session))
	for id, g := range f.grants {
		if g.session == session {
			delete(f.grants, id)
		}
	}
	for id, s := range f.waiting {
		if s == session {
			delete(f.waiting, id)
		}
	}
}

func (f *FSM) readGetLk(q *metapb.GetLkReq) *metapb.ReadResp {
	c := f.locks.GetLk(q.Ino, locks.Owner{Session: q.Session, ID: q.Owner}, locks.Range{Start: q.Start, End: q.End}, locks.LockType(q.Type))
	if c == nil {
		return &metapb.ReadResp{}
	}
	return &metapb.ReadResp{ConflictType: uint32(c.Type), ConflictStart: c.Range.Start, ConflictEnd: c.Range.End,
		ConflictSession: c.Owner.Session, ConflictOwner: c.Owner.ID, ConflictPid: c.Pid}
}

func (f *FSM) readLockWait(q *metapb.LockWaitReq) *metapb.ReadResp {
	if g, ok := f.grants[q.ReqId]; ok {
		return &metapb.ReadResp{Token: g.token}
	}
	if _, ok := f.waiting[q.ReqId]; ok {
		return &metapb.ReadResp{}
	}
	return &metapb.ReadResp{Errno: uint32(syscall.ENOENT)}
}

func (f *FSM) encodeGrants() []*metapb.LockGrant {
	out := make([]*metapb.LockGrant, 0, len(f.grants)+len(f.waiting))
	for id, g := range f.grants {
		out = append(out, &metapb.LockGrant{ReqId: id, Session: g.session, Token: g.token})
	}
	for id, s := range f.waiting {
		out = append(out, &metapb.LockGrant{ReqId: id, Session: s}) // token 0: still queued
	}
	slices.SortFunc(out, func(a, b *metapb.LockGrant) int { return cmp.Compare(a.ReqId, b.ReqId) })
	return out
}

func decodeGrants(in []*metapb.LockGrant) (map[uint64]lockGrant, map[uint64]uint64) {
	grants, waiting := map[uint64]lockGrant{}, map[uint64]uint64{}
	for _, g := range in {
		if g.Token == 0 {
			waiting[g.ReqId] = g.Session
		} else {
			grants[g.ReqId] = lockGrant{session: g.Session, token: g.Token}
		}
	}
	return grants, waiting
}
