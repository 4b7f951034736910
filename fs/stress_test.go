package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of the write buffers under memory pressure, of upload failures and
// of concurrent use of one file.

// dumpAndPanic ends a run that hangs: a deadlock would otherwise also hang
// the cleanup (Close flushes), so it prints every goroutine and panics
// outside the test's goroutine, which ends the test binary.
func dumpAndPanic(what string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(os.Stderr, "%s; goroutines:\n%s\n", what, buf)
	go panic(what)
	select {}
}

// Several files written at once through a buffer budget of two blocks:
// writers wait for memory, uploads give it back, nothing deadlocks and
// every file reads back exactly.
func TestBufferBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.mount("w", func(c *Config) { c.BufferSize = 1 }, nil)
	if f.data.mem.limit != 2*BlockSize {
		t.Fatalf("buffer size clamped to %d, want %d", f.data.mem.limit, 2*BlockSize)
	}
	const size = 24 << 20 // six blocks per file, three files, a budget of two blocks
	header := []byte("a small first block: written inline unless the file grows")
	type file struct {
		ino  uint64
		want []byte
	}
	// write is mustWrite for the writers' goroutines; it counts progress.
	var progress atomic.Int64
	write := func(ino uint64, p []byte, off int64) error {
		n, errno := f.Write(context.Background(), ino, p, off)
		progress.Add(int64(n))
		if errno != 0 || n != len(p) {
			return fmt.Errorf("write of %d bytes at %d: wrote %d, errno %v", len(p), off, n, errno)
		}
		return nil
	}
	// How each writer writes its 24 MiB; each returns the expected content.
	styles := []struct {
		name  string
		write func(ino uint64, data []byte) ([]byte, error)
	}{
		{"1 MiB writes in order", func(ino uint64, data []byte) ([]byte, error) {
			for off := 0; off < len(data); off += 1 << 20 {
				if err := write(ino, data[off:off+1<<20], int64(off)); err != nil {
					return nil, err
				}
			}
			return data, nil
		}},
		{"a small first block, then one large write", func(ino uint64, data []byte) ([]byte, error) {
			if err := write(ino, header, 0); err != nil {
				return nil, err
			}
			if err := write(ino, data, BlockSize); err != nil {
				return nil, err
			}
			want := append(make([]byte, BlockSize), data...)
			copy(want, header)
			return want, nil
		}},
		{"a small first block, then 300 KiB writes from the end", func(ino uint64, data []byte) ([]byte, error) {
			if err := write(ino, header, 0); err != nil {
				return nil, err
			}
			const chunk = 300 << 10
			for end := len(data); end > 0; end -= chunk {
				lo := max(end-chunk, 0)
				if err := write(ino, data[lo:end], BlockSize+int64(lo)); err != nil {
					return nil, err
				}
			}
			want := append(make([]byte, BlockSize), data...)
			copy(want, header)
			return want, nil
		}},
	}
	files := make([]file, len(styles))
	for i := range styles {
		files[i].ino = mustCreate(t, f, RootIno, fmt.Sprint("big", i)).Ino
	}
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), f.data.mem.inUse()))
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for i, s := range styles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want, err := s.write(files[i].ino, pattern(size, uint64(i)))
			if err != nil {
				t.Errorf("%s: %v", s.name, err)
				return
			}
			files[i].want = want
			if errno := f.Flush(context.Background(), files[i].ino); errno != 0 {
				t.Errorf("%s: flush: %v", s.name, errno)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// A deadlock is no write for a long time (the machine may be slow:
	// only a lack of progress counts).
	last, lastAt := int64(-1), time.Now()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(time.Second):
			if p := progress.Load(); p != last {
				last, lastAt = p, time.Now()
			} else if time.Since(lastAt) > 45*time.Second {
				dumpAndPanic(fmt.Sprintf("writers blocked for 45 s after %d bytes: a deadlock of the write buffers", p))
			}
		}
	}
	close(stopSampling)
	<-sampled
	if t.Failed() {
		return
	}
	if p := peak.Load(); p > f.data.mem.limit {
		t.Errorf("buffers held %d bytes at a time, over the budget of %d", p, f.data.mem.limit)
	}
	if n := f.data.mem.inUse(); n != 0 {
		t.Errorf("%d bytes of the budget still held after every flush", n)
	}
	for i, fl := range files {
		t.Run(styles[i].name, func(t *testing.T) { checkContent(t, f, fl.ino, fl.want, 1<<20) })
	}
}

// A failure to store data (the write quorum not reached for WriteTimeout)
// is reported as EIO, once.
func TestUploadFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f, objs := e.failingMount("w")
	other := e.mount("reader", nil, nil)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "f")

	objs.failWrites.Store(true)
	mustWrite(t, f, a.Ino, pattern(5<<20, 1), 0)
	mustErrno(t, "flush of data that could not be stored", f.Flush(ctx, a.Ino), syscall.EIO)
	if n := objs.writes.Load(); n < 2 {
		t.Errorf("%d object writes: want both blocks tried", n)
	}
	mustErrno(t, "second flush", f.Flush(ctx, a.Ino), 0)
	// The data is gone: this mount shows what the service holds.
	mustSize(t, f, a.Ino, 0)
	if n := f.data.mem.inUse(); n != 0 {
		t.Errorf("%d bytes of the budget still held after failed uploads", n)
	}
	// Nothing was committed: another mount sees an empty file.
	openRead(t, other, a.Ino, nil)

	// A background upload (a full block) that fails is reported by the
	// next write, and by the next flush (errseq: a failure a writer heard
	// of still reaches fsync and close), and then not again.
	mustWrite(t, f, a.Ino, pattern(BlockSize, 2), 0)
	waitUntil(t, "the failed upload", 10*time.Second, func() bool {
		in := f.inodes.get(a.Ino)
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.pending) == 0
	})
	_, errno := f.Write(ctx, a.Ino, []byte("more"), BlockSize)
	mustErrno(t, "write after a failed background upload", errno, syscall.EIO)
	mustErrno(t, "flush after the write reported the error", f.Flush(ctx, a.Ino), syscall.EIO)
	mustErrno(t, "flush after the flush reported the error", f.Flush(ctx, a.Ino), 0)

	// The stores are back: writing works again.
	objs.failWrites.Store(false)
	data := pattern(5<<20+3, 3)
	mustWrite(t, f, a.Ino, data, 0)
	mustFlush(t, f, a.Ino)
	checkContent(t, f, a.Ino, data, 1<<20)
	openRead(t, other, a.Ino, data)
}

// Reads and writes of one file at once: every read succeeds with the
// length asked, and at the end the file is what the writes made it.
func TestConcurrentReadWrite(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	a := mustCreate(t, f, RootIno, "f")
	model := pattern(6<<20, 1)
	mustWrite(t, f, a.Ino, model, 0)
	mustFlush(t, f, a.Ino)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var wg sync.WaitGroup
	// One reader reads small pieces at random, the other 128 KiB pieces
	// in order (the whole-block path, with read-ahead). Each reads once
	// after each write (while the next one goes on), not more: spinning
	// readers would only slow the test down.
	wrote := make(chan struct{}, 2)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			p := make([]byte, 128<<10)
			next := 0
			for {
				select {
				case <-ctx.Done():
					return
				case <-wrote:
				}
				off, n := rng.IntN(len(model)-len(p)), 1+rng.IntN(64<<10)
				if r == 1 {
					off, n, next = next, len(p), (next+len(p))%(len(model)-len(p))
				}
				got, errno := f.Read(ctx, a.Ino, p[:n], int64(off))
				if errno != 0 && ctx.Err() == nil {
					t.Errorf("read at %d: %v", off, errno)
					return
				}
				if errno == 0 && got != n {
					t.Errorf("read of %d bytes at %d returned %d", n, off, got)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 100 {
		n := 1 + rng.IntN(100_000)
		off := rng.IntN(len(model) - n)
		p := pattern(n, uint64(100+i))
		mustWrite(t, f, a.Ino, p, int64(off))
		copy(model[off:], p)
		for range 2 {
			select {
			case wrote <- struct{}{}:
			default:
			}
		}
		if i%30 == 29 {
			mustFlush(t, f, a.Ino)
		}
	}
	mustFlush(t, f, a.Ino)
	cancel()
	wg.Wait()
	got := mustRead(t, f, a.Ino, len(model)+1, 0)
	if !bytes.Equal(got, model) {
		t.Fatalf("after concurrent reads and writes: %s", firstDiff(got, model))
	}
}
