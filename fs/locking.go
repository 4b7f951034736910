package fs

import "github.com/ecfs/ecfs/fs/internal/lockorder"

// The lock hierarchy of the core. A goroutine takes locks only downward in
// this list, and locks of one level in the order given there; it never
// waits for a lock of a level above one it holds. The levels are declared
// with each mutex (lockorder); a build with -tags lockcheck checks every
// acquisition against them and panics on a violation, and the race tests
// run that build (make test). TestCoreConcurrentTreeOps and the
// components' concurrency tests drive every path from many goroutines
// without FUSE (whose per-directory kernel locks would hide a mistake).
//
//  0. leaseTable.svcMu (read: a change through the service, in
//     lockService; write: acquire, while it leases a directory and loads
//     its entries).
//  1. dirLease.mu (read: an operation written behind in the directory;
//     write: giving the lease up, rmdir of a leased child, or a change made
//     through the service in the directory: lockService), of several
//     leases in ascending directory inode number. view.rmdir finds the
//     child under the parent's lease, lets it go, and locks both in order.
//  2. dirLease.emu (the lease's entries), of several leases in ascending
//     directory inode number (view.rename, view.rmdir).
//  3. inode.jmu, one inode at a time: held across deciding a change of
//     the inode (under its mu) and queueing the change, which may wait for
//     the pipeline's sender (the sender never takes it).
//  4. inode.mu, one inode at a time. inodeTable.mu may be held while
//     taking an inode's mu only with TryLock (forget).
//  5. Leaves, held for a few instructions and never while taking a lock
//     above: inodeTable.mu, leaseTable.lmu and hitsMu, handleTable.mu,
//     view.inoMu (held across one InoAllocOp call, nothing else),
//     pipeline.mu (the sender records failures on inodes before it takes
//     it), Handle.mu, budget.mu, closer.mu, objectCache.mu, placer.mu
//     (held across one Place call), readLeases.mu, prefetched.mu,
//     fetchedBlocks.mu, kernelCache.mu, releaser.mu, packer.mu.
//
// Waiting without a lock: a writer waits for buffer memory without its
// inode's mu; Flush waits for uploads without it; whoever waits for the
// pipeline (apply, behind when the queue is full, drain, waitFor) may hold
// a lease's mu or emu or an inode's jmu (the sender takes none of them),
// but never an inode's mu.

// The levels, as lockorder checks them (leaves apart: none is taken while
// another is held).
var (
	levelService  = lockorder.Define(0, "leaseTable.svcMu")
	levelLease    = lockorder.DefineOrdered(10, "dirLease.mu by directory")
	levelEntries  = lockorder.DefineOrdered(20, "dirLease.emu by directory")
	levelJournal  = lockorder.Define(25, "inode.jmu")
	levelInode    = lockorder.Define(30, "inode.mu")
	levelInodes   = lockorder.Define(40, "inodeTable.mu")
	levelLeases   = lockorder.Define(41, "leaseTable.lmu")
	levelHits     = lockorder.Define(42, "leaseTable.hitsMu")
	levelHandles  = lockorder.Define(43, "handleTable.mu")
	levelInoAlloc = lockorder.Define(44, "view.inoMu")
	levelPipeline = lockorder.Define(45, "pipeline.mu")
	levelHandle   = lockorder.Define(46, "Handle.mu")
	levelBudget   = lockorder.Define(47, "budget.mu")
	levelCloser   = lockorder.Define(48, "closer.mu")
	levelObjects  = lockorder.Define(49, "objectCache.mu")
	levelPlacer   = lockorder.Define(50, "placer.mu")
	levelReads    = lockorder.Define(51, "readLeases.mu")
	levelPrefetch = lockorder.Define(52, "prefetched.mu")
	levelFetched  = lockorder.Define(53, "fetchedBlocks.mu")
	levelKernel   = lockorder.Define(54, "kernelCache.mu")
	levelReleaser = lockorder.Define(55, "releaser.mu")
	levelPacker   = lockorder.Define(56, "packer.mu")
)
