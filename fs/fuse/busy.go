package fuse

import (
	"sync"
	"time"
)

// busyDirs counts the requests in progress by the directory whose lock the
// kernel may hold while it waits for them: every request that changes a
// directory's entries (its node, and a rename's second directory), lists
// it, looks a name up in it, or changes the directory's own attributes or
// extended attributes. The kernel's invalidation of a name takes that
// lock: made while a request of this mount holds it, it waits for that
// request, and a mount killed then stays stuck in the kernel
// (fs.Invalidator).
//
// The count misses a request the kernel has taken the lock for but the
// mount has not read yet: an invalidation made then waits until the mount
// answers it, which it does unless it is killed in that moment.
type busyDirs struct {
	mu   sync.Mutex
	n    map[uint64]int
	idle map[uint64]chan struct{} // closed when the directory's count drops to 0
}

func newBusyDirs() *busyDirs {
	return &busyDirs{n: map[uint64]int{}, idle: map[uint64]chan struct{}{}}
}

// enter counts a request in dir.
func (b *busyDirs) enter(dir uint64) {
	b.mu.Lock()
	b.n[dir]++
	b.mu.Unlock()
}

// leave ends a request in dir.
func (b *busyDirs) leave(dir uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n[dir]--; b.n[dir] > 0 {
		return
	}
	delete(b.n, dir)
	if ch := b.idle[dir]; ch != nil {
		close(ch)
		delete(b.idle, dir)
	}
}

// waitIdle waits until no request in dir is in progress, until by at
// most; it reports whether none is.
func (b *busyDirs) waitIdle(dir uint64, by time.Time) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		if b.n[dir] == 0 {
			b.mu.Unlock()
			return true
		}
		ch := b.idle[dir]
		if ch == nil {
			ch = make(chan struct{})
			b.idle[dir] = ch
		}
		b.mu.Unlock()
		wait := time.Until(by)
		if wait <= 0 {
			return false
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}
