// Package lockorder lets a package declare the levels of its lock
// hierarchy and check, in a debug build, that every goroutine takes its
// locks in that order.
//
// # Levels
//
// A Level is a place in the hierarchy: a higher number is lower in the
// hierarchy and is taken later. A goroutine may take a lock of level L
// only if every lock it holds has a level below L or, for a level declared
// ordered, the same level and a key strictly below the new lock's key
// (several directory leases in ascending inode number, say). A lock of an
// unordered level excludes any other lock of that level: one inode at a
// time, so two locks that may be held together need levels of their own
// or an ordered level. A successful TryLock or TryRLock is recorded as
// held, but is never a violation itself: it cannot wait.
//
// A package declares its levels once, leaving gaps for levels added
// between two others, and gives every mutex its level before first use:
//
//	var (
//		levelService = lockorder.Define(0, "FS.svcMu")
//		levelLease   = lockorder.DefineOrdered(10, "dirLease.mu by directory")
//		levelEntries = lockorder.DefineOrdered(20, "dirLease.emu by directory")
//		levelJournal = lockorder.Define(25, "inode.jmu")
//		levelInode   = lockorder.Define(30, "inode.mu")
//		levelLeaf    = lockorder.Define(40, "leaf")
//	)
//
//	type dirLease struct {
//		mu  lockorder.RWMutex
//		emu lockorder.Mutex
//		...
//	}
//
//	func newLease(dir uint64) *dirLease {
//		l := &dirLease{dir: dir}
//		l.mu.InitKey(levelLease, "dirLease.mu", dir)
//		l.emu.InitKey(levelEntries, "dirLease.emu", dir)
//		return l
//	}
//
// A mutex of an ordered level is initialised with InitKey, any other with
// Init (a level never declared counts as unordered); names and keys should
// be constants and fields, since the normal build evaluates the arguments
// and ignores them. Levels are one numbering for the whole program: in the
// checked build, declaring a number twice with another name or ordering
// panics.
//
// Mutex and RWMutex implement sync.Locker, so sync.NewCond(&m) works: the
// unlock and relock inside Cond.Wait are checked like any other, so a
// goroutine that waits on a cond while holding a lock taken after the
// cond's mutex panics when it is woken and takes the mutex back.
//
// # Waiting
//
// Some waits must not happen under some locks even though they take no
// lock of this package: a channel receive from a goroutine that takes the
// lock, a wait on a cond of another mutex, a call over the network. Put
// MayWait(what, maxHeld) before such a wait: it panics if the goroutine
// holds a lock of a level above maxHeld (lower in the hierarchy).
// NoneHeld(what) panics if it holds any lock. Place them before taking the
// cond's own mutex (at the top of the function that may wait), since that
// mutex is held while Cond.Wait is called:
//
//	// wait may hold a lease's mu or emu, or an inode's jmu, never its mu.
//	func (j *journal) wait(seq uint64) {
//		lockorder.MayWait("journal.wait", levelJournal)
//		j.mu.Lock()
//		defer j.mu.Unlock()
//		for j.sent < seq {
//			j.cond.Wait()
//		}
//	}
//
// # Builds
//
// Without the build tag lockcheck, Mutex and RWMutex are a sync.Mutex and
// a sync.RWMutex and each method calls theirs; Init, Define, MayWait and
// NoneHeld do nothing. Nothing is tracked or allocated, and a Lock costs
// what sync.Mutex.Lock costs.
//
// With -tags lockcheck every Lock, RLock, successful TryLock and Unlock is
// recorded in a per-goroutine stack of held locks (found by goroutine id,
// under one global mutex), and a violation panics, before the lock is
// waited for, with a message naming the lock being taken, the held lock
// it conflicts with (names, levels, keys, where it was taken), every lock
// the goroutine holds and the goroutine's stack. Locks may be released in
// any order. A mutex unlocked by a goroutine other than the one that
// locked it is removed from the holder's stack (a read lock from some
// goroutine that read-holds it). A Mutex or RWMutex used without Init or
// InitKey panics with a message saying it has no level, so that a mutex
// left out is found instead of silently unchecked; Init on an ordered
// level, InitKey on an unordered one, and Unlock of a lock that nobody
// holds also panic. The checked build is slow, some microseconds a Lock
// (it reads the goroutine id from runtime.Stack, see goid.go), and every
// lock goes through its one mutex: it is for tests.
//
// Run the checked tests with:
//
//	go test -race -tags lockcheck ./fs/...
package lockorder

// A Level is a place in a lock hierarchy: a lock of a higher level is
// taken after (is lower in the hierarchy than) a lock of a lower one.
// Levels are declared with Define or DefineOrdered.
type Level int
