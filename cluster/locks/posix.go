package locks

import (
	"cmp"
	"slices"
)

// SetLk is F_SETLK: it sets owner's POSIX lock on r of ino to typ (Read,
// Write or Unlock) if no lock of another owner conflicts, and reports whether
// it did. pid is the process that asks: the lock records it for GetLk. A Write conflicts with any lock of another owner overlapping r, a
// Read with another owner's overlapping Write; Unlock never conflicts.
//
// The request replaces the owner's own locks on r whatever their type,
// splitting them as needed, and merges with the owner's locks of the same
// type that it overlaps or touches. A grant that changes the state takes a
// new fencing token (Result.Token); a request the owner already holds
// returns the token of that lock; Unlock returns token 0. Result.Grants are
// the queued requests that the change let through.
//
// SetLk ignores the wait queue, as the kernel's F_SETLK does: only Wait
// keeps the queue's order. An invalid range or type is refused (false) and
// changes nothing.
func (t *Table) SetLk(ino uint64, owner Owner, r Range, typ LockType, pid uint32) (Result, bool) {
	if !r.Valid() || (typ != Unlock && !typ.holding()) {
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
	if typ != Unlock && in.conflictsHeld(KindPosix, owner, r, typ) {
		return Result{}, false
	}
	tok, changed := t.setPosix(in, owner, r, typ, pid)
	res := Result{Token: tok}
	if changed {
		res.Grants = t.grantWaiters(ino)
	}
	return res, true
}

// GetLk is F_GETLK: it returns the first lock (lowest start, then owner) of
// another owner that conflicts with owner's request for typ on r, or nil if
// SetLk would grant it. Unlock and invalid requests conflict with nothing.
func (t *Table) GetLk(ino uint64, owner Owner, r Range, typ LockType) *LockInfo {
	in := t.inodes[ino]
	if in == nil || !r.Valid() || !typ.holding() {
		return nil
	}
	var first *seg
	for i := range in.posix {
		s := &in.posix[i]
		if s.owner == owner || !s.r.overlaps(r) || !conflict(s.typ, typ) {
			continue
		}
		if first == nil || s.r.Start < first.r.Start ||
			(s.r.Start == first.r.Start && compareOwners(s.owner, first.owner) < 0) {
			first = s
		}
	}
	if first == nil {
		return nil
	}
	info := first.info(KindPosix)
	return &info
}

// ReleaseOwner drops owner's POSIX locks on ino (the owner closed a file
// descriptor of it) and returns the queued requests this grants. The owner's
// queued requests stay: another thread of the process may still wait.
func (t *Table) ReleaseOwner(ino uint64, owner Owner) []Grant {
	in := t.inodes[ino]
	if in == nil {
		return nil
	}
	lo, hi := in.ownerSpan(owner)
	if lo == hi {
		return nil
	}
	in.posix = slices.Delete(in.posix, lo, hi)
	t.indexPosix(in, owner)
	grants := t.grantWaiters(ino)
	t.gc(ino)
	return grants
}

// conflictsHeld reports whether a lock of kind held by another owner
// conflicts with a request of owner for typ on r.
func (in *inode) conflictsHeld(kind Kind, owner Owner, r Range, typ LockType) bool {
	for _, s := range in.held(kind) {
		if s.owner != owner && s.r.overlaps(r) && conflict(s.typ, typ) {
			return true
		}
	}
	return false
}

// setPosix makes owner's POSIX locks on r be typ (none for Unlock), ignoring
// other owners. It returns the token of the lock now covering r (0 for
// Unlock) and whether anything changed.
func (t *Table) setPosix(in *inode, owner Owner, r Range, typ LockType, pid uint32) (uint64, bool) {
	lo, hi := in.ownerSpan(owner)
	old := in.posix[lo:hi]
	touched := false
	for _, s := range old {
		if typ != Unlock && s.typ == typ && s.r.contains(r) {
			return s.token, false // already held
		}
		touched = touched || s.r.overlaps(r)
	}
	if typ == Unlock && !touched {
		return 0, false
	}

	mine := make([]seg, 0, len(old)+2)
	nw := seg{owner: owner, r: r, typ: typ, pid: pid}
	for _, s := range old {
		switch {
		case typ != Unlock && s.typ == typ && s.r.touches(r):
			// Merge. s touches r and is disjoint from the owner's other
			// ranges, so the union meets only ranges that r overlaps: those
			// are cut below.
			nw.r.Start = min(nw.r.Start, s.r.Start)
			nw.r.End = max(nw.r.End, s.r.End)
		case !s.r.overlaps(r):
			mine = append(mine, s)
		default: // keep what sticks out of r on either side
			if s.r.Start < r.Start {
				mine = append(mine, seg{owner: owner, r: Range{s.r.Start, r.Start - 1}, typ: s.typ, token: s.token, pid: s.pid})
			}
			if s.r.End > r.End {
				mine = append(mine, seg{owner: owner, r: Range{r.End + 1, s.r.End}, typ: s.typ, token: s.token, pid: s.pid})
			}
		}
	}
	if typ != Unlock {
		nw.token = t.next()
		mine = append(mine, nw)
	}
	slices.SortFunc(mine, func(a, b seg) int { return cmp.Compare(a.r.Start, b.r.Start) })

	in.posix = slices.Replace(in.posix, lo, hi, mine...)
	t.indexPosix(in, owner)
	return nw.token, true
}
