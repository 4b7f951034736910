//go:build cluster

package fs

import (
	"syscall"
	"testing"
)

// TestClusterSmoke: the core on the real cluster (the real metadata client
// over gRPC and Raft, the real object layer over HTTP to stores on disk):
// one mount creates a file and writes 9 MiB (three objects) and a small
// inline file, reads them back, and a second mount reads the same.
func TestClusterSmoke(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t)
	m1 := e.mount("one", nil, nil)
	m2 := e.mount("two", nil, nil)
	ctx := testCtx(t)

	a := mustCreate(t, m1, RootIno, "big")
	want := pattern(9<<20, 5)
	h, _, errno := m1.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "open", errno, 0)
	for off := 0; off < len(want); off += 1 << 20 {
		mustWrite(t, m1, a.Ino, want[off:off+1<<20], int64(off))
	}
	mustErrno(t, "release", m1.Release(ctx, h), 0)
	mustHealth(t, m1, a.Ino, "4+2 6/6 ok")
	checkContent(t, m1, a.Ino, want, 1<<20)
	openRead(t, m2, a.Ino, want)

	small, errno := writeSmall(t, m1, RootIno, "small", []byte("inline"), true)
	mustErrno(t, "create small", errno, 0)
	if got := mustRead(t, m2, lookupIno(t, m2, RootIno, "small"), 100, 0); string(got) != "inline" {
		t.Fatalf("the second mount reads %q, want %q", got, "inline")
	}
	mustHealth(t, m2, small, "inline")
}
