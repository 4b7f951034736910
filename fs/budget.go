package fs

import (
	"sync"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"
)

// budget bounds the bytes held by write buffers. tryAcquire takes bytes
// if they are free, wait waits a while for them; release gives bytes back.
// Writers wait for it without holding their inode's lock, and uploads
// release their buffer once committed without taking one before, so
// waiting never closes a cycle. Its lock is a leaf.
type budget struct {
	mu    lockorder.Mutex
	cond  *sync.Cond
	limit int64
	used  int64
}

func newBudget(limit int64) *budget {
	b := &budget{limit: limit}
	b.mu.Init(levelBudget, "budget.mu")
	b.cond = sync.NewCond(&b.mu)
	return b
}

// tryAcquire takes n bytes if they are free.
func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.fits(n) {
		return false
	}
	b.used += n
	return true
}

// fits reports whether n bytes would be granted now. b.mu is held.
func (b *budget) fits(n int64) bool { return b.used+n <= b.limit || b.used == 0 }

// wait waits until n bytes may be free, or at most d (a holder whose lock
// was busy when asked to upload may sit idle on its buffers: the caller
// asks again). A request larger than the whole budget is granted once
// nothing else is held.
func (b *budget) wait(n int64, d time.Duration) {
	t := time.AfterFunc(d, b.cond.Broadcast)
	defer t.Stop()
	b.mu.Lock()
	if !b.fits(n) {
		b.cond.Wait()
	}
	b.mu.Unlock()
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
