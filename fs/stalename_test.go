package fs

import (
	"bytes"
	"syscall"
	"testing"
)

// TestOpenByStaleNameOfReplacedFileIsESTALE: a mount's kernel may keep a
// name a moment after a read lease ended while its directory stayed busy
// (kernelcache.go). Opened through it, a file another mount has replaced
// since, and that a descriptor elsewhere keeps alive, is ESTALE (the
// kernel then looks the name up again), not the old file's data; the
// descriptor that keeps it still reads it.
func TestOpenByStaleNameOfReplacedFileIsESTALE(t *testing.T) {
	e := newEnv(t)
	m1 := e.mount("m1", nil, nil)
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m2, RootIno, "d").Ino
	oldIno, err := writeFile(ctx, m2, d, "r", []byte("old value"))
	if err != nil {
		t.Fatal(err)
	}
	newIno, err := writeFile(ctx, m2, d, ".t", []byte("new value"))
	if err != nil {
		t.Fatal(err)
	}
	if a, errno := m1.Lookup(ctx, d, "r"); errno != 0 || a.Ino != oldIno {
		t.Fatalf("m1 looks r up: %v, inode %d, want %d", errno, a.GetIno(), oldIno)
	}
	h, _, errno := m2.Open(ctx, oldIno, uint32(syscall.O_RDONLY))
	mustErrno(t, "m2 opens r", errno, 0)
	defer m2.Release(ctx, h)
	mustErrno(t, "m2 renames .t over r", m2.Rename(ctx, d, ".t", d, "r", 0), 0)
	mustErrno(t, "m2 fsyncs d", m2.SyncDir(ctx, d, nil), 0)

	// m1 opens what its kernel's stale name r still leads to.
	if h1, _, errno := m1.Open(ctx, oldIno, uint32(syscall.O_RDONLY)); errno != syscall.ESTALE {
		if errno == 0 {
			m1.Release(ctx, h1)
		}
		t.Fatalf("m1 opens the replaced file by its old name: %v, want ESTALE", errno)
	}
	if a, errno := m1.Lookup(ctx, d, "r"); errno != 0 || a.Ino != newIno {
		t.Fatalf("m1 looks r up again: %v, inode %d, want %d", errno, a.GetIno(), newIno)
	}
	if b := mustRead(t, m2, oldIno, 100, 0); !bytes.Equal(b, []byte("old value")) {
		t.Fatalf("m2's descriptor of the replaced file reads %q", b)
	}
}
