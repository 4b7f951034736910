package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// barrierEnqueue bounds how long a barrier waits to enter raft's queue (not
// how long it waits to be applied).
const barrierEnqueue = 10 * time.Second

// termBarrier tracks whether this member, while it leads, has applied every
// entry of earlier terms. A new leader commits its first entry before its
// state machine has necessarily applied the entries before it (those the
// previous leader committed and acknowledged), so a read served from the
// FSM at once could miss them. A raft barrier completed in the current term
// proves they are applied. It is run when the member becomes leader (a
// raft observer watches its state) and on demand by a read that finds none
// done in the current term: a member that loses and regains leadership runs
// it again, since the term changed.
type termBarrier struct {
	raft *raft.Raft
	done atomic.Uint64 // the term of the last barrier that completed; 0: none
	obs  *raft.Observer
	stop chan struct{}
	wg   sync.WaitGroup // the watcher and the barrier in flight

	mu       sync.Mutex
	inflight *barrierRun // nil when none runs
	closed   bool
}

// barrierRun is one barrier: done is closed when it ends, err set before.
type barrierRun struct {
	done chan struct{}
	err  error
}

func newTermBarrier(r *raft.Raft) *termBarrier {
	b := &termBarrier{raft: r, stop: make(chan struct{})}
	ch := make(chan raft.Observation, 8)
	b.obs = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	r.RegisterObserver(b.obs)
	b.wg.Add(1)
	go b.watch(ch)
	if r.State() == raft.Leader { // it led before the observer was there
		b.start()
	}
	return b
}

// watch starts a barrier whenever this member becomes leader. A dropped
// observation only delays the barrier to the first read of the term.
func (b *termBarrier) watch(ch <-chan raft.Observation) {
	defer b.wg.Done()
	for {
		select {
		case o := <-ch:
			if o.Data == raft.Leader {
				b.start()
			}
		case <-b.stop:
			return
		}
	}
}

// close stops the watcher and waits for the barrier in flight, which ends
// when raft applies it or fails it (lost leadership, shutdown).
func (b *termBarrier) close() {
	b.raft.DeregisterObserver(b.obs)
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
}

// ready reports whether this member leads in a term whose barrier completed.
func (b *termBarrier) ready() bool {
	return b.raft.State() == raft.Leader && b.done.Load() == b.raft.CurrentTerm()
}

// start runs a barrier unless one is in flight, and returns that run.
func (b *termBarrier) start() *barrierRun {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inflight != nil {
		return b.inflight
	}
	run := &barrierRun{done: make(chan struct{})}
	if b.closed {
		run.err = ErrStopped
		close(run.done)
		return run
	}
	b.inflight = run
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		// The term is read before the barrier is queued: the barrier lands
		// in this term or a later one, after every entry of earlier terms,
		// so recording this term is never too generous.
		term := b.raft.CurrentTerm()
		err := b.raft.Barrier(barrierEnqueue).Error()
		if err == nil {
			b.done.Store(term)
		}
		b.mu.Lock()
		b.inflight = nil
		b.mu.Unlock()
		run.err = err
		close(run.done)
	}()
	return run
}

// wait returns once this member's barrier of the current term completed,
// running one if needed. It fails with ErrNotLeader when the barrier fails
// or leadership changed meanwhile (the client retries), or with ctx's error.
func (b *termBarrier) wait(ctx context.Context) error {
	if b.ready() {
		return nil
	}
	run := b.start()
	select {
	case <-run.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if run.err != nil {
		return fmt.Errorf("%w: barrier of a new term: %v", ErrNotLeader, run.err)
	}
	if !b.ready() {
		// The run may have begun in an earlier term; a read retried
		// starts the next one.
		return fmt.Errorf("%w: leadership changed during the barrier of a new term", ErrNotLeader)
	}
	return nil
}
