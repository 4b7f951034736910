package fs

import (
	"context"
	"math"
	"syscall"
	"testing"
	"time"
)

// Tests of cluster-wide locks between two mounts of one cluster.

// blockedFor is how long a waiting lock request is watched to stay
// blocked (a negative check: nothing is synchronised by it).
const blockedFor = 300 * time.Millisecond

// grantTimeout bounds how long a waiter may take to see its grant.
const grantTimeout = 15 * time.Second

// lockAsync starts a waiting Lock and returns where its result arrives.
func lockAsync(ctx context.Context, f *FS, h *Handle, l LockIn) <-chan syscall.Errno {
	ch := make(chan syscall.Errno, 1)
	go func() { ch <- f.Lock(ctx, h, l, true) }()
	return ch
}

func stillBlocked(t *testing.T, what string, ch <-chan syscall.Errno) {
	t.Helper()
	select {
	case errno := <-ch:
		t.Fatalf("%s: returned %v while the conflicting lock is held", what, errno)
	case <-time.After(blockedFor):
	}
}

func granted(t *testing.T, what string, ch <-chan syscall.Errno) {
	t.Helper()
	select {
	case errno := <-ch:
		mustErrno(t, what, errno, 0)
	case <-time.After(grantTimeout):
		t.Fatalf("%s: still waiting %v after the conflicting lock went", what, grantTimeout)
	}
}

// twoMounts is a file opened by two mounts of one cluster.
func twoMounts(t *testing.T) (m1, m2 *FS, h1, h2 *Handle) {
	t.Helper()
	e := newEnv(t)
	m1, m2 = e.mount("one", nil, nil), e.mount("two", nil, nil)
	a := mustCreate(t, m1, RootIno, "locked")
	var errno syscall.Errno
	h1, _, errno = m1.Open(testCtx(t), a.Ino, syscall.O_RDWR)
	mustErrno(t, "open on mount one", errno, 0)
	h2, _, errno = m2.Open(testCtx(t), a.Ino, syscall.O_RDWR)
	mustErrno(t, "open on mount two", errno, 0)
	return m1, m2, h1, h2
}

func TestFlockAcrossMounts(t *testing.T) {
	t.Parallel()
	m1, m2, h1, h2 := twoMounts(t)
	ctx := testCtx(t)
	flock := func(typ uint32, owner uint64) LockIn { return LockIn{Kind: KindFlock, Type: typ, Owner: owner} }

	mustErrno(t, "exclusive flock on one", m1.Lock(ctx, h1, flock(LockWrite, 1), false), 0)
	mustErrno(t, "exclusive flock on two", m2.Lock(ctx, h2, flock(LockWrite, 2), false), syscall.EAGAIN)
	mustErrno(t, "shared flock on two", m2.Lock(ctx, h2, flock(LockRead, 2), false), syscall.EAGAIN)
	// The same owner converts its own lock.
	mustErrno(t, "convert to shared on one", m1.Lock(ctx, h1, flock(LockRead, 1), false), 0)
	mustErrno(t, "shared flock on two beside it", m2.Lock(ctx, h2, flock(LockRead, 2), false), 0)
	mustErrno(t, "exclusive flock on one while two shares", m1.Lock(ctx, h1, flock(LockWrite, 1), false), syscall.EAGAIN)
	mustErrno(t, "unlock on two", m2.Lock(ctx, h2, flock(LockUnlock, 2), false), 0)
	mustErrno(t, "exclusive flock on one", m1.Lock(ctx, h1, flock(LockWrite, 1), false), 0)

	// A waiter on two is granted once one unlocks.
	ch := lockAsync(ctx, m2, h2, flock(LockWrite, 2))
	stillBlocked(t, "waiting flock on two", ch)
	mustErrno(t, "unlock on one", m1.Lock(ctx, h1, flock(LockUnlock, 1), false), 0)
	granted(t, "waiting flock on two", ch)
	mustErrno(t, "flock on one while two holds it", m1.Lock(ctx, h1, flock(LockWrite, 1), false), syscall.EAGAIN)

	// Releasing the handle drops the locks taken through it.
	ch = lockAsync(ctx, m1, h1, flock(LockWrite, 1))
	stillBlocked(t, "waiting flock on one", ch)
	mustErrno(t, "release on two", m2.Release(ctx, h2), 0)
	granted(t, "flock on one after two closed the file", ch)
}

func TestPosixLocksAcrossMounts(t *testing.T) {
	t.Parallel()
	m1, m2, h1, h2 := twoMounts(t)
	ctx := testCtx(t)
	lk := func(typ uint32, owner, start, end uint64) LockIn {
		return LockIn{Kind: KindPosix, Type: typ, Owner: owner, Start: start, End: end}
	}
	mustErrno(t, "write lock [0,99] on one", m1.Lock(ctx, h1, lk(LockWrite, 1, 0, 99), false), 0)
	mustErrno(t, "write lock [100,199] on two", m2.Lock(ctx, h2, lk(LockWrite, 2, 100, 199), false), 0)
	for _, tc := range []struct {
		name string
		l    LockIn
	}{
		{"write [50,150]", lk(LockWrite, 2, 50, 150)},
		{"read [99,99]", lk(LockRead, 2, 99, 99)},
		{"write [0,EOF]", lk(LockWrite, 2, 0, math.MaxUint64)},
	} {
		mustErrno(t, tc.name+" on two", m2.Lock(ctx, h2, tc.l, false), syscall.EAGAIN)
	}

	// F_GETLK from two reports one's lock; one sees no conflict with its own.
	c, errno := m2.GetLk(ctx, h2.Ino, lk(LockWrite, 2, 0, 1000))
	mustErrno(t, "getlk on two", errno, 0)
	if c.Type != LockWrite || c.Start != 0 || c.End != 99 || c.Owner != 1 {
		t.Fatalf("getlk on two: %+v, want one's write lock [0,99] of owner 1", c)
	}
	c, errno = m1.GetLk(ctx, h1.Ino, lk(LockWrite, 1, 0, 99))
	mustErrno(t, "getlk on one", errno, 0)
	if c.Type != 0 {
		t.Fatalf("getlk on one over its own lock: %+v, want none", c)
	}
	c, errno = m2.GetLk(ctx, h2.Ino, lk(LockRead, 2, 200, 300))
	mustErrno(t, "getlk on two past every lock", errno, 0)
	if c.Type != 0 {
		t.Fatalf("getlk past every lock: %+v, want none", c)
	}

	// Read locks share.
	mustErrno(t, "read lock [300,399] on one", m1.Lock(ctx, h1, lk(LockRead, 1, 300, 399), false), 0)
	mustErrno(t, "read lock [350,450] on two", m2.Lock(ctx, h2, lk(LockRead, 2, 350, 450), false), 0)

	// A waiter for [0,50] stays blocked while any byte of it is locked:
	// unlocking [0,49] splits one's lock, [50,99] still conflicts.
	ch := lockAsync(ctx, m2, h2, lk(LockWrite, 2, 0, 50))
	stillBlocked(t, "waiting lock [0,50] on two", ch)
	mustErrno(t, "unlock [0,49] on one", m1.Lock(ctx, h1, lk(LockUnlock, 1, 0, 49), false), 0)
	stillBlocked(t, "waiting lock [0,50] on two after a partial unlock", ch)
	mustErrno(t, "unlock [50,99] on one", m1.Lock(ctx, h1, lk(LockUnlock, 1, 50, 99), false), 0)
	granted(t, "waiting lock [0,50] on two", ch)

	// A waiter that gives up (its context ends) gets EINTR and its request
	// is withdrawn: it is not granted later.
	wctx, cancel := context.WithCancel(ctx)
	ch = lockAsync(wctx, m2, h2, lk(LockWrite, 2, 300, 310))
	stillBlocked(t, "waiting lock [300,310] on two", ch)
	cancel()
	select {
	case errno := <-ch:
		mustErrno(t, "cancelled wait", errno, syscall.EINTR)
	case <-time.After(grantTimeout):
		t.Fatal("a cancelled wait did not return")
	}
	mustErrno(t, "unlock [300,399] on one", m1.Lock(ctx, h1, lk(LockUnlock, 1, 300, 399), false), 0)
	mustErrno(t, "write lock [300,310] by another owner on one", m1.Lock(ctx, h1, lk(LockWrite, 3, 300, 310), false), 0)

	// Two waiters that wait for each other: the second is refused.
	mustErrno(t, "write lock [1000,1009] on one", m1.Lock(ctx, h1, lk(LockWrite, 1, 1000, 1009), false), 0)
	mustErrno(t, "write lock [2000,2009] on two", m2.Lock(ctx, h2, lk(LockWrite, 2, 2000, 2009), false), 0)
	ch = lockAsync(ctx, m1, h1, lk(LockWrite, 1, 2000, 2009))
	stillBlocked(t, "one waiting for two", ch)
	mustErrno(t, "two waiting for one", m2.Lock(ctx, h2, lk(LockWrite, 2, 1000, 1009), true), syscall.EDEADLK)
	mustErrno(t, "unlock [2000,2009] on two", m2.Lock(ctx, h2, lk(LockUnlock, 2, 2000, 2009), false), 0)
	granted(t, "one waiting for two", ch)

	// The end of a mount's session releases its locks.
	ch = lockAsync(ctx, m2, h2, lk(LockWrite, 2, 0, math.MaxUint64))
	stillBlocked(t, "waiting lock of the whole file on two", ch)
	if err := m1.Close(); err != nil {
		t.Fatalf("closing mount one: %v", err)
	}
	granted(t, "lock of the whole file on two after one ended", ch)
}
