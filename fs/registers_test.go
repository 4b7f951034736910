package fs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
)

// TestRegistersAcrossMounts is the fault suite's register workload without
// the faults, on the fakes: clients on two mounts, each replacing its own
// file in one shared directory (write a temporary file, fsync, close,
// rename it over the file, fsync the directory) and reading it back, so
// that the directory's lease moves between the mounts all the time. A
// client must read what it wrote last (nobody else writes its file), and
// the size the lookup shows (the kernel reads no further) must be its
// length.
func TestRegistersAcrossMounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := []*FS{e.mount("one", nil, nil), e.mount("two", nil, nil)}
	ctx := testCtx(t)
	dir := mustMkdir(t, m[0], RootIno, "reg").Ino
	const perMount, rounds = 3, 25
	var wg sync.WaitGroup
	for c := range 2 * perMount {
		f := m[c%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7))
			name := fmt.Sprint("r", c)
			for i := range rounds {
				size := 1<<10 + r.IntN(3<<10)
				if r.IntN(2) == 0 {
					size = 128<<10 + r.IntN(512<<10) // objects, not inline
				}
				data := bytes.Repeat([]byte{byte(c), byte(i)}, size/2)
				tmp := fmt.Sprintf(".t-%d-%d", c, i)
				_, h, errno := f.CreateOpen(ctx, dir, tmp, 0o644, 0, 0, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY)
				if errno != 0 {
					t.Errorf("%s: create: %v", tmp, errno)
					return
				}
				if _, errno := f.WriteFile(ctx, h, data, 0); errno != 0 {
					t.Errorf("%s: write: %v", tmp, errno)
				}
				if errno := f.FsyncFile(ctx, h); errno != 0 {
					t.Errorf("%s: fsync: %v", tmp, errno)
				}
				if errno := f.FlushFile(ctx, h); errno != 0 {
					t.Errorf("%s: flush: %v", tmp, errno)
				}
				if errno := f.Release(ctx, h); errno != 0 {
					t.Errorf("%s: release: %v", tmp, errno)
				}
				if errno := f.Rename(ctx, dir, tmp, dir, name, 0); errno != 0 {
					t.Errorf("rename %s over %s: %v", tmp, name, errno)
					return
				}
				if errno := f.SyncDir(ctx, dir, nil); errno != 0 {
					t.Errorf("fsync dir: %v", errno)
				}
				a, errno := f.Lookup(ctx, dir, name)
				if errno != 0 {
					t.Errorf("lookup %s: %v", name, errno)
					return
				}
				if a.Size != uint64(len(data)) {
					t.Errorf("round %d: %s (ino %d) has size %d after the rename of %d bytes over it", i, name, a.Ino, a.Size, len(data))
				}
				h, _, errno = f.Open(ctx, a.Ino, syscall.O_RDONLY)
				if errno != 0 {
					t.Errorf("open %s: %v", name, errno)
					return
				}
				got := make([]byte, len(data)+1)
				n, errno := f.Read(ctx, a.Ino, got, 0)
				if errno != 0 || !bytes.Equal(got[:n], data) {
					t.Errorf("round %d: read %s (ino %d): %d bytes, %v; want the %d written", i, name, a.Ino, n, errno, len(data))
				}
				f.FlushFile(ctx, h)
				f.Release(ctx, h)
			}
		}()
	}
	wg.Wait()
}
