package locks

import (
	"cmp"
	"fmt"
	"slices"
)

// The reference model: a brute-force lock table over a small address space.
// Each owner's POSIX state is one cell per byte 0..63 plus one cell for
// [64, EOF] (the tests never cut a range inside it), each cell with the type
// and the token of the lock on it. Its wait queue follows the same rule as
// the table (FIFO; an earlier conflicting request blocks a later one unless
// the later one's owner blocks it), but recomputes everything from scratch
// after each grant, and finds deadlocks by transitive closure over the whole
// wait-for graph.

const (
	mCells = 65         // bytes 0..63, and [64, EOF]
	mEOF   = mCells - 1 // the cell of [64, EOF]
)

type mCell struct {
	typ LockType // 0: no lock
	tok uint64
}

type mWaiter struct {
	reqID uint64
	kind  Kind
	owner Owner
	a, b  int // cells; 0, mEOF for flock
	typ   LockType
}

type mInode struct {
	posix map[Owner]*[mCells]mCell
	flock map[Owner]mCell
	queue []*mWaiter
}

type model struct {
	token  uint64
	inodes map[uint64]*mInode
	reqs   map[uint64]uint64 // queued request id -> ino
}

func newModel() *model {
	return &model{inodes: make(map[uint64]*mInode), reqs: make(map[uint64]uint64)}
}

// cellRange is the byte range of cells a..b.
func cellRange(a, b int) Range {
	r := Range{Start: uint64(a), End: uint64(b)}
	if b == mEOF {
		r.End = ToEOF
	}
	return r
}

func mConflict(a, b LockType) bool { return a == Write || b == Write }

func (m *model) in(ino uint64) *mInode {
	mi := m.inodes[ino]
	if mi == nil {
		mi = &mInode{posix: make(map[Owner]*[mCells]mCell), flock: make(map[Owner]mCell)}
		m.inodes[ino] = mi
	}
	return mi
}

func (m *model) sortedInos() []uint64 {
	var inos []uint64
	for ino := range m.inodes {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	return inos
}

// ownerConflicts reports whether owner holds a lock of kind conflicting with
// a request for typ on cells a..b.
func (mi *mInode) ownerConflicts(kind Kind, owner Owner, a, b int, typ LockType) bool {
	if kind == KindFlock {
		c, ok := mi.flock[owner]
		return ok && mConflict(c.typ, typ)
	}
	cs := mi.posix[owner]
	if cs == nil {
		return false
	}
	for i := a; i <= b; i++ {
		if cs[i].typ != 0 && mConflict(cs[i].typ, typ) {
			return true
		}
	}
	return false
}

// heldBy returns the owners other than owner holding a lock of kind that
// conflicts with a request for typ on cells a..b, sorted.
func (mi *mInode) heldBy(kind Kind, owner Owner, a, b int, typ LockType) []Owner {
	var out []Owner
	var owners []Owner
	if kind == KindFlock {
		for o := range mi.flock {
			owners = append(owners, o)
		}
	} else {
		for o := range mi.posix {
			owners = append(owners, o)
		}
	}
	for _, o := range owners {
		if o != owner && mi.ownerConflicts(kind, o, a, b, typ) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, compareOwners)
	return out
}

// blockers returns the owners blocking w, given those blocking each
// earlier request (sets[j] for earlier[j]).
func (mi *mInode) blockers(w *mWaiter, earlier []*mWaiter, sets [][]Owner) []Owner {
	out := mi.heldBy(w.kind, w.owner, w.a, w.b, w.typ)
	for j, e := range earlier {
		if e.kind != w.kind || e.owner == w.owner || e.b < w.a || w.b < e.a || !mConflict(e.typ, w.typ) {
			continue
		}
		if slices.Contains(sets[j], w.owner) {
			continue // e is blocked by w's owner
		}
		out = append(out, e.owner)
	}
	return out
}

// sets returns the owners blocking each queued request, in order.
func (mi *mInode) sets() [][]Owner {
	var sets [][]Owner
	for i, w := range mi.queue {
		sets = append(sets, mi.blockers(w, mi.queue[:i], sets))
	}
	return sets
}

func (m *model) setPosix(mi *mInode, owner Owner, a, b int, typ LockType) (uint64, bool) {
	cs := mi.posix[owner]
	if cs == nil {
		cs = new([mCells]mCell)
		mi.posix[owner] = cs
	}
	want := typ
	if typ == Unlock {
		want = 0
	}
	same := true
	for i := a; i <= b; i++ {
		same = same && cs[i].typ == want
	}
	if same {
		if want == 0 {
			mi.dropIfEmpty(owner)
			return 0, false
		}
		return cs[a].tok, false
	}
	for i := a; i <= b; i++ {
		cs[i] = mCell{typ: want}
	}
	if want == 0 {
		mi.dropIfEmpty(owner)
		return 0, true
	}
	m.token++
	lo, hi := a, b
	for lo > 0 && cs[lo-1].typ == want {
		lo--
	}
	for hi < mEOF && cs[hi+1].typ == want {
		hi++
	}
	for i := lo; i <= hi; i++ {
		cs[i].tok = m.token
	}
	return m.token, true
}

func (mi *mInode) dropIfEmpty(owner Owner) {
	for _, c := range mi.posix[owner] {
		if c.typ != 0 {
			return
		}
	}
	delete(mi.posix, owner)
}

func (m *model) setFlock(mi *mInode, owner Owner, typ LockType) (uint64, bool) {
	c, ok := mi.flock[owner]
	switch {
	case typ == Unlock:
		delete(mi.flock, owner)
		return 0, ok
	case ok && c.typ == typ:
		return c.tok, false
	}
	m.token++
	mi.flock[owner] = mCell{typ: typ, tok: m.token}
	return m.token, true
}

func (m *model) apply(mi *mInode, w *mWaiter) (uint64, bool) {
	if w.kind == KindFlock {
		return m.setFlock(mi, w.owner, w.typ)
	}
	return m.setPosix(mi, w.owner, w.a, w.b, w.typ)
}

// pass grants the first request that nothing blocks, recomputing every
// set from scratch, until there is none.
func (m *model) pass(ino uint64) []Grant {
	mi := m.in(ino)
	var grants []Grant
	for {
		i := slices.IndexFunc(mi.sets(), func(b []Owner) bool { return len(b) == 0 })
		if i < 0 {
			return grants
		}
		w := mi.queue[i]
		mi.queue = slices.Delete(mi.queue, i, i+1)
		delete(m.reqs, w.reqID)
		tok, _ := m.apply(mi, w)
		grants = append(grants, Grant{ReqID: w.reqID, Ino: ino, Owner: w.owner, Token: tok})
	}
}

func (m *model) setLk(ino uint64, owner Owner, a, b int, typ LockType) (Result, bool) {
	mi := m.in(ino)
	if typ != Unlock && len(mi.heldBy(KindPosix, owner, a, b, typ)) > 0 {
		return Result{}, false
	}
	tok, changed := m.setPosix(mi, owner, a, b, typ)
	res := Result{Token: tok}
	if changed {
		res.Grants = m.pass(ino)
	}
	return res, true
}

func (m *model) flock(ino uint64, owner Owner, typ LockType) (Result, bool) {
	mi := m.in(ino)
	if typ != Unlock && len(mi.heldBy(KindFlock, owner, 0, mEOF, typ)) > 0 {
		return Result{}, false
	}
	tok, changed := m.setFlock(mi, owner, typ)
	res := Result{Token: tok}
	if changed {
		res.Grants = m.pass(ino)
	}
	return res, true
}

func (m *model) wait(ino uint64, w *mWaiter) (Result, bool, error) {
	if _, dup := m.reqs[w.reqID]; dup {
		return Result{}, false, ErrDuplicate
	}
	mi := m.in(ino)
	blockers := mi.blockers(w, mi.queue, mi.sets())
	if len(blockers) == 0 {
		tok, changed := m.apply(mi, w)
		res := Result{Token: tok}
		if changed {
			res.Grants = m.pass(ino)
		}
		return res, true, nil
	}
	if w.kind == KindPosix {
		reach := m.reach()
		for _, b := range blockers {
			if b == w.owner || reach[[2]Owner{b, w.owner}] {
				return Result{}, false, ErrDeadlock
			}
		}
	}
	dropped := false
	if w.kind == KindFlock {
		_, dropped = m.setFlock(mi, w.owner, Unlock)
	}
	mi.queue = append(mi.queue, w)
	m.reqs[w.reqID] = ino
	var res Result
	if dropped {
		res.Grants = m.pass(ino)
	}
	return res, false, nil
}

// reach is the transitive closure of the wait-for graph of the queued POSIX
// requests: reach[{a, b}] when a waits for b, directly or not.
func (m *model) reach() map[[2]Owner]bool {
	reach := make(map[[2]Owner]bool)
	nodes := make(map[Owner]bool)
	for _, mi := range m.inodes {
		sets := mi.sets()
		for i, w := range mi.queue {
			if w.kind != KindPosix {
				continue
			}
			for _, b := range sets[i] {
				reach[[2]Owner{w.owner, b}] = true
				nodes[w.owner], nodes[b] = true, true
			}
		}
	}
	for k := range nodes { // Floyd-Warshall
		for i := range nodes {
			for j := range nodes {
				if reach[[2]Owner{i, k}] && reach[[2]Owner{k, j}] {
					reach[[2]Owner{i, j}] = true
				}
			}
		}
	}
	return reach
}

func (m *model) cancel(reqID uint64) ([]Grant, bool) {
	ino, ok := m.reqs[reqID]
	if !ok {
		return nil, false
	}
	delete(m.reqs, reqID)
	mi := m.in(ino)
	mi.queue = slices.DeleteFunc(mi.queue, func(w *mWaiter) bool { return w.reqID == reqID })
	return m.pass(ino), true
}

func (m *model) releaseOwner(ino uint64, owner Owner) []Grant {
	mi := m.in(ino)
	if mi.posix[owner] == nil {
		return nil
	}
	delete(mi.posix, owner)
	return m.pass(ino)
}

func (m *model) releaseFlock(ino uint64, owner Owner) []Grant {
	mi := m.in(ino)
	_, changed := m.setFlock(mi, owner, Unlock)
	n := len(mi.queue)
	mi.queue = slices.DeleteFunc(mi.queue, func(w *mWaiter) bool {
		if w.kind == KindFlock && w.owner == owner {
			delete(m.reqs, w.reqID)
			return true
		}
		return false
	})
	if !changed && len(mi.queue) == n {
		return nil
	}
	return m.pass(ino)
}

func (m *model) releaseSession(session uint64) []Grant {
	var grants []Grant
	for _, ino := range m.sortedInos() {
		mi := m.inodes[ino]
		changed := false
		for o := range mi.posix {
			if o.Session == session {
				delete(mi.posix, o)
				changed = true
			}
		}
		for o := range mi.flock {
			if o.Session == session {
				delete(mi.flock, o)
				changed = true
			}
		}
		mi.queue = slices.DeleteFunc(mi.queue, func(w *mWaiter) bool {
			if w.owner.Session == session {
				delete(m.reqs, w.reqID)
				changed = true
				return true
			}
			return false
		})
		if changed {
			grants = append(grants, m.pass(ino)...)
		}
	}
	return grants
}

func (m *model) holds(ino uint64, owner Owner, tok uint64) bool {
	mi := m.inodes[ino]
	if mi == nil || tok == 0 {
		return false
	}
	if c, ok := mi.flock[owner]; ok && c.tok >= tok {
		return true
	}
	if cs := mi.posix[owner]; cs != nil {
		for _, c := range cs {
			if c.typ != 0 && c.tok >= tok {
				return true
			}
		}
	}
	return false
}

// runs returns owner's POSIX locks as maximal runs of one type: what the
// table must hold, split and merged.
func (m *model) runs(ino uint64, owner Owner) ([]LockInfo, error) {
	cs := m.in(ino).posix[owner]
	if cs == nil {
		return nil, nil
	}
	var out []LockInfo
	for i := 0; i < mCells; {
		if cs[i].typ == 0 {
			i++
			continue
		}
		j := i
		for j+1 < mCells && cs[j+1].typ == cs[i].typ {
			j++
		}
		for k := i; k <= j; k++ {
			if cs[k].tok != cs[i].tok {
				return nil, fmt.Errorf("model: tokens differ within a run of %v at %d", owner, k)
			}
		}
		out = append(out, LockInfo{Kind: KindPosix, Owner: owner, Range: cellRange(i, j), Type: cs[i].typ, Token: cs[i].tok})
		i = j + 1
	}
	return out, nil
}

func (m *model) locks(ino uint64) ([]LockInfo, error) {
	mi := m.in(ino)
	var out []LockInfo
	for o := range mi.posix {
		rs, err := m.runs(ino, o)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	for o, c := range mi.flock {
		out = append(out, LockInfo{Kind: KindFlock, Owner: o, Range: Range{0, ToEOF}, Type: c.typ, Token: c.tok})
	}
	slices.SortFunc(out, func(a, b LockInfo) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Range.Start, b.Range.Start),
			cmp.Compare(a.Owner.Session, b.Owner.Session), cmp.Compare(a.Owner.ID, b.Owner.ID))
	})
	return out, nil
}

func (m *model) waiters(ino uint64) []WaitInfo {
	var out []WaitInfo
	for _, w := range m.in(ino).queue {
		out = append(out, WaitInfo{ReqID: w.reqID, Kind: w.kind, Owner: w.owner, Range: cellRange(w.a, w.b), Type: w.typ})
	}
	return out
}

// getLk returns the first conflicting run of another owner: lowest start,
// then owner.
func (m *model) getLk(ino uint64, owner Owner, a, b int, typ LockType) (*LockInfo, error) {
	all, err := m.locks(ino)
	if err != nil {
		return nil, err
	}
	r := cellRange(a, b)
	for _, l := range all { // sorted by start, then owner
		if l.Kind == KindPosix && l.Owner != owner && l.Range.Start <= r.End && r.Start <= l.Range.End && mConflict(l.Type, typ) {
			return &l, nil
		}
	}
	return nil, nil
}
