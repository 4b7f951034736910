package locks

import "slices"

// Wait is a blocking request: F_SETLKW (kind KindPosix, typ Read or Write on
// r) or flock without LOCK_NB (KindFlock, Shared or Exclusive; r is
// ignored). reqID names the request in the Grant that answers it later and
// in CancelWait; it must not name a queued request (ErrDuplicate). pid is
// the process that asks (POSIX): the lock records it when granted.
//
// The request is granted at once (true, with Result as from SetLk or Flock)
// if no lock of another owner conflicts with it and no queued request does.
// Otherwise it joins the inode's queue (false), and a later call that
// releases locks grants it. The queue is FIFO: a queued request blocks the
// later ones that conflict with it, so a stream of readers cannot starve a
// queued writer. One exception keeps the order from deadlocking: a queued
// request that is itself blocked by the new request's owner (by its lock, or
// by an earlier request of it) does not block the new request. A process
// extending or upgrading its own lock is not queued behind a writer that
// waits for that process anyway.
//
// A POSIX request that would wait, directly or through other waiting owners,
// for its own owner is refused with ErrDeadlock (EDEADLK) and changes
// nothing. The wait-for graph has an edge from an owner to each owner that
// blocks one of its queued POSIX requests, on any inode. It is exact when
// each owner has at most one queued request (a single-threaded process). It
// assumes that a waiting owner's locks do not change, so with several queued
// requests of one owner (threads), one of which would lower a lock that
// blocks another owner, it can report a deadlock that is not one; and it
// does not see cycles that close later, when a request is granted. Linux has
// the same kinds of false positives and negatives.
//
// A flock request that must wait first drops the lock its owner holds, as
// Linux does for a blocking conversion (so that two owners upgrading Shared
// to Exclusive do not deadlock); Result.Grants then lists the requests the
// drop let through. flock requests are not checked for deadlocks, and the
// kernel's flock owner is the open file description, so the FIFO order can
// hang a process that holds a Shared flock through one descriptor and waits
// for another Shared one through a second descriptor while an Exclusive
// request is queued in between (Linux would grant it).
func (t *Table) Wait(ino uint64, owner Owner, kind Kind, r Range, typ LockType, reqID uint64, pid uint32) (Result, bool, error) {
	switch kind {
	case KindPosix:
		if !r.Valid() {
			return Result{}, false, ErrInvalid
		}
	case KindFlock:
		r = wholeFile
	default:
		return Result{}, false, ErrInvalid
	}
	if !typ.holding() {
		return Result{}, false, ErrInvalid
	}
	if _, dup := t.waiters[reqID]; dup {
		return Result{}, false, ErrDuplicate
	}
	in := t.inode(ino)
	defer t.gc(ino)
	w := &waiter{reqID: reqID, ino: ino, kind: kind, owner: owner, r: r, typ: typ, pid: pid, seq: t.seq + 1}

	e := newQueueEval(in)
	if !e.blocked(w, in.queue) {
		tok, changed := t.apply(in, kind, owner, r, typ, pid)
		res := Result{Token: tok}
		if changed {
			res.Grants = t.grantWaiters(ino)
		}
		return res, true, nil
	}
	if kind == KindPosix && t.deadlocks(w, e) {
		return Result{}, false, ErrDeadlock
	}
	dropped := false
	if kind == KindFlock {
		_, dropped = t.setFlock(in, owner, Unlock)
	}
	t.enqueue(in, w)
	var res Result
	if dropped {
		// w stays queued (what blocked it is a lock or an earlier request
		// of another owner, which the drop does not remove); the drop may
		// let others through.
		res.Grants = t.grantWaiters(ino)
	}
	return res, false, nil
}

// CancelWait removes the queued request reqID (the caller was interrupted or
// gave up) and reports whether it was queued. Requests it was blocking may now
// be granted: they are returned.
func (t *Table) CancelWait(reqID uint64) ([]Grant, bool) {
	w, ok := t.waiters[reqID]
	if !ok {
		return nil, false
	}
	t.unindex(w)
	in := t.inodes[w.ino]
	in.queue = slices.DeleteFunc(in.queue, func(x *waiter) bool { return x == w })
	grants := t.grantWaiters(w.ino)
	t.gc(w.ino)
	return grants, true
}

// grantWaiters grants the queued requests on ino that nothing blocks any
// more, oldest first, each as soon as it can be (after the grants before
// it), and returns them.
func (t *Table) grantWaiters(ino uint64) []Grant {
	in := t.inodes[ino]
	if in == nil {
		return nil
	}
	var grants []Grant
	for again := true; again; {
		again = false
		e := newQueueEval(in)
		for i := 0; i < len(in.queue); {
			w := in.queue[i]
			if e.blocked(w, in.queue[:i]) {
				i++
				continue
			}
			in.queue = slices.Delete(in.queue, i, i+1)
			t.unindex(w)
			e.grant(w)
			lowers := w.typ == Read && in.holdsConflicting(w.owner, w.kind, w.r, Read)
			tok, _ := t.apply(in, w.kind, w.owner, w.r, w.typ, w.pid)
			grants = append(grants, Grant{ReqID: w.reqID, Ino: ino, Owner: w.owner, Token: tok})
			if lowers {
				again = true // e is stale, and an earlier request may pass now
				break
			}
		}
	}
	return grants
}
