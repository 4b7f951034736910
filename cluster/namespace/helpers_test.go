package namespace

import (
	"bytes"
	"maps"
	"syscall"
	"testing"
	"unsafe"
)

const t0 = int64(1_000_000_000)

// tfs wraps a Namespace with an inode allocator and a clock for tests.
type tfs struct {
	*Namespace
	t     testing.TB
	next  Ino
	clock int64
}

func newTFS(t testing.TB) *tfs {
	return &tfs{Namespace: New(0o755, 0, 0, t0), t: t, next: 100, clock: t0}
}

// now advances the clock and returns it.
func (f *tfs) now() int64 { f.clock += 1000; return f.clock }

func (f *tfs) alloc() Ino { f.next++; return f.next }

func (f *tfs) mkdir(parent Ino, name string) Ino {
	f.t.Helper()
	a, e := f.Mkdir(parent, name, 0o755, 1, 1, f.alloc(), f.now())
	mustOK(f.t, e)
	return a.Ino
}

func (f *tfs) create(parent Ino, name string) Ino {
	f.t.Helper()
	a, e := f.Create(parent, name, TypeFile, 0o644, 1, 1, 0, f.alloc(), f.now(), true)
	mustOK(f.t, e)
	return a.Ino
}

func (f *tfs) attr(ino Ino) Attr {
	f.t.Helper()
	a, e := f.GetAttr(ino)
	mustOK(f.t, e)
	return a
}

func (f *tfs) gone(ino Ino) {
	f.t.Helper()
	if _, e := f.GetAttr(ino); e != syscall.ENOENT {
		f.t.Fatalf("GetAttr(%d) = %v, want ENOENT (freed)", ino, e)
	}
}

func (f *tfs) lookup(parent Ino, name string) Ino {
	f.t.Helper()
	a, e := f.Lookup(parent, name)
	mustOK(f.t, e)
	return a.Ino
}

// commit commits one slice of object obj covering [off, off+n) of block b.
func (f *tfs) commit(ino Ino, b uint64, off, n uint32, obj uint64) []uint64 {
	f.t.Helper()
	_, freed, e := f.CommitSlices(ino, []BlockWrite{{Block: b, Slice: Slice{Off: off, Len: n, Object: obj}}}, 0, f.now())
	mustOK(f.t, e)
	return freed
}

// names lists directory dir in cookie order.
func (f *tfs) names(dir Ino) []string {
	f.t.Helper()
	ents, e := f.ReadDir(dir, 0, 1<<30)
	mustOK(f.t, e)
	var out []string
	for _, de := range ents {
		out = append(out, de.Name)
	}
	return out
}

// roundTrip checks the reference counts f keeps as operations go, and that
// a snapshot of f restores to an equal namespace, with
// the same object reference counts, and re-encodes to the same bytes, and
// returns the copy.
func (f *tfs) roundTrip() *Namespace {
	f.t.Helper()
	if err := f.checkRefs(); err != nil {
		f.t.Fatalf("before the snapshot: %v", err)
	}
	var b1, b2 bytes.Buffer
	if _, err := f.WriteTo(&b1); err != nil {
		f.t.Fatal(err)
	}
	c, err := Read(bytes.NewReader(b1.Bytes()))
	if err != nil {
		f.t.Fatalf("Read: %v", err)
	}
	if _, err := c.WriteTo(&b2); err != nil {
		f.t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) || c.Digest() != f.Digest() || !c.Equal(f.Namespace) {
		f.t.Fatal("snapshot round trip differs")
	}
	if !maps.Equal(c.objRefs, f.objRefs) {
		f.t.Fatalf("object reference counts after the round trip: %v, before %v", c.objRefs, f.objRefs)
	}
	return c
}

func mustOK(t testing.TB, e syscall.Errno) {
	t.Helper()
	if e != 0 {
		t.Fatalf("unexpected errno %v (%d)", e, int(e))
	}
}

func wantErrno(t testing.TB, got, want syscall.Errno) {
	t.Helper()
	if got != want {
		t.Fatalf("errno = %v (%d), want %v (%d)", got, int(got), want, int(want))
	}
}

// TestSizes guards the memory budget: the structs every file pays for.
func TestSizes(t *testing.T) {
	if s := unsafe.Sizeof(inode{}); s != 64 {
		t.Errorf("inode is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(dentry{}); s != 32 {
		t.Errorf("dentry is %d bytes, want 32", s)
	}
}
