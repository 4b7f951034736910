package cluster

import (
	"context"
	"sync"

	"github.com/hashicorp/raft"
)

// leaderCheck confirms leadership for linearizable reads, sharing one
// round of raft's VerifyLeader among the reads that arrived while the
// previous round ran: every read waits for a round that started after it
// arrived, so it still sees every write acknowledged before it.
type leaderCheck struct {
	raft    *raft.Raft
	mu      sync.Mutex
	waiting []chan error
	running bool
}

func (v *leaderCheck) verify(ctx context.Context) error {
	ch := make(chan error, 1)
	v.mu.Lock()
	v.waiting = append(v.waiting, ch)
	if !v.running {
		v.running = true
		go v.loop()
	}
	v.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop runs rounds while reads wait; it ends when none do.
func (v *leaderCheck) loop() {
	for {
		v.mu.Lock()
		batch := v.waiting
		v.waiting = nil
		if len(batch) == 0 {
			v.running = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		err := v.raft.VerifyLeader().Error()
		for _, ch := range batch {
			ch <- err
		}
	}
}
