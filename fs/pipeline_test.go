package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// recordingMeta is a metadata service that applies nothing but records
// the changes it is sent, in the order it applies them, exactly once per
// (session, seq) as the real one does. loseFirst makes the first answer to
// one in 8 batches written behind get lost (applied, then an error).
type recordingMeta struct {
	Meta      // unused methods panic
	seq       atomic.Uint64
	loseFirst bool

	mu      sync.Mutex
	applied []*metapb.Command
	seen    map[uint64]*metapb.Result
	lost    map[uint64]bool
	inCalls atomic.Int32
	maxPar  atomic.Int32
}

func newRecordingMeta() *recordingMeta {
	return &recordingMeta{seen: map[uint64]*metapb.Result{}, lost: map[uint64]bool{}}
}

func (m *recordingMeta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	n := m.inCalls.Add(1)
	defer m.inCalls.Add(-1)
	for {
		p := m.maxPar.Load()
		if n <= p || m.maxPar.CompareAndSwap(p, n) {
			break
		}
	}
	if cmd.Seq == 0 {
		cmd.Seq = m.seq.Add(1)
	}
	time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) // a round trip
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.seen[cmd.Seq]; ok {
		return r, nil
	}
	r := &metapb.Result{}
	if multi := cmd.GetMulti(); multi != nil {
		for _, c := range multi.Commands {
			m.applied = append(m.applied, c)
			r.Results = append(r.Results, &metapb.Result{})
		}
		m.seen[cmd.Seq] = r
		if m.loseFirst && cmd.Seq%8 == 0 && !m.lost[cmd.Seq] {
			m.lost[cmd.Seq] = true
			return nil, errors.New("the answer was lost")
		}
		return r, nil
	}
	m.applied = append(m.applied, cmd)
	m.seen[cmd.Seq] = r
	return r, nil
}

func (m *recordingMeta) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	return &metapb.ReadResp{}, nil
}

// order is the service's order of the changes: writer -> its numbers.
func (m *recordingMeta) order() map[uint64][]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[uint64][]int64{}
	for _, c := range m.applied {
		s := c.GetSetattr()
		out[s.Ino] = append(out[s.Ino], s.Mtime)
	}
	return out
}

func (m *recordingMeta) has(writer uint64, n int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.applied {
		if s := c.GetSetattr(); s.Ino == writer && s.Mtime == n {
			return true
		}
	}
	return false
}

func testPipeline(t *testing.T, meta Meta) *pipeline {
	t.Helper()
	b := &base{cfg: Config{MetaTimeout: 10 * time.Second, SessionTTL: time.Second}, log: slog.New(slog.DiscardHandler)}
	p := newPipeline(b, meta, newInodeTable())
	p.sess.Store(7)
	go p.run()
	t.Cleanup(p.close)
	return p
}

func change(writer uint64, n int64) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{Ino: writer, Mtime: n}}}
}

// TestPipelineOrder: many goroutines queue changes written behind and
// send changes now, mixed at random; the service applies each goroutine's
// changes in the order it made them, each once (also when answers to
// batches are lost and they are sent again), and a change sent now has
// everything its goroutine queued before applied when it returns; so do
// waitFor (for the changes naming an inode) and drain (for all).
func TestPipelineOrder(t *testing.T) {
	t.Parallel()
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprint("lose answers ", lose), func(t *testing.T) {
			meta := newRecordingMeta()
			meta.loseFirst = lose
			p := testPipeline(t, meta)
			const writers, each = 8, 150
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range uint64(writers) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(w, 1))
					for n := int64(1); n <= each; n++ {
						switch r.IntN(10) {
						case 0, 1: // sent now
							if _, errno := p.apply(context.Background(), change(w+1, n)); errno != 0 {
								errs <- fmt.Errorf("writer %d: apply: %v", w, errno)
								return
							}
							if n > 1 && !meta.has(w+1, n-1) {
								errs <- fmt.Errorf("writer %d: change %d returned before its change %d was applied", w, n, n-1)
								return
							}
						case 2:
							p.behind(7, change(w+1, n), w+1)
							p.waitFor(w + 1)
							if !meta.has(w+1, n) {
								errs <- fmt.Errorf("writer %d: waitFor returned before its change %d was applied", w, n)
								return
							}
						default:
							p.behind(7, change(w+1, n), w+1)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			p.drain()
			for w, ns := range meta.order() {
				if len(ns) != each {
					t.Errorf("writer %d: %d changes applied, want %d", w, len(ns), each)
				}
				for i, n := range ns {
					if n != int64(i+1) {
						t.Fatalf("writer %d: the service applied its changes in the order %v", w, ns[:min(len(ns), i+5)])
					}
				}
			}
			meta.mu.Lock()
			lost := len(meta.lost)
			meta.mu.Unlock()
			if lose && lost == 0 {
				t.Errorf("no answer was lost: the resend path went untested")
			}
			if meta.maxPar.Load() < 2 {
				t.Errorf("changes sent now by different goroutines never went together")
			}
		})
	}
}

// TestPipelineLeasedRetry: a change refused because another mount holds a
// lease is sent again until it goes through, and what is queued after it
// waits for it.
func TestPipelineLeasedRetry(t *testing.T) {
	t.Parallel()
	meta := &leasedOnce{recordingMeta: newRecordingMeta()}
	p := testPipeline(t, meta)
	done := make(chan syscall.Errno)
	go func() {
		_, errno := p.apply(context.Background(), change(1, 1))
		done <- errno
	}()
	if errno := <-done; errno != 0 {
		t.Fatal(errno)
	}
	p.behind(7, change(1, 2), 1)
	p.drain()
	if got := meta.order()[1]; len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("applied %v, want [1 2]", got)
	}
	if meta.refused.Load() != 3 {
		t.Fatalf("refused %d times, want 3", meta.refused.Load())
	}
}

type leasedOnce struct {
	*recordingMeta
	refused atomic.Int32
}

func (m *leasedOnce) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if cmd.GetSetattr() != nil && m.refused.Load() < 3 {
		m.refused.Add(1)
		return &metapb.Result{Leased: true}, nil
	}
	return m.recordingMeta.Apply(ctx, cmd)
}
