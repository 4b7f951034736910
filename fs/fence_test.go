package fs

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Fencing (issue 8, hole 1): a mount that took a lock and wrote, then lost
// its session (frozen past its TTL, cut off), must not commit what it
// wrote under a replacement session over what the next lock holder wrote.

// TestFencedWriterLosesToNextHolder: mount one flocks a file and buffers
// data; its session ends (as the leader ends it when the mount stops
// renewing); mount two takes the lock, writes and closes. When one's
// close comes, its data is refused (EIO) and two's bytes stay, for data
// written inline and for data in objects.
func TestFencedWriterLosesToNextHolder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
	}{
		{"inline", 100},
		{"objects", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			m1 := e.mount("frozen", func(c *Config) { c.SessionTTL = 3 * time.Second }, nil)
			m2 := e.mount("next", nil, nil)
			ctx := testCtx(t)
			ino, errno := writeSmall(t, m2, RootIno, "f", bytes.Repeat([]byte("0"), tc.size), true)
			mustErrno(t, "create f", errno, 0)
			flock := func(owner uint64) LockIn { return LockIn{Kind: KindFlock, Type: LockWrite, Owner: owner} }

			h1, _, errno := m1.Open(ctx, ino, syscall.O_RDWR)
			mustErrno(t, "open on the first mount", errno, 0)
			mustErrno(t, "flock on the first mount", m1.Lock(ctx, h1, flock(1), false), 0)
			stale := bytes.Repeat([]byte("A"), tc.size)
			mustWrite(t, m1, ino, stale, 0) // buffered: not committed yet

			// The session ends, and with it the lock.
			old := m1.Session()
			if _, err := e.client().Apply(ctx, &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: old}}}); err != nil {
				t.Fatal(err)
			}
			h2, _, errno := m2.Open(ctx, ino, syscall.O_RDWR)
			mustErrno(t, "open on the second mount", errno, 0)
			granted(t, "flock on the second mount", lockAsync(ctx, m2, h2, flock(2)))
			fresh := bytes.Repeat([]byte("B"), tc.size)
			mustWrite(t, m2, ino, fresh, 0)
			mustErrno(t, "close on the second mount", m2.Release(ctx, h2), 0)

			// The first mount wakes up and replaces its session.
			waitUntil(t, "a new session on the first mount", 15*time.Second, func() bool { return m1.Session() != old })
			mustErrno(t, "close of the fenced descriptor", m1.Release(ctx, h1), syscall.EIO)

			if got := mustRead(t, m2, ino, tc.size+1, 0); !bytes.Equal(got, fresh) {
				t.Fatalf("the file holds %q..., want the second holder's %q...", head(got), head(fresh))
			}
			if got := mustRead(t, m1, ino, tc.size+1, 0); !bytes.Equal(got, fresh) {
				t.Fatalf("the first mount reads %q..., want the second holder's %q...", head(got), head(fresh))
			}
		})
	}
}

// TestFencedDescriptorWritesNothingMore: after its session was replaced
// while it held a lock, the descriptor that took it, every other one open
// then, and every one opened before the one that took it is closed, refuse
// writes, fsync and close (EIO); a new descriptor after that works.
func TestFencedDescriptorWritesNothingMore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m1 := e.mount("frozen", func(c *Config) { c.SessionTTL = 3 * time.Second }, nil)
	ctx := testCtx(t)
	a := mustCreate(t, m1, RootIno, "f")
	h, _, errno := m1.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "open", errno, 0)
	mustErrno(t, "flock", m1.Lock(ctx, h, LockIn{Kind: KindFlock, Type: LockWrite, Owner: 1}, false), 0)
	// The holder writes its data through another descriptor (a lock file
	// beside the data): that one is fenced too.
	data := mustCreate(t, m1, RootIno, "data")
	hd, _, errno := m1.Open(ctx, data.Ino, syscall.O_RDWR)
	mustErrno(t, "open data", errno, 0)
	old := m1.Session()
	if _, err := e.client().Apply(ctx, &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: old}}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a new session", 15*time.Second, func() bool { return m1.Session() != old })
	if _, errno := m1.WriteFile(ctx, h, []byte("late"), 0); errno != syscall.EIO {
		t.Fatalf("write through the fenced descriptor: errno %v, want EIO", errno)
	}
	mustErrno(t, "fsync of the fenced descriptor", m1.FsyncFile(ctx, h), syscall.EIO)
	if _, errno := m1.WriteFile(ctx, hd, []byte("late"), 0); errno != syscall.EIO {
		t.Fatalf("write through the holder's other descriptor: errno %v, want EIO", errno)
	}
	mustErrno(t, "close of the holder's other descriptor", m1.Release(ctx, hd), syscall.EIO)
	// Opened while the descriptor that held the lock is still open: the
	// holder may be opening it for its critical section.
	late, _, errno := m1.Open(ctx, data.Ino, syscall.O_RDWR)
	mustErrno(t, "an open while the holder's descriptor is open", errno, 0)
	if _, errno := m1.WriteFile(ctx, late, []byte("late"), 0); errno != syscall.EIO {
		t.Fatalf("write through a descriptor opened before the holder closed its own: errno %v, want EIO", errno)
	}
	mustErrno(t, "close of that descriptor", m1.Release(ctx, late), syscall.EIO)
	mustErrno(t, "close of the fenced descriptor", m1.Release(ctx, h), syscall.EIO)

	h2, _, errno := m1.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "a new open", errno, 0)
	if _, errno := m1.WriteFile(ctx, h2, []byte("new"), 0); errno != 0 {
		t.Fatalf("write through a new descriptor: %v", errno)
	}
	mustErrno(t, "close of the new descriptor", m1.Release(ctx, h2), 0)
	if got := mustRead(t, m1, a.Ino, 10, 0); string(got) != "new" {
		t.Fatalf("read %q, want %q", got, "new")
	}
}

func head(b []byte) string {
	if len(b) > 8 {
		b = b[:8]
	}
	return fmt.Sprintf("%s (%d bytes)", b, len(b))
}
