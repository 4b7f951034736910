// Package locks is the cluster-wide lock table of ecfs: flock and POSIX
// (fcntl) byte-range locks, their FIFO wait queues, deadlock detection and
// fencing tokens.
//
// It is a pure state machine for the Raft FSM: no I/O, no clock, no
// randomness, no goroutines. Every method is deterministic given the table
// and its arguments, so every replica that applies the same log ends in the
// same state (Digest compares them). A Table is not safe for concurrent use;
// the FSM applies one command at a time.
//
// Non-blocking requests (SetLk, Flock) follow the kernel: a request is
// granted when no lock of another owner conflicts with it. The FSM cannot
// block, so a blocking request (F_SETLKW, flock without LOCK_NB) is a Wait:
// it is granted at once if it can be, else it joins the inode's FIFO queue,
// and the table grants queued requests itself when locks go away; every call
// that can release a lock returns the requests it granted ([]Grant).
//
// Fencing: every grant that changes the state takes a new token from a
// counter that only grows; Holds checks a token that a writer presents.
//
// flock and POSIX locks are independent of each other, as in Linux.
//
// Cost: a request or a release costs time linear in the locks and the queued
// requests of its inode (a queue is scanned once per release, unless a
// granted request lowers a lock); ReleaseSession is linear in the table; a
// deadlock check visits the queues of the inodes where the owners that
// wait, directly or not, for the requester hold locks or wait.
package locks

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Sentinel errors.
var (
	// ErrInvalid: a kind, lock type or range that the call does not take.
	ErrInvalid = errors.New("locks: invalid argument")
	// ErrDeadlock: the POSIX request would wait for its own owner (EDEADLK).
	ErrDeadlock = errors.New("locks: deadlock")
	// ErrDuplicate: a waiter with this request id is already queued.
	ErrDuplicate = errors.New("locks: duplicate request id")
	// ErrCorrupt: a snapshot that is truncated, altered or inconsistent.
	ErrCorrupt = errors.New("locks: corrupt snapshot")
)

// ToEOF as Range.End means "to the end of the file, however far it grows".
const ToEOF = math.MaxUint64

// wholeFile is the range of every flock.
var wholeFile = Range{Start: 0, End: ToEOF}

// Owner holds locks. Session is a mount's session: all its locks and waiters
// go when it ends or expires. ID is the kernel's lock owner within it: for
// POSIX locks one per process (files struct), for flock one per open file
// description.
type Owner struct {
	Session uint64
	ID      uint64
}

func (o Owner) String() string { return fmt.Sprintf("%d/%d", o.Session, o.ID) }

func compareOwners(a, b Owner) int {
	if c := cmp.Compare(a.Session, b.Session); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// LockType is the type of a request or a lock. The zero value is invalid.
type LockType uint8

// POSIX lock types; flock uses Shared and Exclusive, the same values.
const (
	Read LockType = iota + 1
	Write
	Unlock

	Shared    = Read
	Exclusive = Write
)

func (t LockType) String() string {
	switch t {
	case Read:
		return "read"
	case Write:
		return "write"
	case Unlock:
		return "unlock"
	}
	return fmt.Sprintf("LockType(%d)", uint8(t))
}

// holding reports whether t is a type a lock can have (Read or Write).
func (t LockType) holding() bool { return t == Read || t == Write }

// conflict reports whether locks of types a and b of two owners, on
// overlapping ranges, conflict.
func conflict(a, b LockType) bool { return a == Write || b == Write }

// Kind tells POSIX byte-range locks from flock locks. The zero value is
// invalid.
type Kind uint8

// Lock kinds.
const (
	KindPosix Kind = iota + 1
	KindFlock
)

func (k Kind) String() string {
	switch k {
	case KindPosix:
		return "posix"
	case KindFlock:
		return "flock"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Range is a byte range, both ends inclusive; End == ToEOF reaches the end of
// the file. A flock covers {0, ToEOF}.
type Range struct {
	Start, End uint64
}

// Valid reports whether r is a range: Start <= End.
func (r Range) Valid() bool { return r.Start <= r.End }

func (r Range) overlaps(s Range) bool { return r.Start <= s.End && s.Start <= r.End }

// touches reports whether r and s overlap or are adjacent.
func (r Range) touches(s Range) bool {
	return r.overlaps(s) || (r.End != ToEOF && r.End+1 == s.Start) || (s.End != ToEOF && s.End+1 == r.Start)
}

func (r Range) contains(s Range) bool { return r.Start <= s.Start && s.End <= r.End }

// LockInfo describes a held lock.
type LockInfo struct {
	Kind  Kind
	Owner Owner
	Range Range
	Type  LockType // Read (Shared) or Write (Exclusive)
	Token uint64   // the fencing token of the grant that made this lock
	Pid   uint32   // POSIX: the process that asked for it (F_GETLK reports it); 0 unknown
}

// WaitInfo describes a queued request.
type WaitInfo struct {
	ReqID uint64
	Kind  Kind
	Owner Owner
	Range Range
	Type  LockType
	Pid   uint32
}

// Grant is a queued request that the table granted: the caller answers the
// blocked request ReqID with Token.
type Grant struct {
	ReqID uint64
	Ino   uint64
	Owner Owner
	Token uint64
}

// Result is the outcome of a request: the fencing token of the lock the owner
// now holds (0 for an unlock), and the queued requests that the change
// granted, in the order granted. Each grant takes a new token, above those
// before it, unless its owner already held what it asked for (another of its
// requests just got it): it then gets the token of that lock.
type Result struct {
	Token  uint64
	Grants []Grant
}

// Counts sums up a table.
type Counts struct {
	Inodes  int // inodes with a lock or a waiter
	Posix   int // POSIX ranges held
	Flocks  int // flock locks held
	Waiters int // queued requests
}

// Table is the lock state of the whole file system.
type Table struct {
	token   uint64 // the last fencing token given; only grows
	inodes  map[uint64]*inode
	waiters map[uint64]*waiter // by request id
	// Derived state, which snapshots do not carry: for deadlock detection,
	// the inodes where each owner holds POSIX locks and the number of its
	// queued POSIX requests on each inode; and the last waiter's seq.
	posixInos  map[Owner]map[uint64]bool
	posixWaits map[Owner]map[uint64]int
	seq        uint64
}

// inode is the lock state of one inode.
type inode struct {
	ino uint64
	// posix is sorted by owner, then start. An owner's ranges are disjoint,
	// and two of them of the same type never touch (they are merged).
	posix []seg
	// flocks is sorted by owner, each over wholeFile.
	flocks []seg
	// queue holds the waiters of both kinds, oldest first.
	queue []*waiter
}

// seg is a held lock.
type seg struct {
	owner Owner
	r     Range
	typ   LockType
	token uint64
	pid   uint32 // POSIX: the process that asked (a lock split keeps it, a merge takes the new one's)
}

// waiter is a queued request.
type waiter struct {
	reqID uint64
	ino   uint64
	kind  Kind
	owner Owner
	r     Range // wholeFile for flock
	typ   LockType
	pid   uint32
	seq   uint64 // orders the requests of a queue
}

// New returns an empty table.
func New() *Table {
	return &Table{
		inodes:     make(map[uint64]*inode),
		waiters:    make(map[uint64]*waiter),
		posixInos:  make(map[Owner]map[uint64]bool),
		posixWaits: make(map[Owner]map[uint64]int),
	}
}

// Token returns the last fencing token given (0 before the first grant).
func (t *Table) Token() uint64 { return t.token }

// next returns a new fencing token.
func (t *Table) next() uint64 {
	t.token++
	return t.token
}

// inode returns the state of ino, creating it; callers end with gc(ino).
func (t *Table) inode(ino uint64) *inode {
	in := t.inodes[ino]
	if in == nil {
		in = &inode{ino: ino}
		t.inodes[ino] = in
	}
	return in
}

// indexPosix updates posixInos after owner's POSIX locks on in changed.
func (t *Table) indexPosix(in *inode, owner Owner) {
	inos := t.posixInos[owner]
	if lo, hi := in.ownerSpan(owner); lo < hi {
		if inos == nil {
			inos = make(map[uint64]bool)
			t.posixInos[owner] = inos
		}
		inos[in.ino] = true
		return
	}
	delete(inos, in.ino)
	if len(inos) == 0 {
		delete(t.posixInos, owner)
	}
}

// gc forgets ino if nothing is left on it.
func (t *Table) gc(ino uint64) {
	if in := t.inodes[ino]; in != nil && len(in.posix) == 0 && len(in.flocks) == 0 && len(in.queue) == 0 {
		delete(t.inodes, ino)
	}
}

// sortedInos returns the inode numbers in ascending order.
func (t *Table) sortedInos() []uint64 {
	inos := make([]uint64, 0, len(t.inodes))
	for ino := range t.inodes {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	return inos
}

func (in *inode) held(kind Kind) []seg {
	if kind == KindFlock {
		return in.flocks
	}
	return in.posix
}

// ownerSpan returns the bounds of owner's ranges in in.posix.
func (in *inode) ownerSpan(owner Owner) (lo, hi int) {
	lo, _ = slices.BinarySearchFunc(in.posix, owner, func(s seg, o Owner) int {
		if compareOwners(s.owner, o) < 0 {
			return -1
		}
		return 1
	})
	hi = lo
	for hi < len(in.posix) && in.posix[hi].owner == owner {
		hi++
	}
	return lo, hi
}

// ownerLocks returns owner's locks of kind on the inode.
func (in *inode) ownerLocks(kind Kind, owner Owner) []seg {
	if kind == KindFlock {
		if i, ok := in.flockIndex(owner); ok {
			return in.flocks[i : i+1]
		}
		return nil
	}
	lo, hi := in.ownerSpan(owner)
	return in.posix[lo:hi]
}

// Holds reports whether owner holds a lock (flock or POSIX) on ino that was
// granted with token or a later one: a writer presents the token of its
// grant to prove it still holds its lock. Token 0 is never held.
func (t *Table) Holds(ino uint64, owner Owner, token uint64) bool {
	in := t.inodes[ino]
	if in == nil || token == 0 {
		return false
	}
	for _, kind := range []Kind{KindPosix, KindFlock} {
		for _, s := range in.ownerLocks(kind, owner) {
			if s.token >= token {
				return true
			}
		}
	}
	return false
}

func (s seg) info(kind Kind) LockInfo {
	return LockInfo{Kind: kind, Owner: s.owner, Range: s.r, Type: s.typ, Token: s.token, Pid: s.pid}
}

// compareInfos orders locks by kind, start, owner, end.
func compareInfos(a, b LockInfo) int {
	if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Range.Start, b.Range.Start); c != 0 {
		return c
	}
	if c := compareOwners(a.Owner, b.Owner); c != 0 {
		return c
	}
	return cmp.Compare(a.Range.End, b.Range.End)
}

// Locks lists the locks held on ino: POSIX locks first, then flock; each by
// start, then owner.
func (t *Table) Locks(ino uint64) []LockInfo {
	in := t.inodes[ino]
	if in == nil {
		return nil
	}
	out := make([]LockInfo, 0, len(in.posix)+len(in.flocks))
	for _, s := range in.posix {
		out = append(out, s.info(KindPosix))
	}
	for _, s := range in.flocks {
		out = append(out, s.info(KindFlock))
	}
	slices.SortFunc(out, compareInfos)
	return out
}

// Waiters lists the requests queued on ino, oldest first.
func (t *Table) Waiters(ino uint64) []WaitInfo {
	in := t.inodes[ino]
	if in == nil {
		return nil
	}
	out := make([]WaitInfo, 0, len(in.queue))
	for _, w := range in.queue {
		out = append(out, WaitInfo{ReqID: w.reqID, Kind: w.kind, Owner: w.owner, Range: w.r, Type: w.typ, Pid: w.pid})
	}
	return out
}

// Counts sums up the table.
func (t *Table) Counts() Counts {
	c := Counts{Inodes: len(t.inodes), Waiters: len(t.waiters)}
	for _, in := range t.inodes {
		c.Posix += len(in.posix)
		c.Flocks += len(in.flocks)
	}
	return c
}

// apply makes owner's lock of kind on r be typ, ignoring other owners, and
// returns the token of the lock now held (0 for Unlock) and whether the state
// changed. A request the owner already holds keeps its token (and pid).
func (t *Table) apply(in *inode, kind Kind, owner Owner, r Range, typ LockType, pid uint32) (uint64, bool) {
	if kind == KindFlock {
		return t.setFlock(in, owner, typ)
	}
	return t.setPosix(in, owner, r, typ, pid)
}

// ReleaseSession drops every lock and every waiter of session (it ended or
// expired) and returns the queued requests this grants: inode by inode in
// ascending order, oldest first within an inode.
func (t *Table) ReleaseSession(session uint64) []Grant {
	var grants []Grant
	mine := func(s seg) bool { return s.owner.Session == session }
	for _, ino := range t.sortedInos() {
		in := t.inodes[ino]
		n := len(in.posix) + len(in.flocks) + len(in.queue)
		var gone []Owner
		for _, s := range in.posix {
			if mine(s) && (len(gone) == 0 || gone[len(gone)-1] != s.owner) {
				gone = append(gone, s.owner)
			}
		}
		in.posix = slices.DeleteFunc(in.posix, mine)
		for _, o := range gone {
			t.indexPosix(in, o)
		}
		in.flocks = slices.DeleteFunc(in.flocks, mine)
		in.queue = slices.DeleteFunc(in.queue, func(w *waiter) bool {
			if w.owner.Session != session {
				return false
			}
			t.unindex(w)
			return true
		})
		if len(in.posix)+len(in.flocks)+len(in.queue) != n {
			grants = append(grants, t.grantWaiters(ino)...)
		}
		t.gc(ino)
	}
	return grants
}
