//go:build lockcheck

package lockorder

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
)

// Enabled reports whether this build checks the lock order (build tag
// lockcheck).
const Enabled = true

// Define declares level n, whose locks are taken one at a time, and
// returns it. name describes the level in violation messages.
func Define(n Level, name string) Level { return define(n, name, false) }

// DefineOrdered declares level n, of which several locks may be held if
// they are taken in ascending key order (InitKey), and returns it.
func DefineOrdered(n Level, name string) Level { return define(n, name, true) }

// MayWait marks a place where the goroutine may wait (a channel, a cond of
// another mutex, the network): in the checked build it panics if the
// goroutine holds a lock of a level above maxHeld. what names the wait.
func MayWait(what string, maxHeld Level) {
	mayWait(what, maxHeld, false)
}

// NoneHeld marks a place where the goroutine must hold no lock of this
// package: in the checked build it panics if it holds one.
func NoneHeld(what string) {
	mayWait(what, 0, true)
}

// A Mutex is a sync.Mutex with a level. Call Init or InitKey before its
// first use. It must not be copied after first use.
type Mutex struct {
	mu sync.Mutex
	l  info
}

// Init gives m its level (not an ordered one) and a name for messages.
func (m *Mutex) Init(level Level, name string) { m.l.init("Mutex", level, name, 0, false) }

// InitKey gives m a level declared with DefineOrdered, a name and its key
// in that level.
func (m *Mutex) InitKey(level Level, name string, key uint64) {
	m.l.init("Mutex", level, name, key, true)
}

// Lock locks m.
func (m *Mutex) Lock() {
	g := m.l.before("Mutex.Lock", write)
	m.mu.Lock()
	m.l.acquired(g, write, false)
}

// Unlock unlocks m.
func (m *Mutex) Unlock() {
	m.l.release("Mutex.Unlock", write)
	m.mu.Unlock()
}

// TryLock tries to lock m and reports whether it did.
func (m *Mutex) TryLock() bool {
	m.l.mustInit("Mutex.TryLock")
	if !m.mu.TryLock() {
		return false
	}
	m.l.acquired(goid(), write, true)
	return true
}

// An RWMutex is a sync.RWMutex with a level: a read hold counts like a
// write hold in the order. Call Init or InitKey before its first use. It
// must not be copied after first use.
type RWMutex struct {
	mu sync.RWMutex
	l  info
}

// Init gives m its level (not an ordered one) and a name for messages.
func (m *RWMutex) Init(level Level, name string) { m.l.init("RWMutex", level, name, 0, false) }

// InitKey gives m a level declared with DefineOrdered, a name and its key
// in that level.
func (m *RWMutex) InitKey(level Level, name string, key uint64) {
	m.l.init("RWMutex", level, name, key, true)
}

// Lock locks m for writing.
func (m *RWMutex) Lock() {
	g := m.l.before("RWMutex.Lock", write)
	m.mu.Lock()
	m.l.acquired(g, write, false)
}

// Unlock unlocks m for writing.
func (m *RWMutex) Unlock() {
	m.l.release("RWMutex.Unlock", write)
	m.mu.Unlock()
}

// TryLock tries to lock m for writing and reports whether it did.
func (m *RWMutex) TryLock() bool {
	m.l.mustInit("RWMutex.TryLock")
	if !m.mu.TryLock() {
		return false
	}
	m.l.acquired(goid(), write, true)
	return true
}

// RLock locks m for reading.
func (m *RWMutex) RLock() {
	g := m.l.before("RWMutex.RLock", read)
	m.mu.RLock()
	m.l.acquired(g, read, false)
}

// RUnlock undoes one RLock.
func (m *RWMutex) RUnlock() {
	m.l.release("RWMutex.RUnlock", read)
	m.mu.RUnlock()
}

// TryRLock tries to lock m for reading and reports whether it did.
func (m *RWMutex) TryRLock() bool {
	m.l.mustInit("RWMutex.TryRLock")
	if !m.mu.TryRLock() {
		return false
	}
	m.l.acquired(goid(), read, true)
	return true
}

// info is what the checked build knows of a mutex; its address identifies
// the mutex in the held stacks. All but owner is written by Init before the
// mutex is shared and only read afterwards.
type info struct {
	kind    string // "Mutex" or "RWMutex"; "" until Init
	name    string
	level   Level
	key     uint64
	ordered bool
	// owner is the id of the goroutine that holds the mutex locked for
	// writing, 0 if none, under state.mu: Unlock finds the hold without
	// asking for its own goroutine's id, which costs most of a check.
	owner uint64
}

type mode uint8

const (
	write mode = iota
	read
)

// A hold is one lock a goroutine holds.
type hold struct {
	l    *info
	mode mode
	try  bool       // taken by TryLock or TryRLock
	pcs  [8]uintptr // where it was taken
	npc  int
}

type levelDef struct {
	name    string
	ordered bool
}

// state is all the checked build tracks, under one mutex: the declared
// levels and, by goroutine id, the locks each goroutine holds in the order
// it took them. A goroutine holding nothing has no entry.
var state struct {
	mu     sync.Mutex
	levels map[Level]levelDef
	held   map[uint64][]hold
}

func define(n Level, name string, ordered bool) Level {
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.levels == nil {
		state.levels = map[Level]levelDef{}
	}
	if d, ok := state.levels[n]; ok && (d.name != name || d.ordered != ordered) {
		panic(fmt.Sprintf("lockorder: level %d declared twice: as %s and as %s",
			n, levelDesc(n, d), levelDesc(n, levelDef{name, ordered})))
	}
	state.levels[n] = levelDef{name, ordered}
	return n
}

func (l *info) init(kind string, level Level, name string, key uint64, keyed bool) {
	state.mu.Lock()
	d, declared := state.levels[level]
	state.mu.Unlock()
	what := "Init"
	if keyed {
		what = "InitKey"
	}
	switch {
	case name == "":
		panic(fmt.Sprintf("lockorder: %s.%s of %s without a name", kind, what, levelDescOK(level, d, declared)))
	case keyed && !d.ordered:
		panic(fmt.Sprintf("lockorder: %s.%s(%s) of %s: the level is not ordered (DefineOrdered); use Init",
			kind, what, name, levelDescOK(level, d, declared)))
	case !keyed && d.ordered:
		panic(fmt.Sprintf("lockorder: %s.Init(%s) of %s: the level is ordered; use InitKey",
			kind, name, levelDesc(level, d)))
	}
	*l = info{kind: kind, name: name, level: level, key: key, ordered: keyed}
}

func levelDescOK(n Level, d levelDef, declared bool) string {
	if !declared {
		return fmt.Sprintf("level %d, not declared", n)
	}
	return levelDesc(n, d)
}

// levelDesc describes a level: `level 10 "leases", ordered`.
func levelDesc(n Level, d levelDef) string {
	s := fmt.Sprintf("level %d", n)
	if d.name != "" {
		s += fmt.Sprintf(" %q", d.name)
	}
	if d.ordered {
		s += ", ordered"
	}
	return s
}

// desc describes the lock: `dirLease.mu[key 7] (level 10 "leases", ordered)`.
func (l *info) desc(d levelDef, extra string) string {
	s := l.name
	if l.ordered {
		s += fmt.Sprintf("[key %d]", l.key)
	}
	return s + " (" + levelDesc(l.level, d) + extra + ")"
}

func (l *info) mustInit(op string) {
	if l.kind == "" {
		fail(fmt.Sprintf("lockorder: %s of a mutex that has no level: call Init or InitKey before its first use", op))
	}
}

// before checks that the calling goroutine may wait for l now and returns
// the goroutine's id.
func (l *info) before(op string, m mode) uint64 {
	l.mustInit(op)
	g := goid()
	state.mu.Lock()
	hs := state.held[g]
	// Of the held locks l may not follow, name the one it holds itself,
	// or else the one lowest in the hierarchy.
	var h *hold
	for i := range hs {
		c := &hs[i]
		if mayFollow(c.l, l) {
			continue
		}
		if h == nil || c.l == l || h.l != l && !mayFollow(c.l, h.l) {
			h = c
		}
	}
	if h != nil {
		var why string
		switch {
		case h.l == l:
			why = "it already holds it (a second " + op + " would wait for itself)"
		case h.l.level > l.level:
			why = "the held lock is of a higher level (taken later)"
		case !l.ordered:
			why = "the level is not ordered: one lock of it at a time"
		default:
			why = "locks of this level are taken in ascending key order"
		}
		msg := fmt.Sprintf("lockorder: %s of %s while holding %s: %s\n%s",
			op, l.descLocked(""), h.descLocked(), why, heldLocked(hs))
		state.mu.Unlock()
		fail(msg)
	}
	state.mu.Unlock()
	return g
}

// mayFollow reports whether a goroutine holding a may wait for b.
func mayFollow(a, b *info) bool {
	if a.level != b.level {
		return a.level < b.level
	}
	return a.ordered && b.ordered && a.key < b.key
}

func (l *info) descLocked(extra string) string { return l.desc(state.levels[l.level], extra) }

func (h *hold) descLocked() string {
	var extra string
	switch {
	case h.mode == read && h.try:
		extra = ", read, by TryRLock"
	case h.mode == read:
		extra = ", read"
	case h.try:
		extra = ", by TryLock"
	}
	return h.l.descLocked(extra)
}

// heldLocked lists hs, each with where it was taken.
func heldLocked(hs []hold) string {
	var b strings.Builder
	b.WriteString("locks held by this goroutine, first taken first:\n")
	for i := range hs {
		h := &hs[i]
		fmt.Fprintf(&b, "  %s, taken at:\n", h.descLocked())
		frames := runtime.CallersFrames(h.pcs[:h.npc])
		for {
			f, more := frames.Next()
			fmt.Fprintf(&b, "    %s\n      %s:%d\n", f.Function, f.File, f.Line)
			if !more {
				break
			}
		}
	}
	return b.String()
}

func (l *info) acquired(g uint64, m mode, try bool) {
	h := hold{l: l, mode: m, try: try}
	// Skip runtime.Callers, acquired and the Lock method.
	h.npc = runtime.Callers(3, h.pcs[:])
	state.mu.Lock()
	if state.held == nil {
		state.held = map[uint64][]hold{}
	}
	state.held[g] = append(state.held[g], h)
	if m == write {
		l.owner = g
	}
	state.mu.Unlock()
}

// release forgets a hold of l in mode m: for writing, its owner's, which
// need not be the calling goroutine (a lock handed over); for reading, the
// calling goroutine's last one or, if it has none, another goroutine's.
func (l *info) release(op string, m mode) {
	l.mustInit(op)
	if m == write {
		state.mu.Lock()
		if l.owner != 0 && forget(l.owner, l, m) {
			l.owner = 0
			state.mu.Unlock()
			return
		}
	} else {
		g := goid()
		state.mu.Lock()
		if forget(g, l, m) {
			state.mu.Unlock()
			return
		}
		for other := range state.held {
			if forget(other, l, m) {
				state.mu.Unlock()
				return
			}
		}
	}
	msg := fmt.Sprintf("lockorder: %s of %s, which no goroutine holds", op, l.descLocked(""))
	if m == read {
		msg += " for reading"
	}
	state.mu.Unlock()
	fail(msg)
}

func forget(g uint64, l *info, m mode) bool {
	hs := state.held[g]
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].l == l && hs[i].mode == m {
			hs = append(hs[:i], hs[i+1:]...)
			if len(hs) == 0 {
				delete(state.held, g)
			} else {
				state.held[g] = hs
			}
			return true
		}
	}
	return false
}

func mayWait(what string, maxHeld Level, none bool) {
	g := goid()
	state.mu.Lock()
	hs := state.held[g]
	for i := range hs {
		h := &hs[i]
		if !none && h.l.level <= maxHeld {
			continue
		}
		var msg string
		if none {
			msg = fmt.Sprintf("lockorder: %s must hold no lock; holds %s\n%s", what, h.descLocked(), heldLocked(hs))
		} else {
			msg = fmt.Sprintf("lockorder: %s may wait while holding %s; a wait there allows only locks up to %s\n%s",
				what, h.descLocked(), levelDesc(maxHeld, state.levels[maxHeld]), heldLocked(hs))
		}
		state.mu.Unlock()
		fail(msg)
	}
	state.mu.Unlock()
}

// fail panics with msg and the calling goroutine's stack.
func fail(msg string) {
	buf := make([]byte, 64<<10)
	buf = buf[:runtime.Stack(buf, false)]
	panic(msg + "\n" + string(buf))
}
