//go:build !lockcheck

package lockorder

import "sync"

// Enabled reports whether this build checks the lock order (build tag
// lockcheck).
const Enabled = false

// Define declares level n, whose locks are taken one at a time, and
// returns it. name describes the level in violation messages.
func Define(n Level, name string) Level { return n }

// DefineOrdered declares level n, of which several locks may be held if
// they are taken in ascending key order (InitKey), and returns it.
func DefineOrdered(n Level, name string) Level { return n }

// MayWait marks a place where the goroutine may wait (a channel, a cond of
// another mutex, the network): in the checked build it panics if the
// goroutine holds a lock of a level above maxHeld. what names the wait.
func MayWait(what string, maxHeld Level) {}

// NoneHeld marks a place where the goroutine must hold no lock of this
// package: in the checked build it panics if it holds one.
func NoneHeld(what string) {}

// A Mutex is a sync.Mutex with a level. Call Init or InitKey before its
// first use. It must not be copied after first use.
type Mutex struct {
	mu sync.Mutex
}

// Init gives m its level (not an ordered one) and a name for messages.
func (m *Mutex) Init(level Level, name string) {}

// InitKey gives m a level declared with DefineOrdered, a name and its key
// in that level.
func (m *Mutex) InitKey(level Level, name string, key uint64) {}

// Lock locks m.
func (m *Mutex) Lock() { m.mu.Lock() }

// Unlock unlocks m.
func (m *Mutex) Unlock() { m.mu.Unlock() }

// TryLock tries to lock m and reports whether it did.
func (m *Mutex) TryLock() bool { return m.mu.TryLock() }

// An RWMutex is a sync.RWMutex with a level: a read hold counts like a
// write hold in the order. Call Init or InitKey before its first use. It
// must not be copied after first use.
type RWMutex struct {
	mu sync.RWMutex
}

// Init gives m its level (not an ordered one) and a name for messages.
func (m *RWMutex) Init(level Level, name string) {}

// InitKey gives m a level declared with DefineOrdered, a name and its key
// in that level.
func (m *RWMutex) InitKey(level Level, name string, key uint64) {}

// Lock locks m for writing.
func (m *RWMutex) Lock() { m.mu.Lock() }

// Unlock unlocks m for writing.
func (m *RWMutex) Unlock() { m.mu.Unlock() }

// TryLock tries to lock m for writing and reports whether it did.
func (m *RWMutex) TryLock() bool { return m.mu.TryLock() }

// RLock locks m for reading.
func (m *RWMutex) RLock() { m.mu.RLock() }

// RUnlock undoes one RLock.
func (m *RWMutex) RUnlock() { m.mu.RUnlock() }

// TryRLock tries to lock m for reading and reports whether it did.
func (m *RWMutex) TryRLock() bool { return m.mu.TryRLock() }
