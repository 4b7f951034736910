package fs

// The lock hierarchy of the core. A goroutine takes locks only downward in
// this list, and locks of one level in the order given there; it never
// waits for a lock of a level above one it holds. TestCoreConcurrentTreeOps
// drives every path from many goroutines under -race without FUSE (whose
// per-directory kernel locks would hide a mistake).
//
//  0. FS.svcMu (read: a change through the service, in lockService;
//     write: acquire, while it leases a directory and loads its entries).
//  1. dirLease.mu (read: an operation written behind in the directory;
//     write: giving the lease up, rmdir of a leased child, or a change made
//     through the service in the directory: lockService), of several
//     leases in ascending directory inode number. wbRmdir finds the child
//     under the parent's lease, lets it go, and locks both in order.
//  2. dirLease.emu (the lease's entries), of several leases in ascending
//     directory inode number (wbRename, wbRmdir).
//  2b. inode.jmu, one inode at a time: held across deciding a change of
//     the inode (under its mu) and appending the change to the journal,
//     which may wait for the sender (the sender never takes it).
//  3. inode.mu, one inode at a time. FS.mu may be held while taking an
//     inode's mu only with TryLock (relieve, Forget).
//  4. Leaves, held for a few instructions and never while taking a lock
//     above: FS.mu, FS.lmu, FS.hmu, FS.hitsMu, FS.inoMu (held across one
//     InoAllocOp call, nothing else), journal.mu (the sender records
//     failures on inodes before it takes it), Handle.mu, the buffer
//     budget, closer.mu, objectCache.
//
// Waiting without a lock: a writer waits for buffer memory without its
// inode's mu; Flush waits for uploads without it; the journal's waiters
// (drain, waitFor) may hold a lease's mu or emu (the sender takes neither),
// but never an inode's mu.
