package locks

// The blocking rule. A request (queued, or about to be) is blocked by an
// owner O when O holds a lock that conflicts with it, or when an earlier
// queued request of O conflicts with it and is not itself blocked by the
// request's owner. A request is granted when nothing blocks it. B(q), the
// owners that block q, thus depends on the B of the requests before q; a
// queueEval computes the parts it needs, remembering them.

// queueEval evaluates the rule over one inode's queue, skipping the requests
// granted since it was made (gone). Granting a request that only adds to its
// owner's locks changes no B of the requests before it (a new conflict with
// one of them means that it did not block the request granted, so that
// request's owner was already in its B), and the rule only ever looks at
// requests before the one it evaluates: so a queueEval stays valid while a
// scan grants requests in queue order, until a grant lowers a lock (Write to
// Read).
type queueEval struct {
	in   *inode
	mine map[Owner][]*waiter // queued requests of an owner, in order; filled when needed
	gone map[*waiter]bool
	memo map[blockKey]bool // blocks(o, q)
}

type blockKey struct {
	o Owner
	q *waiter
}

func newQueueEval(in *inode) *queueEval { return &queueEval{in: in} }

// requestsOf returns o's queued requests, in order.
func (e *queueEval) requestsOf(o Owner) []*waiter {
	if rs, ok := e.mine[o]; ok {
		return rs
	}
	var rs []*waiter
	for _, w := range e.in.queue {
		if w.owner == o {
			rs = append(rs, w)
		}
	}
	if e.mine == nil {
		e.mine = make(map[Owner][]*waiter)
	}
	e.mine[o] = rs
	return rs
}

// blocks reports whether owner o is in B(q). q is queued, or about to be
// (its seq is then above every queued one).
func (e *queueEval) blocks(o Owner, q *waiter) bool {
	if o == q.owner {
		return false
	}
	if e.in.holdsConflicting(o, q.kind, q.r, q.typ) {
		return true
	}
	rs := e.requestsOf(o)
	if len(rs) == 0 || rs[0].seq >= q.seq {
		return false // no request of o before q
	}
	key := blockKey{o, q}
	if v, ok := e.memo[key]; ok {
		return v
	}
	v := false
	for _, k := range rs {
		if v || k.seq >= q.seq {
			break
		}
		v = !e.gone[k] && requestsConflict(k, q) && !e.blocks(q.owner, k)
	}
	if e.memo == nil {
		e.memo = make(map[blockKey]bool)
	}
	e.memo[key] = v
	return v
}

// requestsConflict reports whether requests a and b of two owners conflict.
func requestsConflict(a, b *waiter) bool {
	return a.kind == b.kind && a.r.overlaps(b.r) && conflict(a.typ, b.typ)
}

// blocked reports whether B(w) is not empty, earlier being the requests
// still queued before w.
func (e *queueEval) blocked(w *waiter, earlier []*waiter) bool {
	if e.in.conflictsHeld(w.kind, w.owner, w.r, w.typ) {
		return true
	}
	for _, q := range earlier {
		if q.owner != w.owner && requestsConflict(q, w) && !e.blocks(w.owner, q) {
			return true
		}
	}
	return false
}

// grant marks w, removed from the queue, as granted.
func (e *queueEval) grant(w *waiter) {
	if e.gone == nil {
		e.gone = make(map[*waiter]bool)
	}
	e.gone[w] = true
}

// holdsConflicting reports whether owner holds a lock of kind that
// conflicts with a request for typ on r.
func (in *inode) holdsConflicting(owner Owner, kind Kind, r Range, typ LockType) bool {
	for _, s := range in.ownerLocks(kind, owner) {
		if s.r.overlaps(r) && conflict(s.typ, typ) {
			return true
		}
	}
	return false
}

// deadlocks reports whether queuing the blocked POSIX request w (not queued
// yet; e evaluates its inode) would close a cycle in the wait-for graph of
// owners, where an owner waits for the owners in B of each of its queued
// POSIX requests, on any inode (a process may hold a lock on one file and
// wait on another). It searches backwards from w's owner, through the owners
// that wait for it, directly or not, for one that is in B(w).
func (t *Table) deadlocks(w *waiter, e *queueEval) bool {
	evals := map[uint64]*queueEval{w.ino: e}
	seen := map[Owner]bool{w.owner: true}
	for stack := []Owner{w.owner}; len(stack) > 0; {
		y := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		// y is in B of requests on the inodes where it holds POSIX locks,
		// and of requests behind its own queued POSIX requests.
		inos := make(map[uint64]bool, len(t.posixInos[y])+len(t.posixWaits[y]))
		for ino := range t.posixInos[y] {
			inos[ino] = true
		}
		for ino := range t.posixWaits[y] {
			inos[ino] = true
		}
		for ino := range inos { // the order does not change the answer
			xe := evals[ino]
			if xe == nil {
				xe = newQueueEval(t.inodes[ino])
				evals[ino] = xe
			}
			for _, x := range xe.in.queue {
				if x.kind != KindPosix || seen[x.owner] || !xe.blocks(y, x) {
					continue
				}
				// x's owner waits for y, which waits for w's owner.
				if e.blocks(x.owner, w) {
					return true
				}
				seen[x.owner] = true
				stack = append(stack, x.owner)
			}
		}
	}
	return false
}

// enqueue appends w to its inode's queue and indexes it.
func (t *Table) enqueue(in *inode, w *waiter) {
	t.seq++
	w.seq = t.seq
	in.queue = append(in.queue, w)
	t.waiters[w.reqID] = w
	if w.kind == KindPosix {
		m := t.posixWaits[w.owner]
		if m == nil {
			m = make(map[uint64]int)
			t.posixWaits[w.owner] = m
		}
		m[w.ino]++
	}
}

// unindex forgets w, which the caller removes from its queue.
func (t *Table) unindex(w *waiter) {
	delete(t.waiters, w.reqID)
	if w.kind == KindPosix {
		m := t.posixWaits[w.owner]
		if m[w.ino]--; m[w.ino] <= 0 {
			delete(m, w.ino)
		}
		if len(m) == 0 {
			delete(t.posixWaits, w.owner)
		}
	}
}
