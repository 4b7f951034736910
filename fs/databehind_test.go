package fs

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/store"
)

// gatedObjects holds object writes while its gate is shut and counts the
// writes waiting there and their bytes.
type gatedObjects struct {
	Objects
	gate
	waiting      atomic.Int64
	waitingBytes atomic.Int64
}

func (g *gatedObjects) Write(ctx context.Context, obj store.Object, data []byte, quorum int) ([]store.ShardResult, error) {
	g.waiting.Add(1)
	g.waitingBytes.Add(int64(len(data)))
	err := g.pass(ctx)
	g.waiting.Add(-1)
	g.waitingBytes.Add(-int64(len(data)))
	if err != nil {
		return nil, err
	}
	return g.Objects.Write(ctx, obj, data, quorum)
}

// writeFile creates parent/name with data through one handle and closes it
// as close(2) does (FLUSH, then RELEASE), reporting the first failure.
func writeFile(ctx context.Context, f *FS, parent uint64, name string, data []byte) (uint64, error) {
	a, h, errno := f.CreateOpen(ctx, parent, name, 0o644, 1000, 1000, uint32(syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL))
	if errno != 0 {
		return 0, fmt.Errorf("create %s: %w", name, errno)
	}
	for off := 0; off < len(data); off += 1 << 20 { // FUSE writes at most 1 MiB at a time
		if _, errno := f.WriteFile(ctx, h, data[off:min(off+1<<20, len(data))], int64(off)); errno != 0 {
			return 0, fmt.Errorf("write %s: %w", name, errno)
		}
	}
	if errno := f.FlushFile(ctx, h); errno != 0 {
		return 0, fmt.Errorf("close %s: %w", name, errno)
	}
	if errno := f.Release(ctx, h); errno != 0 {
		return 0, fmt.Errorf("release %s: %w", name, errno)
	}
	return a.Ino, nil
}

// TestDataBehindCloseDoesNotWaitAndOthersSeeAll: files over the inline
// threshold written in a directory the mount leases are closed, their
// times set and renamed (as rsync does) while none of their data can reach
// the stores; the mount reads them back from its buffers; another mount
// that opens them waits until their data is stored and committed, and reads
// every byte, with the times set after the data.
func TestDataBehindCloseDoesNotWaitAndOthersSeeAll(t *testing.T) {
	e := newEnv(t)
	gobj := &gatedObjects{}
	m1 := e.mount("m1", nil, func(o Objects) Objects { gobj.Objects = o; return gobj })
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino

	gobj.shut()
	t.Cleanup(gobj.open)
	sizes := []int{16<<10 + 1, 100 << 10, 1 << 20, 4<<20 - 1}
	want := map[string][]byte{}
	const mtime = 1234567890_000000000
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			for i, size := range sizes {
				name := fmt.Sprint(".f", i, ".tmp")
				data := pattern(size, uint64(i))
				ino, err := writeFile(ctx, m1, d, name, data)
				if err != nil {
					return err
				}
				if _, errno := m1.SetAttr(ctx, ino, SetAttrIn{Valid: namespace.SetMtime, Mtime: mtime}); errno != 0 {
					return fmt.Errorf("utimes %s: %w", name, errno)
				}
				if errno := m1.Rename(ctx, d, name, d, fmt.Sprint("f", i), 0); errno != 0 {
					return fmt.Errorf("rename %s: %w", name, errno)
				}
				want[fmt.Sprint("f", i)] = data
			}
			return nil
		}()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("closing files written under a lease waited for their data to reach the stores")
	}
	total := 0
	for _, size := range sizes {
		total += size
	}
	// The files up to packMax go as one object, or a few (packLinger).
	waitUntil(t, "every file's upload to wait at the stores", 10*time.Second, func() bool {
		return gobj.waitingBytes.Load() == int64(total)
	})

	// Read-after-write in the mount: sizes, times and bytes from its
	// buffers, none of it stored yet.
	for name, data := range want {
		a, errno := m1.Lookup(ctx, d, name)
		mustErrno(t, "m1 lookup "+name, errno, 0)
		if a.Size != uint64(len(data)) || a.Mtime != mtime {
			t.Fatalf("m1 sees %s with size %d mtime %d, want %d and %d", name, a.Size, a.Mtime, len(data), mtime)
		}
		if b := mustRead(t, m1, a.Ino, len(data)+10, 0); !bytes.Equal(b, data) {
			t.Fatalf("m1 reads %d bytes of %s back, not the %d it wrote", len(b), name, len(data))
		}
	}

	// m2 opens and reads every file: the lease is revoked, and m1 gives it
	// back only once the data is stored and the journal applied.
	type got struct {
		name  string
		data  []byte
		mtime int64
		err   error
	}
	results := make(chan got, len(want))
	go func() {
		for name := range want {
			a, errno := m2.Lookup(ctx, d, name)
			if errno != 0 {
				results <- got{name: name, err: errno}
				continue
			}
			h, _, errno := m2.Open(ctx, a.Ino, uint32(syscall.O_RDONLY))
			if errno != 0 {
				results <- got{name: name, err: errno}
				continue
			}
			p := make([]byte, a.Size+10)
			n, errno := m2.Read(ctx, a.Ino, p, 0)
			m2.Release(ctx, h)
			results <- got{name: name, data: p[:n], mtime: a.Mtime, err: errnoErr(errno)}
		}
	}()
	waitUntil(t, "m1's lease of d to be revoked", 10*time.Second, func() bool {
		l := m1.leases.get(d)
		return l == nil || !l.held.Load()
	})
	select {
	case r := <-results:
		t.Fatalf("m2 opened %s (%d bytes, err %v) before m1's data reached the stores", r.name, len(r.data), r.err)
	default:
	}
	gobj.open()
	for range want {
		r := <-results
		if r.err != nil {
			t.Fatalf("m2 reading %s: %v", r.name, r.err)
		}
		if !bytes.Equal(r.data, want[r.name]) || r.mtime != mtime {
			t.Errorf("m2 reads %d bytes of %s with mtime %d, want the %d written and mtime %d", len(r.data), r.name, r.mtime, len(want[r.name]), mtime)
		}
	}
	if names := listNames(t, m2, d); len(names) != len(want) {
		t.Errorf("m2 lists %v, want only the renamed files", names)
	}
}

func errnoErr(errno syscall.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

// TestDataBehindFailureReported: a file's data that cannot be stored after
// its close returned is reported by the next fsync (EIO), leaves no size
// the service does not have in either mount, and does not hold up the
// changes journaled after it.
func TestDataBehindFailureReported(t *testing.T) {
	e := newEnv(t)
	m1, objs := e.failingMount("m1")
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino

	objs.failWrites.Store(true)
	ino, err := writeFile(ctx, m1, d, "lost", pattern(200<<10, 7))
	if err != nil {
		t.Fatalf("close of a file written behind reported the failure of an upload still running: %v", err)
	}
	if _, err := writeFile(ctx, m1, d, "small", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	mustErrno(t, "fsync of the file whose data was lost", m1.Fsync(ctx, ino), syscall.EIO)
	mustErrno(t, "fsync again (the failure was told)", m1.Fsync(ctx, ino), 0)
	objs.failWrites.Store(false)

	waitUntil(t, "m1 to give its leases back and see the service's size", 10*time.Second, func() bool {
		a, errno := m1.GetAttr(ctx, ino)
		return errno == 0 && a.Size == 0
	})
	if a, errno := m2.Lookup(ctx, d, "lost"); errno != 0 || a.Size != 0 {
		t.Fatalf("m2 sees the lost file as %v (errno %v), want it empty", a, errno)
	}
	if b := mustRead(t, m2, lookupIno(t, m2, d, "small"), 10, 0); string(b) != "kept" {
		t.Fatalf("m2 reads %q from the file written after the failed one", b)
	}
}

// TestWriteLeaseAdoptsFiles: a mount that write-leases a directory another
// mount filled answers for its files as for its own: removing them all
// (lookup, getattr, unlink, as rm -rf does) costs a few calls to the
// service, not calls per file. Another mount's change of such a file
// through a descriptor it opened before (write and close: a data commit)
// or a getattr by inode number waits for the lease to be given back, and
// sees and is seen exactly.
func TestWriteLeaseAdoptsFiles(t *testing.T) {
	const n = 60
	a, cm, b, d := filledByB(t, n)
	ctx := testCtx(t)
	kept := lookupIno(t, b, d, "f0")
	if _, errno := writeSmall(t, b, d, "g", []byte("g"), true); errno != 0 {
		t.Fatal(errno)
	}
	g := lookupIno(t, b, d, "g")                             // a never looks at it until it is a's own
	h, _, errno := b.Open(ctx, kept, uint32(syscall.O_RDWR)) // opened before a's lease
	mustErrno(t, "b opens f0", errno, 0)

	leaseByWriting(t, a, d) // the first change revokes b's lease
	// Per file it would be two calls or more (118 without adoption); the
	// journal's batches and the lease's own calls are a few, more under -race.
	if calls := removeFiles(t, a, cm, d, 1, n); calls > (n-1)/2 {
		t.Fatalf("a made %d calls to the service to look up, stat and remove %d files of its leased directory", calls, n-1)
	}
	at, errno := a.Lookup(ctx, d, "f0")
	mustErrno(t, "a lookup f0", errno, 0)
	if !a.leases.get(d).held.Load() || a.view.localAttr(kept) == nil {
		t.Fatal("f0 is not a's own under its lease")
	}

	// b writes through the descriptor it had: its commit revokes a's lease
	// first, and a sees the new content and size at once.
	if _, errno := b.WriteFile(ctx, h, []byte("changed by b"), 0); errno != 0 {
		t.Fatal(errno)
	}
	mustErrno(t, "b closes f0", b.FlushFile(ctx, h), 0)
	mustErrno(t, "b releases f0", b.Release(ctx, h), 0)
	if got := mustRead(t, a, at.Ino, 100, 0); string(got) != "changed by b" {
		t.Fatalf("a reads %q after b's close", got)
	}
	// a's chmod written behind is what b's getattr by number sees.
	waitUntil(t, "a to lease d again", 10*time.Second, func() bool {
		_, errno := writeSmall(t, a, d, fmt.Sprint("again", time.Now().UnixNano()), []byte("x"), true)
		mustErrno(t, "create", errno, 0)
		l := a.leases.get(d)
		return l != nil && l.held.Load() && a.view.localAttr(g) != nil
	})
	if _, errno := a.SetAttr(ctx, g, SetAttrIn{Valid: namespace.SetMode, Mode: 0o600}); errno != 0 {
		t.Fatal(errno)
	}
	if !a.pipe.pending() && a.view.localAttr(g) == nil {
		t.Fatal("a's chmod of its own file was not written behind")
	}
	if ga, errno := b.GetAttr(ctx, g); errno != 0 || ga.Mode&0o777 != 0o600 {
		t.Fatalf("b's getattr of g after a's chmod: %v (%v)", ga, errno)
	}
	names := listNames(t, b, d)
	for i := 1; i < n; i++ {
		if names[fmt.Sprint("f", i)] {
			t.Fatalf("b still lists f%d, which a removed", i)
		}
	}
	if !names["f0"] || !names["g"] {
		t.Fatal("b lost f0 or g")
	}
}

// TestWriteLeaseAdoptsFilesTheMountRead: files the mount looked up, opened
// and read before it leased their directory (as a second mount's stat,
// read and then rm of another mount's tree does, with the kernel holding
// the inodes) are adopted too once idle: removing them asks the service
// nothing per file.
func TestWriteLeaseAdoptsFilesTheMountRead(t *testing.T) {
	const n = 40
	a, cm, b, d := filledByB(t, n)
	ctx := testCtx(t)
	for i := range n {
		ino := lookupIno(t, a, d, fmt.Sprint("f", i))
		h, _, errno := a.Open(ctx, ino, uint32(syscall.O_RDONLY))
		mustErrno(t, "open", errno, 0)
		if got := mustRead(t, a, ino, 100, 0); string(got) != fmt.Sprint("file ", i) {
			t.Fatalf("f%d reads %q", i, got)
		}
		mustErrno(t, "release", a.Release(ctx, h), 0)
		if a.inodes.lookup(ino) == nil {
			t.Fatalf("a keeps no state of f%d after reading it: the test would not test", i)
		}
	}
	leaseByWriting(t, a, d)
	if calls := removeFiles(t, a, cm, d, 0, n); calls > n/2 {
		t.Fatalf("a made %d calls to the service to look up, stat and remove %d files it had read", calls, n)
	}
	names := listNames(t, b, d)
	for i := range n {
		if names[fmt.Sprint("f", i)] {
			t.Fatalf("b still lists f%d, which a removed", i)
		}
	}
}

// leaseByWriting has a write small files in d until it write-leases d.
func leaseByWriting(t *testing.T, a *FS, d uint64) {
	t.Helper()
	for i := 0; a.leases.get(d) == nil || !a.leases.get(d).held.Load(); i++ {
		if i > 100 {
			t.Fatal("a never leased d")
		}
		if _, errno := writeSmall(t, a, d, fmt.Sprint("a", i), []byte("x"), true); errno != 0 {
			t.Fatal(errno)
		}
	}
}

// filledByB has mount b make d with n small files f0... ("file 0"...),
// beside mount a, whose calls to the service are counted.
func filledByB(t *testing.T, n int) (a *FS, cm *countingMeta, b *FS, d uint64) {
	t.Helper()
	e := newEnv(t)
	a, cm = e.countedMount("a")
	b = e.mount("b", nil, nil)
	d = mustMkdir(t, b, RootIno, "d").Ino
	for i := range n {
		if _, errno := writeSmall(t, b, d, fmt.Sprint("f", i), []byte(fmt.Sprint("file ", i)), true); errno != 0 {
			t.Fatal(errno)
		}
	}
	return a, cm, b, d
}

// removeFiles has a look up, stat and unlink f<from>..f<n-1> in d, as rm
// -rf does, checking their sizes, and returns its calls to the service.
func removeFiles(t *testing.T, a *FS, cm *countingMeta, d uint64, from, n int) int64 {
	t.Helper()
	ctx := testCtx(t)
	before := cm.n.Load()
	for i := from; i < n; i++ {
		name := fmt.Sprint("f", i)
		at, errno := a.Lookup(ctx, d, name)
		mustErrno(t, "a lookup "+name, errno, 0)
		if _, errno := a.GetAttr(ctx, at.Ino); errno != 0 || at.Size != uint64(len(fmt.Sprint("file ", i))) {
			t.Fatalf("a sees %s with size %d (%v)", name, at.Size, errno)
		}
		mustErrno(t, "a unlink "+name, a.Unlink(ctx, d, name), 0)
	}
	return cm.n.Load() - before
}
