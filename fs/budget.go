package fs

import (
	"sync"
	"time"
)

// budget bounds the bytes held by write buffers. acquire waits while the
// budget is used up; release gives bytes back. Writers wait for it without
// holding their inode's lock, and uploads release their buffer once
// committed without taking one before, so waiting never closes a cycle.
type budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	limit int64
	used  int64
	// pressure, if set, is called (without mu) when an acquire has to
	// wait: it asks holders of unsealed buffers to upload them.
	pressure func()
}

func newBudget(limit int64) *budget {
	b := &budget{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// tryAcquire takes n bytes if they are free.
func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit && b.used > 0 {
		return false
	}
	b.used += n
	return true
}

// acquire takes n bytes, waiting for them. A request larger than the whole
// budget is granted once nothing else is held.
func (b *budget) acquire(n int64) {
	if b.tryAcquire(n) {
		return
	}
	for {
		if b.pressure != nil {
			b.pressure()
		}
		// Wake up now and then to ask again: a holder whose lock was busy
		// when asked may sit idle on its buffers.
		t := time.AfterFunc(200*time.Millisecond, b.cond.Broadcast)
		b.mu.Lock()
		if b.used+n > b.limit && b.used > 0 {
			b.cond.Wait()
		}
		if b.used+n <= b.limit || b.used == 0 {
			b.used += n
			b.mu.Unlock()
			t.Stop()
			return
		}
		b.mu.Unlock()
		t.Stop()
	}
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// inUse reports the bytes held.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
