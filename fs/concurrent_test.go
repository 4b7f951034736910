package fs

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/namespace"
)

// TestCoreConcurrentTreeOps (issue 8, hole 4) drives the core from many
// goroutines at once, without FUSE (whose per-directory kernel locks hide
// lock-order mistakes), in a tree the mount leases: creates, writes,
// mkdir, rmdir, renames within and between directories (parent and child
// among them), unlinks, lookups and listings, all on a few names so that
// they collide. It fails if the operations do not finish (a deadlock:
// every goroutine's stack is printed), and then checks the service's tree
// from another mount: every listed name looks up to the same inode and
// type, and every directory's link count is 2 + its subdirectories.
func TestCoreConcurrentTreeOps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var logbuf syncBuf
	t.Cleanup(func() {
		if t.Failed() { // the mount's debug log, up to the first error and a little after
			log := string(logbuf.bytes())
			if i := strings.Index(log, "level=ERROR"); i >= 0 {
				log = log[:min(len(log), i+4000)]
			}
			t.Logf("the mount's log, its end:\n%s", log[max(0, len(log)-60000):])
		}
	})
	m := e.mount("busy", func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logbuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}, nil)
	ctx := testCtx(t)
	top := mustMkdir(t, m, RootIno, "top").Ino // leased to m
	const nsub = 3
	for i := range nsub {
		mustMkdir(t, m, top, fmt.Sprint("d", i))
	}
	names := []string{"a", "b", "c", "d0", "d1", "d2"}
	dirs := func() []uint64 {
		out := []uint64{top}
		for i := range nsub {
			if a, errno := m.Lookup(ctx, top, fmt.Sprint("d", i)); errno == 0 && a.Type == uint32(namespace.TypeDir) {
				out = append(out, a.Ino)
			}
		}
		return out
	}

	const workers = 8
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for time.Now().Before(deadline) {
				ds := dirs()
				d := ds[r.IntN(len(ds))]
				d2 := ds[r.IntN(len(ds))]
				name, name2 := names[r.IntN(len(names))], names[r.IntN(len(names))]
				var op string
				switch r.IntN(10) {
				case 0:
					op = "create"
					if a, h, errno := m.CreateOpen(ctx, d, name, 0o644, 0, 0, syscall.O_CREAT|syscall.O_RDWR); errno == 0 {
						if a.Type == uint32(namespace.TypeFile) {
							_, _ = m.WriteFile(ctx, h, bytes.Repeat([]byte{byte(w)}, 100+r.IntN(3000)), 0)
						}
						m.Release(ctx, h)
					}
				case 1:
					op = "mkdir"
					_, _ = m.Mkdir(ctx, d, name, 0o755, 0, 0)
				case 2:
					op = "rmdir"
					_ = m.Rmdir(ctx, d, name)
				case 3:
					op = "rmdir-sub" // a directory that others rename into and out of
					_ = m.Rmdir(ctx, top, fmt.Sprint("d", r.IntN(nsub)))
				case 4, 5:
					op = "rename"
					_ = m.Rename(ctx, d, name, d2, name2, 0)
				case 6:
					op = "unlink"
					_ = m.Unlink(ctx, d, name)
				case 7:
					op = "lookup"
					_, _ = m.Lookup(ctx, d, name)
				case 8:
					op = "readdir"
					_, _, _ = m.ReadDir(ctx, d, 0, 100)
				case 9:
					op = "chmod"
					if a, errno := m.Lookup(ctx, d, name); errno == 0 {
						_, _ = m.SetAttr(ctx, a.Ino, SetAttrIn{Valid: namespace.SetMode, Mode: 0o700 | uint32(r.IntN(0o77))})
					}
				}
				mu.Lock()
				counts[op]++
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		var b bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
		t.Fatalf("the operations did not finish in 60 s (a deadlock?); goroutines:\n%s", b.String())
	}
	t.Logf("operations: %v", counts)
	mustErrno(t, "fsync of the tree", m.Fsync(ctx, top), 0)

	other := e.mount("checker", nil, nil)
	checkTree(t, other, top)
}

// checkTree walks dir on f: every entry looks up to the inode and type
// listed, and every directory has 2 + its subdirectories links.
func checkTree(t *testing.T, f *FS, dir uint64) {
	t.Helper()
	ctx := testCtx(t)
	ents, _, errno := f.ReadDir(ctx, dir, 0, 4096)
	mustErrno(t, "readdir", errno, 0)
	subdirs := 0
	for _, e := range ents {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		a, errno := f.Lookup(ctx, dir, e.Name)
		if errno != 0 || a.Ino != e.Ino || a.Type != e.Type {
			t.Errorf("directory %d lists %q as inode %d type %d; lookup: %v, %v", dir, e.Name, e.Ino, e.Type, a, errno)
			continue
		}
		if a.Type == uint32(namespace.TypeDir) {
			subdirs++
			checkTree(t, f, a.Ino)
		}
	}
	a, errno := f.GetAttr(ctx, dir)
	mustErrno(t, "getattr", errno, 0)
	if a.Nlink != uint32(2+subdirs) {
		t.Errorf("directory %d has %d links, want 2 + %d subdirectories", dir, a.Nlink, subdirs)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}
