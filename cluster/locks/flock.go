package locks

import "slices"

// Flock is flock(2) with LOCK_NB: it sets owner's whole-file lock on ino to
// typ (Shared, Exclusive or Unlock) and reports whether it did. Exclusive is
// refused while another owner holds any flock on ino, Shared while another
// owner holds Exclusive; Unlock always succeeds.
//
// An owner converts its own lock in place (upgrade, downgrade); unlike Linux,
// a refused conversion keeps the lock the owner had. An acquire or a
// conversion takes a new fencing token (Result.Token); asking for the type
// already held returns that lock's token; Unlock returns 0. Result.Grants are
// the queued requests that the change let through. An invalid type is
// refused and changes nothing.
//
// Flock ignores the wait queue, as the kernel does for LOCK_NB: only Wait
// keeps the queue's order.
func (t *Table) Flock(ino uint64, owner Owner, typ LockType) (Result, bool) {
	if typ != Unlock && !typ.holding() {
		return Result{}, false
	}
	in := t.inodes[ino]
	if in == nil {
		if typ == Unlock {
			return Result{}, true
		}
		in = t.inode(ino)
	}
	defer t.gc(ino)
	if typ != Unlock && in.conflictsHeld(KindFlock, owner, wholeFile, typ) {
		return Result{}, false
	}
	tok, changed := t.setFlock(in, owner, typ)
	res := Result{Token: tok}
	if changed {
		res.Grants = t.grantWaiters(ino)
	}
	return res, true
}

// ReleaseFlock drops owner's flock on ino and its queued flock requests there
// (the open file description is gone, so nothing can wait on it any more),
// and returns the queued requests this grants.
func (t *Table) ReleaseFlock(ino uint64, owner Owner) []Grant {
	in := t.inodes[ino]
	if in == nil {
		return nil
	}
	_, changed := t.setFlock(in, owner, Unlock)
	n := len(in.queue)
	in.queue = slices.DeleteFunc(in.queue, func(w *waiter) bool {
		if w.kind != KindFlock || w.owner != owner {
			return false
		}
		t.unindex(w)
		return true
	})
	var grants []Grant
	if changed || len(in.queue) != n {
		grants = t.grantWaiters(ino)
	}
	t.gc(ino)
	return grants
}

func (in *inode) flockIndex(owner Owner) (int, bool) {
	return slices.BinarySearchFunc(in.flocks, owner, func(s seg, o Owner) int { return compareOwners(s.owner, o) })
}

// setFlock makes owner's flock on the inode be typ (none for Unlock),
// ignoring other owners. It returns the token of the lock now held (0 for
// Unlock) and whether anything changed.
func (t *Table) setFlock(in *inode, owner Owner, typ LockType) (uint64, bool) {
	i, found := in.flockIndex(owner)
	switch {
	case typ == Unlock:
		if !found {
			return 0, false
		}
		in.flocks = slices.Delete(in.flocks, i, i+1)
		return 0, true
	case found && in.flocks[i].typ == typ:
		return in.flocks[i].token, false
	}
	s := seg{owner: owner, r: wholeFile, typ: typ, token: t.next()}
	if found {
		in.flocks[i] = s
	} else {
		in.flocks = slices.Insert(in.flocks, i, s)
	}
	return s.token, true
}
