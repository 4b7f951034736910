//go:build !lockcheck

package lockorder_test

import (
	"sync"
	"testing"
	"unsafe"

	"github.com/ecfs/ecfs/fs/internal/lockorder"
)

// The normal build is the sync types: no bigger, no allocation.
func TestNormalBuildIsSync(t *testing.T) {
	if lockorder.Enabled {
		t.Fatal("Enabled without -tags lockcheck")
	}
	if a, b := unsafe.Sizeof(lockorder.Mutex{}), unsafe.Sizeof(sync.Mutex{}); a != b {
		t.Errorf("Mutex is %d bytes, sync.Mutex %d", a, b)
	}
	if a, b := unsafe.Sizeof(lockorder.RWMutex{}), unsafe.Sizeof(sync.RWMutex{}); a != b {
		t.Errorf("RWMutex is %d bytes, sync.RWMutex %d", a, b)
	}
	var m lockorder.Mutex
	var rw lockorder.RWMutex
	allocs := testing.AllocsPerRun(100, func() {
		m.Init(levelB, "m")
		rw.InitKey(levelKeys, "rw", 7)
		m.Lock()
		rw.RLock()
		lockorder.MayWait("wait", levelA)
		lockorder.NoneHeld("nothing")
		rw.RUnlock()
		m.Unlock()
		if m.TryLock() {
			m.Unlock()
		}
		if rw.TryRLock() {
			rw.RUnlock()
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

// Unchecked, an uninitialised mutex is a plain one and nothing panics.
func TestNormalBuildChecksNothing(t *testing.T) {
	var m lockorder.Mutex
	var rw lockorder.RWMutex
	leaf := newMutex(levelLeaf, "leaf")
	leaf.Lock()
	m.Lock()
	rw.RLock()
	lockorder.MayWait("wait", levelA)
	lockorder.NoneHeld("nothing")
	leaf.Unlock()
	m.Unlock()
	rw.RUnlock()
}
