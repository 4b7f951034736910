package fs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/namespace"
)

// Tests of the data path of the core: buffering, inline files, object
// uploads, the read overlay, holes, truncation and close-to-open.

// pattern is n bytes of deterministic noise.
func pattern(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(n))
	p := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(p)
	return p
}

// firstDiff describes where got and want differ.
func firstDiff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			j := i
			for j < len(got) && got[j] != want[j] {
				j++
			}
			return fmt.Sprintf("first difference at %d (%d bytes differ from there)", i, j-i)
		}
	}
	return "equal"
}

// checkContent reads ino whole through f, in chunks of chunk bytes, and
// compares it with want; it also checks the size.
func checkContent(t *testing.T, f *FS, ino uint64, want []byte, chunk int) {
	t.Helper()
	mustSize(t, f, ino, uint64(len(want)))
	buf := make([]byte, len(want)+chunk)
	n := 0
	for {
		got, errno := f.Read(testCtx(t), ino, buf[n:n+chunk], int64(n))
		mustErrno(t, fmt.Sprintf("read %d bytes at %d", chunk, n), errno, 0)
		n += got
		if got < chunk {
			break
		}
	}
	if got := buf[:n]; !bytes.Equal(got, want) {
		t.Fatalf("content of inode %d read in chunks of %d: %s", ino, chunk, firstDiff(got, want))
	}
}

// openRead opens ino through f (close-to-open) and checks its content,
// read in chunks of 1 MiB (FUSE's largest read).
func openRead(t *testing.T, f *FS, ino uint64, want []byte) {
	t.Helper()
	openReadChunks(t, f, ino, want, 1<<20)
}

func openReadChunks(t *testing.T, f *FS, ino uint64, want []byte, chunk int) {
	t.Helper()
	h, _, errno := f.Open(testCtx(t), ino, syscall.O_RDONLY)
	mustErrno(t, "open", errno, 0)
	checkContent(t, f, ino, want, chunk)
	mustErrno(t, "release", f.Release(testCtx(t), h), 0)
}

func TestWriteReadSizes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	counter := &faultyObjects{}
	f := e.mount("writer", nil, func(o Objects) Objects { counter.Objects = o; return counter })
	other := e.mount("reader", nil, nil)
	const inlineMax = 16 << 10
	sizes := []int{0, 1, inlineMax, inlineMax + 1, 4<<20 - 1, 4 << 20, 4<<20 + 1, 9<<20 + 123}
	for _, size := range sizes {
		// Odd offsets: inside block 0 (past the inline threshold with
		// what is written), and 7 bytes before the end of block 0. (Large
		// files only at the latter, to keep the test fast under -race.)
		offsets := []int64{0, 12345, 4<<20 - 7}
		if size >= 4<<20-1 {
			offsets = []int64{0, 4<<20 - 7}
		}
		for _, off := range offsets {
			t.Run(fmt.Sprintf("size=%d/off=%d", size, off), func(t *testing.T) {
				a := mustCreate(t, f, RootIno, fmt.Sprintf("f-%d-%d", size, off))
				data := pattern(size, uint64(size)^uint64(off))
				want := data
				if size > 0 {
					want = append(make([]byte, off), data...)
				}
				// FUSE writes at most 1 MiB at a time; the core must also
				// take one large write.
				chunk := 1 << 20
				if off != 0 {
					chunk = max(size, 1)
				}
				before := counter.writes.Load()
				for i := 0; i < size; i += chunk {
					mustWrite(t, f, a.Ino, data[i:min(i+chunk, size)], off+int64(i))
				}
				if size == 0 {
					n, errno := f.Write(testCtx(t), a.Ino, nil, off)
					if n != 0 || errno != 0 {
						t.Fatalf("empty write: %d, %v", n, errno)
					}
				}
				// Read-after-write, before anything is committed.
				checkContent(t, f, a.Ino, want, 1<<20)
				mustFlush(t, f, a.Ino)
				// (Written behind under a lease, the data may still be on
				// its way after the flush: fsync waits for it.)
				mustErrno(t, "fsync", f.Fsync(testCtx(t), a.Ino), 0)
				wrote := counter.writes.Load() - before
				switch end := int(off) + size; {
				case size == 0 && wrote != 0:
					t.Errorf("an empty file wrote %d objects", wrote)
				case size > 0 && end <= inlineMax && wrote != 0:
					t.Errorf("a file of %d bytes wrote %d objects: want it inline", end, wrote)
				case size > 0 && end > inlineMax && wrote == 0:
					t.Errorf("a file of %d bytes wrote no object", end)
				}
				checkContent(t, f, a.Ino, want, 1<<20)
				// Another mount sees exactly what was committed (read in
				// odd-sized pieces: not the sequential whole-block path).
				openReadChunks(t, other, a.Ino, want, 100_003)
			})
		}
	}
	if inUse := f.data.mem.inUse(); inUse != 0 {
		t.Fatalf("%d bytes of buffer memory still held after every flush", inUse)
	}
}

// Small overwrites at random offsets over a big file, checked against a
// model after every write (read-after-write through the overlay) and, at
// each flush, through this mount and a second one.
func TestRandomOverwrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.mount("writer", nil, nil)
	other := e.mount("reader", nil, nil)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "f")
	model := pattern(6<<20+123, 42)
	mustWrite(t, f, a.Ino, model, 0)
	mustFlush(t, f, a.Ino)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 80 {
		off := r.IntN(len(model) + 50_000)
		n := 1 + r.IntN(20_000)
		if r.IntN(10) == 0 { // now and then a write across a block boundary
			off = (1+r.IntN(2))<<22 - r.IntN(n)
		}
		p := pattern(n, uint64(1000+i))
		mustWrite(t, f, a.Ino, p, int64(off))
		if end := off + n; end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], p)
		lo, hi := max(off-2000, 0), min(off+n+2000, len(model))
		got := mustRead(t, f, a.Ino, hi-lo, int64(lo))
		if !bytes.Equal(got, model[lo:hi]) {
			t.Fatalf("write %d (%d bytes at %d), read [%d,%d) before flush: %s", i, n, off, lo, hi, firstDiff(got, model[lo:hi]))
		}
		// A read of some other place (below 128 KiB: not the sequential
		// path, which the full checks take).
		ro := r.IntN(len(model))
		rn := min(1+r.IntN(100_000), len(model)-ro)
		got = mustRead(t, f, a.Ino, rn, int64(ro))
		if !bytes.Equal(got, model[ro:ro+rn]) {
			t.Fatalf("after write %d, read [%d,%d): %s", i, ro, ro+rn, firstDiff(got, model[ro:ro+rn]))
		}
		if i%40 == 39 {
			mustFlush(t, f, a.Ino)
			checkContent(t, f, a.Ino, model, 1<<20)
			openRead(t, other, a.Ino, model)
		}
	}
	mustErrno(t, "fsync", f.Fsync(ctx, a.Ino), 0)
	checkContent(t, f, a.Ino, model, 128<<10)
	openRead(t, other, a.Ino, model)
}

func TestSparseFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.mount("writer", nil, nil)
	other := e.mount("reader", nil, nil)
	a := mustCreate(t, f, RootIno, "sparse")
	const (
		off1 = 10 << 20
		off2 = 5 << 30
	)
	d1, d2 := pattern(1000, 1), pattern(3000, 2)
	mustWrite(t, f, a.Ino, d1, off1)
	mustWrite(t, f, a.Ino, d2, off2)
	check := func(f *FS, when string) {
		t.Helper()
		mustSize(t, f, a.Ino, off2+uint64(len(d2)))
		for _, tc := range []struct {
			off  int64
			n    int
			want []byte
		}{
			{0, 64 << 10, make([]byte, 64<<10)},
			{4<<20 - 10, 20, make([]byte, 20)},
			{off1 - 100, 1200, append(append(make([]byte, 100), d1...), make([]byte, 100)...)},
			{off1 + 500, 100, d1[500:600]},
			{off1 + 1000, 8 << 20, make([]byte, 8<<20)}, // a sequential-sized read of a hole
			{off2 - 5000, 6000, append(make([]byte, 5000), d2[:1000]...)},
			{off2 + 2000, 5000, d2[2000:]},
			{off2 + 3000, 10, nil},
			{off2 + 1<<20, 10, nil},
		} {
			got := mustRead(t, f, a.Ino, tc.n, tc.off)
			if !bytes.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("%s: read %d at %d: %s", when, tc.n, tc.off, firstDiff(got, tc.want))
			}
		}
	}
	check(f, "before flush")
	mustFlush(t, f, a.Ino)
	check(f, "after flush")
	h, _, errno := other.Open(testCtx(t), a.Ino, syscall.O_RDONLY)
	mustErrno(t, "open", errno, 0)
	check(other, "second mount")
	mustErrno(t, "release", other.Release(testCtx(t), h), 0)
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.mount("writer", nil, nil)
	other := e.mount("reader", nil, nil)
	ctx := testCtx(t)
	truncate := func(ino uint64, size uint64) {
		t.Helper()
		a, errno := f.SetAttr(ctx, ino, SetAttrIn{Valid: namespace.SetSize, Size: size})
		mustErrno(t, fmt.Sprintf("truncate to %d", size), errno, 0)
		if a.Size != size {
			t.Fatalf("truncate to %d: setattr reports size %d", size, a.Size)
		}
	}
	for _, tc := range []struct {
		name        string
		size        int  // written first
		flush       bool // before truncating
		down, up    int  // truncated to down, then extended to up
		readBetween bool // read the whole file (fill the read caches) before truncating
	}{
		{"objects", 6<<20 + 123, true, 3<<20 + 5, 6<<20 + 123, true},
		{"objects unflushed", 6<<20 + 123, false, 3<<20 + 5, 9 << 20, false},
		{"to a block boundary", 5 << 20, true, 4 << 20, 8 << 20, false},
		{"to zero", 1<<20 + 1, true, 0, 1<<20 + 1, true},
		{"inline", 10 << 10, true, 10, 10 << 10, true},
		{"inline unflushed", 10 << 10, false, 10, 100 << 10, false},
		{"inline to objects", 10 << 10, true, 3 << 10, 6 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustCreate(t, f, RootIno, tc.name)
			data := pattern(tc.size, uint64(tc.size))
			mustWrite(t, f, a.Ino, data, 0)
			if tc.flush {
				mustFlush(t, f, a.Ino)
			}
			if tc.readBetween {
				checkContent(t, f, a.Ino, data, 1<<20)
			}
			truncate(a.Ino, uint64(tc.down))
			checkContent(t, f, a.Ino, data[:tc.down], 1<<20)
			truncate(a.Ino, uint64(tc.up))
			want := append(append([]byte(nil), data[:tc.down]...), make([]byte, tc.up-tc.down)...)
			checkContent(t, f, a.Ino, want, 1<<20)
			openRead(t, other, a.Ino, want)
			// Writing past the end again after the truncation: the
			// bytes between stay zero.
			tail := pattern(100, 7)
			mustWrite(t, f, a.Ino, tail, int64(tc.up+4096))
			want = append(append(want, make([]byte, 4096)...), tail...)
			checkContent(t, f, a.Ino, want, 1<<20)
			mustFlush(t, f, a.Ino)
			openRead(t, other, a.Ino, want)
		})
	}
	t.Run("open O_TRUNC", func(t *testing.T) {
		a := mustCreate(t, f, RootIno, "otrunc")
		mustWrite(t, f, a.Ino, pattern(5<<20, 3), 0)
		h, _, errno := f.Open(ctx, a.Ino, syscall.O_RDONLY|syscall.O_TRUNC)
		mustErrno(t, "open O_RDONLY|O_TRUNC", errno, 0)
		mustSize(t, f, a.Ino, 5<<20) // O_TRUNC needs write access
		mustErrno(t, "release", f.Release(ctx, h), 0)
		h, keep, errno := f.Open(ctx, a.Ino, syscall.O_WRONLY|syscall.O_TRUNC)
		mustErrno(t, "open O_TRUNC", errno, 0)
		if keep {
			t.Error("open O_TRUNC kept the page cache")
		}
		mustSize(t, f, a.Ino, 0)
		mustErrno(t, "release", f.Release(ctx, h), 0)
		openRead(t, other, a.Ino, nil)
	})
}

// Close-to-open across mounts: what one mount flushed, another sees once
// it opens the file, even if it read (and cached) an older version before.
func TestCloseToOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m1 := e.mount("one", nil, nil)
	m2 := e.mount("two", nil, nil)
	ctx := testCtx(t)
	a := mustCreate(t, m1, RootIno, "shared")
	v1 := pattern(6<<20, 1)
	h1, _, errno := m1.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "open", errno, 0)
	mustWrite(t, m1, a.Ino, v1, 0)
	mustErrno(t, "flush", m1.Flush(ctx, a.Ino), 0)

	h2, _, errno := m2.Open(ctx, a.Ino, syscall.O_RDONLY)
	mustErrno(t, "open on the second mount", errno, 0)
	checkContent(t, m2, a.Ino, v1, 1<<20)
	mustErrno(t, "release", m2.Release(ctx, h2), 0)
	_, keep, errno := m2.Open(ctx, a.Ino, syscall.O_RDONLY)
	mustErrno(t, "open again", errno, 0)
	if !keep {
		t.Error("a reopen of an unchanged file dropped the page cache")
	}

	// The first mount overwrites a part and appends, then closes.
	v2 := append([]byte(nil), v1...)
	patch := pattern(300_000, 2)
	copy(v2[3<<20:], patch)
	v2 = append(v2, pattern(1<<20, 3)...)
	mustWrite(t, m1, a.Ino, patch, 3<<20)
	mustWrite(t, m1, a.Ino, v2[6<<20:], 6<<20)
	mustErrno(t, "release", m1.Release(ctx, h1), 0)

	h2, keep, errno = m2.Open(ctx, a.Ino, syscall.O_RDONLY)
	mustErrno(t, "open after the change", errno, 0)
	if keep {
		t.Error("a reopen of a changed file kept the page cache")
	}
	checkContent(t, m2, a.Ino, v2, 1<<20)
	mustErrno(t, "release", m2.Release(ctx, h2), 0)

	// The second mount truncates; the first sees the new size when it
	// opens the file again (its own earlier writes are all committed).
	_, errno = m2.SetAttr(ctx, a.Ino, SetAttrIn{Valid: namespace.SetSize, Size: 1000})
	mustErrno(t, "truncate on the second mount", errno, 0)
	h1, _, errno = m1.Open(ctx, a.Ino, syscall.O_RDONLY)
	mustErrno(t, "open on the first mount", errno, 0)
	checkContent(t, m1, a.Ino, v2[:1000], 1<<20)
	mustErrno(t, "release", m1.Release(ctx, h1), 0)
}

// An open file whose last name is removed lives on through its handle and
// is freed by the last release.
func TestUnlinkedOpenFile(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "tmp")
	data := pattern(5<<20+17, 9)
	mustWrite(t, f, a.Ino, data[:1<<20], 0)
	h, _, errno := f.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "open", errno, 0)
	mustErrno(t, "unlink", f.Unlink(ctx, RootIno, "tmp"), 0)
	_, errno = f.Lookup(ctx, RootIno, "tmp")
	mustErrno(t, "lookup of the unlinked name", errno, syscall.ENOENT)
	g, errno := f.GetAttr(ctx, a.Ino)
	mustErrno(t, "getattr of the open, unlinked file", errno, 0)
	if g.Nlink != 0 {
		t.Fatalf("unlinked file has nlink %d", g.Nlink)
	}
	mustWrite(t, f, h.Ino, data[1<<20:], 1<<20)
	checkContent(t, f, h.Ino, data, 1<<20)
	mustErrno(t, "fsync", f.Fsync(ctx, h.Ino), 0)
	checkContent(t, f, h.Ino, data, 1<<20)
	mustErrno(t, "release", f.Release(ctx, h), 0)
	// Closes reach the service in batches, within closeDelay.
	deadline := time.Now().Add(100 * closeDelay)
	for {
		_, errno = f.GetAttr(ctx, a.Ino)
		if errno == syscall.ENOENT || time.Now().After(deadline) {
			break
		}
		time.Sleep(closeDelay / 5) // polling interval
	}
	mustErrno(t, "getattr after the last release", errno, syscall.ENOENT)
}

// Forget (the kernel dropped the inode) keeps what still has to be
// committed, and drops the rest.
func TestForget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.mount("writer", nil, nil)
	other := e.mount("reader", nil, nil)
	a := mustCreate(t, f, RootIno, "f")
	data := pattern(1<<20+5, 4)
	mustWrite(t, f, a.Ino, data, 0)
	f.Forget(a.Ino)
	if f.inodes.lookup(a.Ino) == nil {
		t.Fatal("Forget dropped an inode with data not yet committed")
	}
	mustFlush(t, f, a.Ino)
	openRead(t, other, a.Ino, data)
	f.Forget(a.Ino)
	if f.inodes.lookup(a.Ino) != nil {
		t.Fatal("Forget kept an inode with nothing open nor pending")
	}
	checkContent(t, f, a.Ino, data, 1<<20)
}
