package lockorder_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"
)

// The levels of these tests, declared once for both builds.
var (
	levelA    = lockorder.Define(10, "A")
	levelKeys = lockorder.DefineOrdered(20, "keyed")
	levelB    = lockorder.Define(30, "B")
	levelLeaf = lockorder.Define(40, "leaf")
)

func newMutex(level lockorder.Level, name string) *lockorder.Mutex {
	m := new(lockorder.Mutex)
	m.Init(level, name)
	return m
}

func newRWMutex(level lockorder.Level, name string) *lockorder.RWMutex {
	m := new(lockorder.RWMutex)
	m.Init(level, name)
	return m
}

// Both types are sync.Lockers (sync.NewCond takes them).
var (
	_ sync.Locker = (*lockorder.Mutex)(nil)
	_ sync.Locker = (*lockorder.RWMutex)(nil)
)

func TestMutexExcludes(t *testing.T) {
	m := newMutex(levelB, "m")
	n := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				m.Lock()
				n++
				m.Unlock()
			}
		})
	}
	wg.Wait()
	if n != 4000 {
		t.Fatalf("n = %d, want 4000", n)
	}
}

func TestTryLock(t *testing.T) {
	m := newMutex(levelB, "m")
	if !m.TryLock() {
		t.Fatal("TryLock of a free Mutex failed")
	}
	done := make(chan bool)
	go func() { done <- m.TryLock() }()
	if <-done {
		t.Fatal("TryLock of a locked Mutex succeeded")
	}
	m.Unlock()
	go func() {
		ok := m.TryLock()
		if ok {
			m.Unlock()
		}
		done <- ok
	}()
	if !<-done {
		t.Fatal("TryLock after Unlock failed")
	}
}

func TestRWMutex(t *testing.T) {
	m := newRWMutex(levelA, "rw")
	// Two readers at once.
	m.RLock()
	read := make(chan bool)
	go func() {
		m.RLock()
		read <- true
		m.RUnlock()
		read <- m.TryLock() // false while the test goroutine reads
	}()
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("a second reader waited")
	}
	if <-read {
		t.Fatal("TryLock succeeded under a read lock")
	}
	m.RUnlock()

	// A writer excludes readers.
	m.Lock()
	go func() { read <- m.TryRLock() }()
	if <-read {
		t.Fatal("TryRLock succeeded under a write lock")
	}
	v := 0
	seen := make(chan int)
	go func() {
		m.RLock()
		got := v
		m.RUnlock()
		seen <- got
	}()
	select {
	case <-seen:
		t.Fatal("RLock did not wait for the writer")
	case <-time.After(20 * time.Millisecond):
	}
	v = 1
	m.Unlock()
	if got := <-seen; got != 1 {
		t.Fatalf("the reader saw %d, want 1", got)
	}
	if !m.TryRLock() {
		t.Fatal("TryRLock of a free RWMutex failed")
	}
	m.RUnlock()
	if !m.TryLock() {
		t.Fatal("TryLock of a free RWMutex failed")
	}
	m.Unlock()
}

// A sync.Cond on a Mutex: a queue of n items, one producer, consumers
// waiting for items while holding a lock of a level above the cond's.
func TestCond(t *testing.T) {
	outer := newMutex(levelA, "outer")
	m := newMutex(levelLeaf, "queue")
	c := sync.NewCond(m)
	queue, got := 0, 0
	var wg sync.WaitGroup
	const consumers, items = 3, 300
	for range consumers {
		wg.Go(func() {
			for {
				outer.Lock()
				m.Lock()
				for queue == 0 && got < items {
					c.Wait()
				}
				if got == items {
					m.Unlock()
					outer.Unlock()
					return
				}
				queue--
				got++
				if got == items {
					c.Broadcast()
				}
				m.Unlock()
				outer.Unlock()
			}
		})
	}
	for range items {
		m.Lock()
		queue++
		c.Signal()
		m.Unlock()
	}
	wg.Wait()
	if got != items || queue != 0 {
		t.Fatalf("got %d, queue %d", got, queue)
	}
}

func TestCondRWMutex(t *testing.T) {
	m := newRWMutex(levelLeaf, "rw")
	c := sync.NewCond(m)
	ready := false
	done := make(chan struct{})
	go func() {
		m.Lock()
		for !ready {
			c.Wait()
		}
		m.Unlock()
		close(done)
	}()
	m.Lock()
	ready = true
	m.Unlock()
	c.Broadcast()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not woken")
	}
}

// Benchmarks of an uncontended lock and unlock; run them with and without
// -tags lockcheck. Without it the lockorder ones cost what the sync ones do.

// counter is what the benchmarks' critical sections touch.
var counter int

func BenchmarkMutex(b *testing.B) {
	b.Run("sync", func(b *testing.B) {
		var m sync.Mutex
		for i := 0; i < b.N; i++ {
			m.Lock()
			counter++
			m.Unlock()
		}
	})
	b.Run("lockorder", func(b *testing.B) {
		var m lockorder.Mutex
		m.Init(levelB, "m")
		for i := 0; i < b.N; i++ {
			m.Lock()
			counter++
			m.Unlock()
		}
	})
}

func BenchmarkRWMutexWrite(b *testing.B) {
	b.Run("sync", func(b *testing.B) {
		var m sync.RWMutex
		for i := 0; i < b.N; i++ {
			m.Lock()
			counter++
			m.Unlock()
		}
	})
	b.Run("lockorder", func(b *testing.B) {
		var m lockorder.RWMutex
		m.Init(levelB, "rw")
		for i := 0; i < b.N; i++ {
			m.Lock()
			counter++
			m.Unlock()
		}
	})
}

func BenchmarkRWMutexRead(b *testing.B) {
	b.Run("sync", func(b *testing.B) {
		var m sync.RWMutex
		for i := 0; i < b.N; i++ {
			m.RLock()
			_ = counter
			m.RUnlock()
		}
	})
	b.Run("lockorder", func(b *testing.B) {
		var m lockorder.RWMutex
		m.Init(levelB, "rw")
		for i := 0; i < b.N; i++ {
			m.RLock()
			_ = counter
			m.RUnlock()
		}
	})
}

// Contended: every goroutine of RunParallel takes the one lock.
func BenchmarkMutexParallel(b *testing.B) {
	b.Run("sync", func(b *testing.B) {
		var m sync.Mutex
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Lock()
				counter++
				m.Unlock()
			}
		})
	})
	b.Run("lockorder", func(b *testing.B) {
		var m lockorder.Mutex
		m.Init(levelB, "m")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Lock()
				counter++
				m.Unlock()
			}
		})
	})
}
