package fs

import (
	"context"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// closeDelay is how long a released handle may stay registered with the
// metadata service: closes are sent in batches, one Raft entry for many.
const closeDelay = 50 * time.Millisecond

// closer sends the closes of released handles in batches.
type closer struct {
	pipe    *pipeline
	log     *slog.Logger
	mu      lockorder.Mutex
	pending []uint64
	kick    chan struct{}
	stop    chan struct{} // closed by Close: send what is left and return
	done    chan struct{}
}

func (c *closer) add(id uint64) {
	c.mu.Lock()
	c.pending = append(c.pending, id)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run sends what is pending every closeDelay until stop is closed, then
// sends the rest.
func (c *closer) run() {
	stop := c.stop
	defer close(c.done)
	for {
		select {
		case <-c.kick:
		case <-stop:
			c.flush()
			return
		}
		t := time.NewTimer(closeDelay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
		}
		c.flush()
	}
}

// flush sends every pending close at once (the group commit puts them in
// one Raft entry).
func (c *closer) flush() {
	c.mu.Lock()
	ids := c.pending
	c.pending = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// EBADF: it went with its expired session already.
			if _, e := c.pipe.apply(context.Background(), &metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Session: id >> 40, Handle: id}}}); e != 0 && e != syscall.EBADF {
				c.log.Warn("closing a handle", "handle", id, "errno", e)
			}
		}()
	}
	wg.Wait()
}
