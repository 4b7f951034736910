//go:build lockcheck

package fs

import (
	"fmt"
	"strings"
	"testing"
)

// TestLockcheckIsWired: in the checked build, the core's mutexes carry
// their levels: taking them against locking.go's order panics.
func TestLockcheckIsWired(t *testing.T) {
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			r := recover()
			if r == nil {
				t.Fatalf("%s: no panic", what)
			}
			if !strings.Contains(fmt.Sprint(r), "lockorder") {
				t.Fatalf("%s: panicked with %v", what, r)
			}
		}()
		f()
	}
	in := newInodeTable().get(5)
	mustPanic("jmu under mu", func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.jmu.Lock()
		in.jmu.Unlock()
	})
	a, b := newDirLease(3, 1), newDirLease(9, 1)
	mustPanic("leases in descending order", func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		a.mu.Lock()
		a.mu.Unlock()
	})
	mustPanic("a lease under its entries", func() {
		a.emu.Lock()
		defer a.emu.Unlock()
		b.mu.RLock()
		b.mu.RUnlock()
	})
	// Allowed: ascending leases, then entries, then jmu, then mu.
	a.mu.Lock()
	b.mu.Lock()
	a.emu.Lock()
	b.emu.Lock()
	in.jmu.Lock()
	in.mu.Lock()
	in.mu.Unlock()
	in.jmu.Unlock()
	b.emu.Unlock()
	a.emu.Unlock()
	b.mu.Unlock()
	a.mu.Unlock()
}
