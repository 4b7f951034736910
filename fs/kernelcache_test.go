package fs

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// recordingKernel is an Invalidator that records what it was told, and
// what the service's state was when it was told (when set).
type recordingKernel struct {
	mu      sync.Mutex
	entries []string
	attrs   []uint64
	before  func() string // the state it saw then
	seen    []string
	busy    atomic.Bool // names wait while set (a request in their directory), until their deadline
}

func (k *recordingKernel) InvalEntries(parent uint64, names []string, by time.Time) int {
	for k.busy.Load() { // as the adapter waits for the directory to be idle
		if !time.Now().Before(by) {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, name := range names {
		k.entries = append(k.entries, fmt.Sprintf("%d/%s", parent, name))
		if k.before != nil {
			k.seen = append(k.seen, k.before())
		}
	}
	return len(names)
}

func (k *recordingKernel) InvalAttr(ino uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.attrs = append(k.attrs, ino)
}

func (k *recordingKernel) told(entry string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Contains(k.entries, entry)
}

// TestReadLeaseReleasedWhileDirectoryBusy: a revoked read lease whose
// directory has a request of the holder's in progress (which the kernel's
// invalidation of a name would wait for) is released after readInvalWait
// with the attributes dropped, and its names are dropped once the
// directory is idle.
func TestReadLeaseReleasedWhileDirectoryBusy(t *testing.T) {
	t.Parallel()
	_, a, b, d, files, _, k := readLeased(t, 2)
	ctx := testCtx(t)
	_, kept, errno := a.LookupKept(ctx, d, "f0")
	mustErrno(t, "lookup", errno, 0)
	if left := time.Until(kept.Until); left < readKeep/2 || left > readKeep {
		t.Fatalf("an answer from the copy may be kept %v; want about readKeep (%v)", left, readKeep)
	}
	k.busy.Store(true)
	start := time.Now()
	if _, errno := b.SetAttr(ctx, files[0], SetAttrIn{Valid: namespace.SetMode, Mode: 0o600}); errno != 0 {
		t.Fatalf("chmod on b: %v", errno)
	}
	if took := time.Since(start); took < readInvalWait*4/5 || took > readInvalWait+5*time.Second {
		t.Fatalf("b's change took %v; want it to wait readInvalWait (%v) for the busy holder", took, readInvalWait)
	}
	k.mu.Lock()
	attrs, names := slices.Clone(k.attrs), slices.Clone(k.entries)
	k.mu.Unlock()
	if !slices.Contains(attrs, files[0]) || len(names) != 0 {
		t.Fatalf("kernel told to drop attributes %v and names %v while busy; want f0's attributes only", attrs, names)
	}
	if at, errno := a.GetAttr(ctx, files[0]); errno != 0 || at.Mode != 0o600 {
		t.Fatalf("a after b's chmod: %v %v", at, errno)
	}
	k.busy.Store(false)
	waitUntil(t, "f0's name dropped once the directory is idle", 10*time.Second, func() bool {
		return k.told(fmt.Sprintf("%d/f0", d))
	})
}

// TestReadLeaseHandedToWriteLease: a read-leased directory the mount
// starts writing in is write-leased; the names the kernel was given from
// the copy stay with it (no other mount can change them), and are dropped
// when the write lease ends, before another mount's change goes through.
func TestReadLeaseHandedToWriteLease(t *testing.T) {
	t.Parallel()
	e, a, b, d, files, _, k := readLeased(t, 3)
	ctx := testCtx(t)
	for i := range files {
		_, errno := a.Lookup(ctx, d, fmt.Sprint("f", i))
		mustErrno(t, "lookup", errno, 0)
	}
	leaseByWriting(t, a, d)
	a.reads.wait()
	k.mu.Lock()
	names, attrs := slices.Clone(k.entries), slices.Clone(k.attrs)
	k.mu.Unlock()
	if len(names) != 0 {
		t.Fatalf("kernel told to drop names %v the write lease covers", names)
	}
	for _, f := range files {
		if !slices.Contains(attrs, f) {
			t.Fatalf("kernel not told to drop the attributes of %d (told %v)", f, attrs)
		}
	}
	k.mu.Lock()
	k.before = func() string {
		r := e.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: d, Name: "theirs"}}})
		return fmt.Sprint(r.GetAttr() != nil)
	}
	k.mu.Unlock()
	mustCreate(t, b, d, "theirs") // revokes a's write lease
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range files {
		j := slices.Index(k.entries, fmt.Sprintf("%d/f%d", d, i))
		if j < 0 || k.seen[j] != "false" {
			t.Fatalf("f%d: kernel told %v, seeing b's file made %v; want f%d dropped before b's create", i, k.entries, k.seen, i)
		}
	}
}

// TestReadLeaseNotRetakenWhileReleasing: while a read lease's release
// waits for the kernel (its directory busy), the mount takes no new lease
// of the directory: the service grants it (the session holds it already,
// not revoked: given back idle, or for a write lease it was refused), the
// release coming after ends it, and the new copy answers without another
// mount's change (found by the fault suite: a renamed name still found).
func TestReadLeaseNotRetakenWhileReleasing(t *testing.T) {
	t.Parallel()
	_, a, b, d, _, _, k := readLeased(t, 2)
	ctx := testCtx(t)
	_, errno := a.Lookup(ctx, d, "f0") // given to the kernel: dropping it waits
	mustErrno(t, "lookup", errno, 0)
	k.busy.Store(true)
	a.reads.mu.Lock()
	a.reads.dirs[d].used.Store(0)
	a.reads.mu.Unlock()
	a.reads.idle() // given back: its release waits readInvalWait
	waitUntil(t, "a read lease of d again", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 1000)
		return a.reads.count() == 1
	})
	k.busy.Store(false)
	a.reads.wait()
	mustCreate(t, b, d, "new")
	if names := listNames(t, a, d); !names["new"] {
		t.Fatalf("a lists %v after b made new", names)
	}
}

// TestReadLeaseRevokedDuringHandOver: another mount's change revokes a
// read lease while it is being handed to a write lease (the grant held
// up): the release waits for the hand-over, so the names the kernel was
// given from the copy are dropped before that change is applied.
func TestReadLeaseRevokedDuringHandOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ug := &leaseGate{mode: 4, waiting: make(chan struct{})}
	ug.shut()
	t.Cleanup(ug.open) // a failure leaves no call held up
	a := e.mount("a", func(c *Config) { ug.Meta = c.Meta; c.Meta = ug }, nil)
	b := e.mount("b", nil, nil)
	k := &recordingKernel{}
	a.SetInvalidator(k)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	for i := range 3 {
		mustCreate(t, b, d, fmt.Sprint("f", i))
	}
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 1000)
		return a.reads.count() == 1
	})
	_, errno := a.Lookup(ctx, d, "f0") // given to the kernel
	mustErrno(t, "lookup f0", errno, 0)
	k.mu.Lock()
	k.before = func() string {
		r := e.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: d, Name: "g0"}}})
		return fmt.Sprint(r.GetAttr() != nil)
	}
	k.mu.Unlock()
	unlinked := make(chan syscall.Errno, 1)
	go func() { unlinked <- a.Unlink(ctx, d, "f1") }() // hands d over to a write lease
	<-ug.waiting
	renamed := make(chan syscall.Errno, 1)
	go func() { renamed <- b.Rename(ctx, d, "f0", d, "g0", 0) }() // revokes a's read lease
	waitUntil(t, "the service to revoke a's read lease (or b to rename)", 10*time.Second, func() bool {
		r := e.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{Session: a.Session()}}})
		return slices.Contains(r.ReadDirs, d) || k.before() == "true"
	})
	// a hears of it at once (a long poll); its release must wait for the
	// hand-over, and b's rename with it.
	select {
	case errno := <-renamed:
		t.Fatalf("b's rename went through (%v) while a's hand-over was held up", errno)
	case <-time.After(500 * time.Millisecond):
	}
	ug.open()
	mustErrno(t, "a unlinks f1", <-unlinked, 0)
	mustErrno(t, "b renames f0", <-renamed, 0)
	a.reads.wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	j := slices.Index(k.entries, fmt.Sprintf("%d/f0", d))
	if j < 0 || k.seen[j] != "false" {
		t.Fatalf("kernel told %v, seeing b's rename applied %v; want f0 dropped before it", k.entries, k.seen)
	}
}
