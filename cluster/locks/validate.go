package locks

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// validate checks the invariants that every operation keeps; the decoder
// refuses a snapshot that breaks one, and the tests call it after every step.
func (t *Table) validate() error {
	queued := 0
	for _, ino := range t.sortedInos() {
		in := t.inodes[ino]
		if len(in.posix) == 0 && len(in.flocks) == 0 && len(in.queue) == 0 {
			return fmt.Errorf("inode %d: empty", ino)
		}
		if err := t.validatePosix(in.posix); err != nil {
			return fmt.Errorf("inode %d: %w", ino, err)
		}
		if err := t.validateFlocks(in.flocks); err != nil {
			return fmt.Errorf("inode %d: %w", ino, err)
		}
		e := newQueueEval(in)
		for i, w := range in.queue {
			if err := t.validateWaiter(w, ino); err != nil {
				return fmt.Errorf("inode %d: waiter %d: %w", ino, w.reqID, err)
			}
			if !e.blocked(w, in.queue[:i]) {
				return fmt.Errorf("inode %d: waiter %d could be granted", ino, w.reqID)
			}
		}
		queued += len(in.queue)
	}
	if queued != len(t.waiters) {
		return fmt.Errorf("%d waiters indexed, %d queued", len(t.waiters), queued)
	}
	return t.validateIndex()
}

func (t *Table) validToken(tok uint64) error {
	if tok == 0 || tok > t.token {
		return fmt.Errorf("token %d outside 1..%d", tok, t.token)
	}
	return nil
}

func (t *Table) validatePosix(posix []seg) error {
	for i, s := range posix {
		if !s.typ.holding() || !s.r.Valid() {
			return fmt.Errorf("posix lock %v %v %+v", s.owner, s.typ, s.r)
		}
		if err := t.validToken(s.token); err != nil {
			return err
		}
		if i == 0 {
			continue
		}
		p := posix[i-1]
		switch c := compareOwners(p.owner, s.owner); {
		case c > 0:
			return errors.New("posix locks not sorted by owner")
		case c < 0:
		case s.r.Start <= p.r.End:
			return fmt.Errorf("posix locks of %v overlap or are unsorted", s.owner)
		case s.typ == p.typ && p.r.touches(s.r):
			return fmt.Errorf("posix locks of %v not merged", s.owner)
		}
	}
	// Locks of different owners must not conflict. Sweep by start, keeping
	// the furthest end seen among all locks and among write locks, for two
	// distinct owners each, since an owner never conflicts with itself.
	byStart := slices.Clone(posix)
	slices.SortFunc(byStart, func(a, b seg) int { return cmp.Compare(a.r.Start, b.r.Start) })
	var all, writes reach
	for _, s := range byStart {
		if end, ok := all.furthest(s.owner); ok && s.typ == Write && end >= s.r.Start {
			return fmt.Errorf("write lock of %v at %d conflicts", s.owner, s.r.Start)
		}
		if end, ok := writes.furthest(s.owner); ok && end >= s.r.Start {
			return fmt.Errorf("lock of %v at %d conflicts with a write lock", s.owner, s.r.Start)
		}
		all.add(s)
		if s.typ == Write {
			writes.add(s)
		}
	}
	return nil
}

// reach keeps the lock with the furthest end (a), and the one with the
// furthest end among owners other than a's (b).
type reach struct {
	a, b       seg
	hasA, hasB bool
}

func (r *reach) add(s seg) {
	switch {
	case !r.hasA || s.r.End > r.a.r.End:
		if r.hasA && r.a.owner != s.owner {
			r.b, r.hasB = r.a, true
		}
		r.a, r.hasA = s, true
	case s.owner != r.a.owner && (!r.hasB || s.r.End > r.b.r.End):
		r.b, r.hasB = s, true
	}
}

// furthest returns the furthest end among locks of owners other than o.
func (r *reach) furthest(o Owner) (uint64, bool) {
	if r.hasA && r.a.owner != o {
		return r.a.r.End, true
	}
	return r.b.r.End, r.hasB
}

func (t *Table) validateFlocks(flocks []seg) error {
	for i, s := range flocks {
		if !s.typ.holding() || s.r != wholeFile {
			return fmt.Errorf("flock %v %v", s.owner, s.typ)
		}
		if err := t.validToken(s.token); err != nil {
			return err
		}
		if i > 0 && compareOwners(flocks[i-1].owner, s.owner) >= 0 {
			return errors.New("flocks not sorted by owner")
		}
		if s.typ == Exclusive && len(flocks) > 1 {
			return errors.New("exclusive flock beside another")
		}
	}
	return nil
}

func (t *Table) validateWaiter(w *waiter, ino uint64) error {
	switch {
	case w.kind != KindPosix && w.kind != KindFlock:
		return fmt.Errorf("kind %v", w.kind)
	case !w.typ.holding():
		return fmt.Errorf("type %v", w.typ)
	case !w.r.Valid() || (w.kind == KindFlock && w.r != wholeFile):
		return fmt.Errorf("range %+v", w.r)
	case w.ino != ino || t.waiters[w.reqID] != w:
		return errors.New("not indexed")
	}
	return nil
}

// validateIndex checks the derived state against the locks and queues.
func (t *Table) validateIndex() error {
	held := make(map[Owner]map[uint64]bool)
	waits := make(map[Owner]map[uint64]int)
	for _, ino := range t.sortedInos() {
		in := t.inodes[ino]
		if in.ino != ino {
			return fmt.Errorf("inode %d filed as %d", in.ino, ino)
		}
		for _, s := range in.posix {
			if held[s.owner] == nil {
				held[s.owner] = make(map[uint64]bool)
			}
			held[s.owner][ino] = true
		}
		for i, w := range in.queue {
			if w.seq > t.seq || (i > 0 && w.seq <= in.queue[i-1].seq) {
				return fmt.Errorf("inode %d: waiter %d out of sequence", ino, w.reqID)
			}
			if w.kind == KindPosix {
				if waits[w.owner] == nil {
					waits[w.owner] = make(map[uint64]int)
				}
				waits[w.owner][ino]++
			}
		}
	}
	if !maps.EqualFunc(held, t.posixInos, maps.Equal) || !maps.EqualFunc(waits, t.posixWaits, maps.Equal) {
		return errors.New("owner index out of date")
	}
	return nil
}
