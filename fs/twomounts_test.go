package fs

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ecfs/ecfs/cluster/metapb"
)

// TestTwoMountsNamespaceLinearizable: clients on two mounts create (O_EXCL),
// unlink, rename and list a few names in one directory, each change
// acknowledged once the directory's fsync returned. The directory's lease
// moves between the mounts all the time (each revokes the other's, and
// leases it again after a few changes through the service). The history
// must be linearizable (porcupine, the same model as the fault harness's).
func TestTwoMountsNamespaceLinearizable(t *testing.T) {
	t.Parallel()
	t.Run("reliable", func(t *testing.T) { twoMountsNamespace(t, false) })
	// Some calls to the metadata service are lost on the way, or their
	// answer is (the change was made): as a partition or a frozen leader
	// does. The mount retries or reports EIO; an operation that fails with
	// EIO may or may not have happened.
	t.Run("lossy", func(t *testing.T) { twoMountsNamespace(t, true) })
}

// lossyMeta loses 0.5% of the mutations on the way and the answers of 0.5%.
type lossyMeta struct {
	Meta
	mu sync.Mutex
	r  *rand.Rand
}

func (m *lossyMeta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	m.mu.Lock()
	x := m.r.IntN(200)
	m.mu.Unlock()
	switch {
	case x < 1:
		return nil, fmt.Errorf("injected: the request was lost: %w", context.DeadlineExceeded)
	case x < 2:
		r, err := m.Meta.Apply(ctx, cmd)
		if err == nil {
			err = fmt.Errorf("injected: the answer (%v) was lost: %w", r.GetErrno(), context.DeadlineExceeded)
		}
		return nil, err
	}
	return m.Meta.Apply(ctx, cmd)
}

func twoMountsNamespace(t *testing.T, lossy bool) {
	e := newEnv(t)
	logs := func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
		if lossy {
			c.Meta = &lossyMeta{Meta: c.Meta, r: rand.New(rand.NewPCG(uint64(len(c.Name)), 3))}
		}
	}
	var m []*FS
	for _, name := range []string{"one", "two"} {
		if !lossy {
			m = append(m, e.mount(name, logs, nil))
			continue
		}
		// Lost changes are reported at unmount too: not a failure here.
		c := Config{Meta: e.client(), Objects: e.objects(), Name: name}
		logs(&c)
		f, err := New(testCtx(t), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		m = append(m, f)
	}
	ctx := testCtx(t)
	dir := mustMkdir(t, m[0], RootIno, "d").Ino
	const names = 4
	type in struct{ kind, a, b int } // kind: 0 create, 1 unlink, 2 rename, 3 list
	type out struct {
		errno   syscall.Errno
		set     uint8
		unknown bool // EIO: it may or may not have happened
	}
	model := porcupine.Model{
		Init: func() any { return uint8(0) },
		Step: func(state, input, output any) (bool, any) {
			s, i, o := state.(uint8), input.(in), output.(out)
			has := s&(1<<i.a) != 0
			switch i.kind {
			case 0:
				if has {
					return o.unknown || o.errno == syscall.EEXIST, s
				}
				return o.unknown || o.errno == 0, s | 1<<i.a
			case 1:
				if !has {
					return o.unknown || o.errno == syscall.ENOENT, s
				}
				return o.unknown || o.errno == 0, s &^ (1 << i.a)
			case 2:
				if !has {
					return o.unknown || o.errno == syscall.ENOENT, s
				}
				return o.unknown || o.errno == 0, s&^(1<<i.a) | 1<<i.b
			}
			return o.set == s, s
		},
		DescribeOperation: func(input, output any) string {
			i, o := input.(in), output.(out)
			return fmt.Sprintf("%s(n%d,n%d) -> %v %04b", [...]string{"create", "unlink", "rename", "list"}[i.kind], i.a, i.b, o.errno, o.set)
		},
	}
	start := time.Now()
	var mu sync.Mutex
	var hist []porcupine.Operation
	var wg sync.WaitGroup
	// The history is as long as the time allows, up to a number of
	// operations the checker goes through in seconds: on the in-memory
	// service the clients would do tens of thousands in 4 s (the real
	// cluster: about 1200, and 500 lossy).
	deadline, budget := time.Now().Add(4*time.Second), int64(2500)
	if lossy {
		// Pending calls make the check exponential.
		deadline, budget = time.Now().Add(time.Second), 1000
	}
	var started atomic.Int64
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := m[c%2]
			r := rand.New(rand.NewPCG(uint64(c), 7))
			seen := f.ErrSeq(dir)
			for time.Now().Before(deadline) && started.Add(1) <= budget {
				i := in{kind: r.IntN(4), a: r.IntN(names), b: r.IntN(names)}
				for i.kind == 2 && i.b == i.a {
					i.b = r.IntN(names)
				}
				name := func(k int) string { return fmt.Sprint("n", k) }
				call := time.Since(start).Nanoseconds()
				var o out
				switch i.kind {
				case 0:
					_, h, errno := f.CreateOpen(ctx, dir, name(i.a), 0o644, 0, 0, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY)
					if errno == 0 {
						errno = f.Release(ctx, h)
					}
					o.errno = errno
				case 1:
					o.errno = f.Unlink(ctx, dir, name(i.a))
				case 2:
					o.errno = f.Rename(ctx, dir, name(i.a), dir, name(i.b), 0)
				case 3:
					ents, _, errno := f.ReadDir(ctx, dir, 0, 100)
					o.errno = errno
					for _, e := range ents {
						var k int
						if _, err := fmt.Sscanf(e.Name, "n%d", &k); err == nil {
							o.set |= 1 << k
						}
					}
				}
				if o.errno == 0 && i.kind != 3 {
					o.errno = f.SyncDir(ctx, dir, &seen)
				}
				ret := time.Since(start).Nanoseconds()
				switch {
				case o.errno == 0, o.errno == syscall.EEXIST, o.errno == syscall.ENOENT:
				case lossy && o.errno == syscall.EIO:
					if i.kind == 3 {
						continue // a failed list tells nothing
					}
					o.unknown, ret = true, math.MaxInt64
				default:
					t.Errorf("client %d: %v: unexpected errno %v", c, i, o.errno)
					return
				}
				mu.Lock()
				hist = append(hist, porcupine.Operation{ClientId: c, Input: i, Call: call, Output: o, Return: ret})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res, info := porcupine.CheckOperationsVerbose(model, hist, 30*time.Second)
	t.Logf("%d operations: %v", len(hist), res)
	if res != porcupine.Ok {
		// Kept after the test (t.TempDir would not be).
		dir, err := os.MkdirTemp("", "ecfs-twomounts-")
		if err != nil {
			t.Fatal(err)
		}
		p := dir + "/history.html"
		_ = porcupine.VisualizePath(model, info, p)
		t.Fatalf("the history of %d operations is not linearizable (%v); see %s", len(hist), res, p)
	}
}
