//go:build lockcheck

package lockorder_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/ecfs/ecfs/fs/internal/lockorder"
)

// mustPanic runs f and checks that it panics with a lockorder message
// holding every one of want.
func mustPanic(t *testing.T, f func(), want ...string) {
	t.Helper()
	msg := func() (msg string) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			s, ok := r.(string)
			if !ok {
				panic(r)
			}
			msg = s
		}()
		f()
		return ""
	}()
	if msg == "" {
		t.Errorf("no panic; want one saying %q", want)
		return
	}
	for _, w := range append([]string{"lockorder: "}, want...) {
		if !strings.Contains(msg, w) {
			t.Errorf("panic message lacks %q:\n%s", w, msg)
		}
	}
}

// heldNothing checks that the test's goroutine is back to holding nothing.
func heldNothing(t *testing.T) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("still holding locks: %v", r)
		}
	}()
	lockorder.NoneHeld("the end of the test")
}

func newKeyed(key uint64) *lockorder.Mutex {
	m := new(lockorder.Mutex)
	m.InitKey(levelKeys, "keyed", key)
	return m
}

func TestCheckedBuildEnabled(t *testing.T) {
	if !lockorder.Enabled {
		t.Fatal("Enabled is false under -tags lockcheck")
	}
}

// Violations.

func TestLevelsOutOfOrder(t *testing.T) {
	a, b := newMutex(levelA, "a-lock"), newMutex(levelB, "b-lock")
	b.Lock()
	mustPanic(t, a.Lock,
		`Mutex.Lock of a-lock (level 10 "A") while holding b-lock (level 30 "B")`,
		"higher level",
		"taken at:", "TestLevelsOutOfOrder", // where b was taken
		"goroutine ", // the stack
	)
	b.Unlock()
	// a was not taken: it is free.
	if !a.TryLock() {
		t.Fatal("the refused Lock left a locked")
	}
	a.Unlock()
	heldNothing(t)
}

func TestSameUnorderedLevel(t *testing.T) {
	b1, b2 := newMutex(levelB, "b1"), newMutex(levelB, "b2")
	b1.Lock()
	mustPanic(t, b2.Lock, `of b2 (level 30 "B") while holding b1 (level 30 "B")`, "not ordered")
	b1.Unlock()
	heldNothing(t)
}

func TestKeysDescending(t *testing.T) {
	k3, k5, other5 := newKeyed(3), newKeyed(5), newKeyed(5)
	k5.Lock()
	mustPanic(t, k3.Lock, `of keyed[key 3] (level 20 "keyed", ordered) while holding keyed[key 5] (level 20 "keyed", ordered)`, "ascending key order")
	mustPanic(t, other5.Lock, "of keyed[key 5]", "while holding keyed[key 5]", "ascending key order")
	k5.Unlock()
	heldNothing(t)
}

// Of several held locks in the way, the message names the one lowest in
// the hierarchy, or the lock itself if it is held.
func TestNamesWorstConflict(t *testing.T) {
	k1, k3, b := newKeyed(1), newKeyed(3), newMutex(levelB, "inode")
	k3.Lock()
	b.Lock()
	mustPanic(t, k1.Lock, "of keyed[key 1]", `while holding inode (level 30 "B"): the held lock is of a higher level`)
	mustPanic(t, k3.Lock, "of keyed[key 3]", "while holding keyed[key 3]", "already holds it")
	b.Unlock()
	k3.Unlock()
	heldNothing(t)
}

func TestRelockSelf(t *testing.T) {
	m := newMutex(levelB, "m")
	m.Lock()
	mustPanic(t, m.Lock, "already holds it")
	m.Unlock()

	rw := newRWMutex(levelB, "rw")
	rw.RLock()
	mustPanic(t, rw.RLock, "RWMutex.RLock of rw", "already holds it")
	mustPanic(t, rw.Lock, "RWMutex.Lock of rw", "already holds it")
	rw.RUnlock()
	heldNothing(t)
}

func TestRLockOutOfOrder(t *testing.T) {
	rw, b := newRWMutex(levelA, "rw"), newMutex(levelB, "b")
	b.Lock()
	mustPanic(t, rw.RLock, `RWMutex.RLock of rw (level 10 "A") while holding b (level 30 "B")`)
	b.Unlock()

	// A read hold counts like a write hold.
	rwb := newRWMutex(levelB, "rwb")
	rwb.RLock()
	mustPanic(t, rw.Lock, "RWMutex.Lock of rw", `while holding rwb (level 30 "B", read)`)
	rwb.RUnlock()
	heldNothing(t)
}

// Cond.Wait unlocks its mutex and takes it back: holding, across the wait,
// a lock taken after the cond's mutex is a violation when it is taken back.
func TestCondRelockOutOfOrder(t *testing.T) {
	m, b := newMutex(levelA, "cond-mutex"), newMutex(levelB, "b")
	c := sync.NewCond(m)
	m.Lock()
	b.Lock()
	go func() {
		m.Lock() // waits until Wait lets m go
		c.Broadcast()
		m.Unlock()
	}()
	mustPanic(t, c.Wait, `Mutex.Lock of cond-mutex (level 10 "A") while holding b (level 30 "B")`, "sync.(*Cond).Wait")
	// The panic left m unlocked, as Wait does on the way out.
	b.Unlock()
	heldNothing(t)
}

func TestMayWait(t *testing.T) {
	a, b := newMutex(levelA, "a"), newMutex(levelB, "b")
	a.Lock()
	lockorder.MayWait("a wait allowing A", levelA)
	b.Lock()
	mustPanic(t, func() { lockorder.MayWait("the journal's drain", levelKeys) },
		`the journal's drain may wait while holding b (level 30 "B")`, `only locks up to level 20 "keyed", ordered`)
	lockorder.MayWait("a wait allowing B", levelB)
	mustPanic(t, func() { lockorder.NoneHeld("the upload") }, `the upload must hold no lock; holds a (level 10 "A")`)
	a.Unlock()
	b.Unlock()

	// A lock got with TryLock is held all the same.
	if !b.TryLock() {
		t.Fatal("TryLock of a free lock failed")
	}
	mustPanic(t, func() { lockorder.NoneHeld("the upload") }, `holds b (level 30 "B", by TryLock)`)
	b.Unlock()
	heldNothing(t)
}

func TestNoLevel(t *testing.T) {
	var m lockorder.Mutex
	mustPanic(t, m.Lock, "Mutex.Lock of a mutex that has no level", "Init")
	mustPanic(t, func() { m.TryLock() }, "Mutex.TryLock of a mutex that has no level")
	var rw lockorder.RWMutex
	mustPanic(t, rw.RLock, "RWMutex.RLock of a mutex that has no level")
	mustPanic(t, func() { rw.TryRLock() }, "RWMutex.TryRLock of a mutex that has no level")
	heldNothing(t)
}

func TestBadDeclarations(t *testing.T) {
	var m lockorder.Mutex
	mustPanic(t, func() { m.InitKey(levelB, "m", 1) }, `Mutex.InitKey(m) of level 30 "B": the level is not ordered`)
	mustPanic(t, func() { m.InitKey(99, "m", 1) }, "level 99, not declared")
	mustPanic(t, func() { m.Init(levelKeys, "m") }, `Mutex.Init(m) of level 20 "keyed", ordered: the level is ordered; use InitKey`)
	mustPanic(t, func() { m.Init(levelB, "") }, "without a name")
	mustPanic(t, func() { lockorder.DefineOrdered(levelB, "B") }, "level 30 declared twice")
	mustPanic(t, func() { lockorder.Define(levelB, "other") }, "level 30 declared twice")
	lockorder.Define(levelB, "B") // the same again is no conflict
	m.Init(99, "undeclared")      // an undeclared level is unordered
	m.Lock()
	mustPanic(t, func() { lockorder.NoneHeld("here") }, "holds undeclared (level 99)")
	m.Unlock()
	heldNothing(t)
}

func TestUnlockUnheld(t *testing.T) {
	m := newMutex(levelB, "m")
	mustPanic(t, m.Unlock, `Mutex.Unlock of m (level 30 "B"), which no goroutine holds`)
	rw := newRWMutex(levelB, "rw")
	rw.Lock()
	mustPanic(t, rw.RUnlock, "RWMutex.RUnlock of rw", "which no goroutine holds for reading")
	rw.Unlock()
	heldNothing(t)
}

// Allowed patterns.

func TestAscendingAllowed(t *testing.T) {
	rw, b, leaf := newRWMutex(levelA, "rw"), newMutex(levelB, "b"), newMutex(levelLeaf, "leaf")
	keys := []*lockorder.Mutex{newKeyed(1), newKeyed(5), newKeyed(9)}
	rw.RLock()
	for _, k := range keys {
		k.Lock()
	}
	b.Lock()
	leaf.Lock()
	lockorder.MayWait("a wait allowing everything", levelLeaf)
	// Released in any order.
	keys[1].Unlock()
	rw.RUnlock()
	leaf.Unlock()
	keys[0].Unlock()
	b.Unlock()
	keys[2].Unlock()
	heldNothing(t)

	// Skipping levels, and the same lock again once released.
	rw.Lock()
	leaf.Lock()
	lockorder.MayWait("under the leaf", levelLeaf)
	leaf.Unlock()
	leaf.Lock()
	lockorder.MayWait("under the leaf again", levelLeaf)
	leaf.Unlock()
	lockorder.MayWait("under rw", levelA)
	rw.Unlock()
	heldNothing(t)
}

func TestTryLockOutOfOrderAllowed(t *testing.T) {
	a, rw, leaf := newMutex(levelA, "a"), newRWMutex(levelA, "rw"), newMutex(levelLeaf, "leaf")
	k5, k3 := newKeyed(5), newKeyed(3)
	leaf.Lock()
	if !a.TryLock() {
		t.Fatal("TryLock failed")
	}
	if !rw.TryRLock() {
		t.Fatal("TryRLock failed")
	}
	leaf.Unlock()
	a.Unlock()
	rw.RUnlock()

	k5.Lock()
	if !k3.TryLock() {
		t.Fatal("TryLock failed")
	}
	k3.Unlock()
	k5.Unlock()
	heldNothing(t)
}

// A lock may be let go by another goroutine than the one that took it.
func TestUnlockElsewhere(t *testing.T) {
	m := newMutex(levelB, "m")
	m.Lock()
	done := make(chan struct{})
	go func() {
		m.Unlock()
		close(done)
	}()
	<-done
	heldNothing(t)
	a := newMutex(levelA, "a")
	a.Lock() // allowed: m is no longer held here
	lockorder.MayWait("under a", levelA)
	a.Unlock()
}

// Many goroutines take the locks of a small hierarchy in order at once;
// run it under -race.
func TestConcurrentAllowed(t *testing.T) {
	svc := newRWMutex(levelA, "svc")
	var keyed [8]*lockorder.Mutex
	for i := range keyed {
		keyed[i] = newKeyed(uint64(i))
	}
	var inodes [4]*lockorder.Mutex
	for i := range inodes {
		inodes[i] = newMutex(levelB, fmt.Sprintf("inode %d", i))
	}
	leaf := newMutex(levelLeaf, "leaf")
	cond := sync.NewCond(leaf)
	count := 0
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 300 {
				write := r.IntN(4) == 0
				if write {
					svc.Lock()
				} else {
					svc.RLock()
				}
				// An ascending subset of the keyed locks.
				var took []*lockorder.Mutex
				for _, k := range keyed {
					if r.IntN(3) == 0 {
						k.Lock()
						took = append(took, k)
					}
				}
				in := inodes[r.IntN(len(inodes))]
				in.Lock()
				leaf.Lock()
				count++
				cond.Broadcast()
				if other := inodes[r.IntN(len(inodes))]; other != in && other.TryLock() {
					other.Unlock()
				}
				leaf.Unlock()
				// Release in a random order.
				r.Shuffle(len(took), func(i, j int) { took[i], took[j] = took[j], took[i] })
				for _, k := range took {
					k.Unlock()
				}
				in.Unlock()
				if write {
					svc.Unlock()
				} else {
					svc.RUnlock()
				}
			}
			lockorder.NoneHeld("the end of a goroutine")
		})
	}
	// A waiter on the cond, holding a lock above the cond's mutex.
	outer := newMutex(levelA, "outer")
	wg.Go(func() {
		outer.Lock()
		leaf.Lock()
		for count < 8*300/2 {
			cond.Wait()
		}
		leaf.Unlock()
		outer.Unlock()
	})
	wg.Wait()
	heldNothing(t)
}
