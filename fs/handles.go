package fs

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Handle is an open file: registered with the metadata service, so the
// file's data outlives its last name until the handle is released.
type Handle struct {
	Ino uint64
	id  uint64
	wb  bool // registered through the journal: closed through it too
	// lazy: opened under a write lease and not registered yet (guarded by
	// the inode's jmu): its close sends nothing.
	lazy bool

	// seen is how many failures of the file this descriptor was told of
	// (errseq; guarded by the inode's mu).
	seen uint64
	// fenced: the descriptor was open when the session expired while a
	// lock was held through one of the mount's descriptors (the lock may
	// be another mount's now; handleTable.fence): it writes nothing more,
	// and its fsync and close report EIO.
	fenced atomic.Bool
	// lostLock: fenced while it held a lock (handleTable.holders).
	lostLock atomic.Bool
	// writes counts the writes through the descriptor; flushed is one more
	// than it was when the last flush began (0: never flushed): Release
	// need not flush (nor take the failures for itself) what a FLUSH
	// already did.
	writes, flushed atomic.Uint64

	mu     lockorder.Mutex
	owners map[lockOwner]bool // lock owners that locked through this handle
}

type lockOwner struct {
	kind  uint32
	owner uint64
}

// told is what the descriptor's fsync or close reports: errno, or EIO if
// it is fenced.
func (h *Handle) told(errno syscall.Errno) syscall.Errno {
	if h.fenced.Load() {
		return syscall.EIO
	}
	return errno
}

// handleTable is the descriptors open through the mount: it numbers them,
// fences them when the session is lost, registers them again under a new
// one, and sends the closes of released ones in batches (closer). Its lock
// is a leaf.
type handleTable struct {
	*base
	pipe    *pipeline
	counter atomic.Uint64
	// holders: descriptors that held a lock when the session was lost,
	// still open. Until they are all closed, new descriptors are fenced
	// too: a holder that lost its lock may open another one for its
	// critical section (after the mount found its session lost, a write
	// the kernel queued while it was frozen may be such an open).
	holders atomic.Int32

	mu     lockorder.Mutex
	opened map[*Handle]struct{}

	closer closer
}

// count is how many files are open.
func (t *handleTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.opened)
}

func newHandleTable(b *base, pipe *pipeline) *handleTable {
	t := &handleTable{base: b, pipe: pipe, opened: map[*Handle]struct{}{}}
	t.mu.Init(levelHandles, "handleTable.mu")
	t.closer = closer{pipe: pipe, log: b.log, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	t.closer.mu.Init(levelCloser, "closer.mu")
	return t
}

// newHandle makes a handle id unique across the cluster: the session in the
// top bits, a counter below.
func (t *handleTable) newHandle(ino, session uint64) *Handle {
	h := &Handle{Ino: ino, id: session<<40 | t.counter.Add(1)&(1<<40-1)}
	h.mu.Init(levelHandle, "Handle.mu")
	if t.holders.Load() > 0 {
		h.fenced.Store(true)
	}
	return h
}

func (t *handleTable) track(h *Handle) {
	t.mu.Lock()
	t.opened[h] = struct{}{}
	t.mu.Unlock()
}

func (t *handleTable) untrack(h *Handle) {
	t.mu.Lock()
	delete(t.opened, h)
	t.mu.Unlock()
	if h.lostLock.CompareAndSwap(true, false) && t.holders.Add(-1) == 0 {
		t.log.Warn("the descriptors that held locks when the session was lost are closed: new descriptors write again")
	}
}

// open is the descriptors open now.
func (t *handleTable) open() []*Handle {
	t.mu.Lock()
	defer t.mu.Unlock()
	hs := make([]*Handle, 0, len(t.opened))
	for h := range t.opened {
		hs = append(hs, h)
	}
	return hs
}

// fence marks the open descriptors fenced when one of them took a lock:
// the session is about to be replaced, and its locks may be another
// mount's by now. All of them, not only those that locked, and those
// opened until the ones that locked are closed (holders): a lock holder
// writes through other descriptors too (a lock file beside the data, as
// the fault suite's holders do), and the mount cannot tell which process
// writes inside which critical section. A write or an open the kernel
// queued while the mount was frozen reaches it after the session was found
// expired; it is refused rather than committed under the new session.
// Called before the new session is stored, so that a write either sees
// the fence or is buffered under the old session (whose commit the
// service refuses).
func (t *handleTable) fence() {
	hs := t.open()
	var holders []*Handle
	for _, h := range hs {
		h.mu.Lock()
		if len(h.owners) > 0 {
			holders = append(holders, h)
		}
		h.mu.Unlock()
	}
	if len(holders) == 0 {
		return
	}
	for _, h := range holders {
		if !h.lostLock.Swap(true) {
			t.holders.Add(1)
		}
	}
	for _, h := range hs {
		h.fenced.Store(true)
	}
	t.log.Error("the mount's session expired while files were locked here: every descriptor open now, and every one opened until those that held locks are closed, reports EIO", "descriptors", len(hs), "holders", len(holders))
}

// reopen registers every open handle again under session sess (the old
// one expired: the service forgot them). A file freed meanwhile (unlinked
// by another mount while no registration kept it) is said in the log.
func (t *handleTable) reopen(ctx context.Context, sess uint64) {
	hs := t.open()
	for _, h := range hs {
		id := t.newHandle(h.Ino, sess).id
		_, errno := t.pipe.apply(ctx, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: sess, Ino: h.Ino, Handle: id}}})
		if errno != 0 {
			t.log.Error("a file open here was freed while the mount's session was gone: its reads fail", "ino", h.Ino, "errno", errno.Error())
			continue
		}
		h.mu.Lock()
		h.id, h.wb = id, false
		h.mu.Unlock()
		t.mu.Lock()
		_, still := t.opened[h]
		t.mu.Unlock()
		if !still {
			t.closer.add(id) // released meanwhile
		}
	}
	if len(hs) > 0 {
		t.log.Warn("open files registered again under the new session", "files", len(hs), "session", sess)
	}
}
