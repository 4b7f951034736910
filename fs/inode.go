package fs

import (
	"syscall"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// inode is what the mount holds of one file: its last known attributes,
// the data written and not yet committed, and caches for reading.
type inode struct {
	ino uint64
	mu  lockorder.Mutex
	// jmu orders the inode's attribute changes and closes in the journal:
	// held from the decision (under mu) until the record is appended, so
	// that a change decided while the file was open is not journaled
	// after the close that freed it (locking.go, level 2b).
	jmu lockorder.Mutex
	// lazy: handles opened under a write lease and not registered with
	// the service yet (leaseTable.registerOpens; guarded by jmu).
	lazy []*Handle

	attr *metapb.Attr // last answer of the metadata service (nil: unknown)

	// Write state.
	dirty     map[uint64]*buf // unsealed buffers by block
	pending   []*upload       // sealed, not yet committed, in seal order
	last      chan struct{}   // closed when the newest upload is done
	werr      error           // first upload failure since the last write (told to the next writer)
	localSize uint64          // end of the data written through this mount

	// Errors (errseq, as Linux keeps them per file): errs counts the
	// failures of data or changes of this inode (uploads, commits, changes
	// written behind) ever; each descriptor remembers how many it was told
	// of (Handle.seen), and errsSeen is the count as of the last time any
	// descriptor was told, which a new descriptor starts from: a failure
	// nobody heard of yet reaches the next fsync or close, and a success
	// never clears one another descriptor has not heard of.
	errs     uint64
	errsSeen uint64

	// Read caches, valid for attribute version cacheVer.
	cacheVer   uint64
	slices     map[uint64][]*metapb.BlockWrite
	inline     []byte
	haveInline bool
	fetches    map[uint64]*blockFetch // whole committed blocks read (ahead)
	lastRead   int64                  // end of the last read, to spot sequential reads

	// Write-behind: wb is the lease under which the attributes are the
	// mount's (nil: the service's); target is a symlink's made here.
	wb        *dirLease
	made      bool // made here under a lease: no xattrs until settled
	target    string
	hasBlocks bool // data was committed as objects (inline is refused then)

	opens    int       // handles open through this mount
	noCapsAt time.Time // security.capability was absent as of then

	// forgotten: the kernel forgot the inode while its attributes were the
	// mount's own (wb); it stays in the table, its attributes with it,
	// until it is ordinary again (inodeTable.settled).
	forgotten bool
}

// inodeTable is the mount's inodes by number. Its lock is a leaf: held
// for map operations only, and while taking an inode's mu only with
// TryLock (forget, relieve).
type inodeTable struct {
	mu lockorder.Mutex
	m  map[uint64]*inode
}

func newInodeTable() *inodeTable {
	t := &inodeTable{m: map[uint64]*inode{}}
	t.mu.Init(levelInodes, "inodeTable.mu")
	return t
}

// get returns the mount's state of ino, creating it.
func (t *inodeTable) get(ino uint64) *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.m[ino]
	if in == nil {
		in = &inode{ino: ino, dirty: map[uint64]*buf{}}
		in.mu.Init(levelInode, "inode.mu")
		in.jmu.Init(levelJournal, "inode.jmu")
		t.m[ino] = in
	}
	return in
}

// lookup returns the mount's state of ino, or nil.
func (t *inodeTable) lookup(ino uint64) *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[ino]
}

// forgetCaps forgets that ino has no security.capability when name is
// that attribute (it is being set or removed).
func (t *inodeTable) forgetCaps(ino uint64, name string) {
	if name == capsName {
		in := t.get(ino)
		in.mu.Lock()
		in.noCapsAt = time.Time{}
		in.mu.Unlock()
	}
}

// all returns every inode the mount holds now.
func (t *inodeTable) all() []*inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	ins := make([]*inode, 0, len(t.m))
	for _, in := range t.m {
		ins = append(ins, in)
	}
	return ins
}

// forget drops what the mount holds of ino once nothing uses it (the
// kernel forgot it, no handle is open and no data waits for upload).
func (t *inodeTable) forget(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.m[ino]
	if in == nil || !in.mu.TryLock() {
		return
	}
	defer in.mu.Unlock()
	if in.opens == 0 && len(in.dirty) == 0 && len(in.pending) == 0 && in.errs == in.errsSeen {
		if in.wb != nil && in.wb.held.Load() && in.attr != nil && in.attr.Nlink > 0 {
			// The mount's own attributes of a live file under a held
			// lease: dropped, the file would be asked of the service and
			// made ordinary, and every later open and unlink of it would
			// be a commit of its own. (An unlinked one, or one whose lease
			// is ending or was removed with its directory, goes: nothing
			// would settle it again.)
			in.forgotten = true
			return
		}
		delete(t.m, ino)
	}
}

// settled forgets in if the kernel forgot it while it was the mount's own
// and it no longer is (its lease ended, or it was settled). in.mu is not
// held.
func (t *inodeTable) settled(in *inode) {
	in.mu.Lock()
	drop := in.forgotten && in.wb == nil
	if drop {
		in.forgotten = false
	}
	in.mu.Unlock()
	if drop {
		t.forget(in.ino)
	}
}

// failed records a failure of data or of a change of each of inos: the
// descriptors open on them, and the next to open, report EIO at fsync and
// close (errseq).
func (t *inodeTable) failed(inos ...uint64) {
	for _, ino := range inos {
		in := t.getLocked(ino)
		in.errs++
		in.mu.Unlock()
	}
}

// getLocked returns the mount's state of ino, created if need be, with its
// mu held and still in the table: what the caller records there is not
// lost to a forget that dropped the inode between get and Lock (the sender
// records failures on inodes no descriptor holds).
func (t *inodeTable) getLocked(ino uint64) *inode {
	for {
		in := t.get(ino)
		in.mu.Lock()
		if t.lookup(ino) == in {
			return in
		}
		in.mu.Unlock()
	}
}

// remember records attributes the service returned and gives back what the
// mount shows (with locally written size). An inode the mount keeps no
// state of is not added: a walk of a million names would keep a million
// of them (the kernel holds its own), for nothing.
func (t *inodeTable) remember(a *metapb.Attr) *metapb.Attr {
	if a == nil {
		return nil
	}
	in := t.lookup(a.Ino)
	if in == nil {
		return a
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb != nil && in.attr != nil {
		return in.report() // the mount's own: newer than the service's
	}
	in.setAttr(a)
	return in.report()
}

// setAttr records attributes from the metadata service; a new version
// drops the read caches. in.mu is held.
//
// While the attributes are the mount's own (in.wb), the service's answer
// is older than them (changes written behind may wait in the queue) and
// does not replace them: its version does not compare with the mount's.
// Only what a change sent through the service did to the file meanwhile
// is taken in: a data commit that could not go behind (its lease was busy
// or moving) grows the size and the times.
func (in *inode) setAttr(a *metapb.Attr) {
	if a == nil {
		return
	}
	if in.wb != nil && in.attr != nil {
		if a.Size > in.attr.Size || a.Mtime > in.attr.Mtime {
			own := cloneAttr(in.attr)
			own.Size = max(own.Size, a.Size)
			own.Mtime, own.Ctime = max(own.Mtime, a.Mtime), max(own.Ctime, a.Ctime)
			own.Version++
			in.attr = own
			in.invalidate()
			in.cacheVer = own.Version
		}
		return
	}
	if in.attr == nil || a.Version >= in.attr.Version {
		in.attr = a
	}
	if a.Version != in.cacheVer {
		in.invalidate()
		in.cacheVer = a.Version
	}
}

// invalidate drops the read caches. in.mu is held.
func (in *inode) invalidate() {
	in.slices = nil
	in.inline = nil
	in.haveInline = false
	in.fetches = nil
}

// size is the file's size as this mount sees it: committed or written
// here. in.mu is held.
func (in *inode) size() uint64 {
	var s uint64
	if in.attr != nil {
		s = in.attr.Size
	}
	return max(s, in.localSize)
}

// report is the attributes to show: the service's, with the size of
// data written here and not yet committed. in.mu is held.
func (in *inode) report() *metapb.Attr {
	if in.attr == nil {
		return nil
	}
	a := cloneAttr(in.attr)
	a.Size = in.size()
	return a
}

// cloneAttr copies a: every field of metapb.Attr is a number
// (TestCloneAttrCopiesEveryField), and proto.Clone took 3% of the mount's
// CPU in rsync -a.
func cloneAttr(a *metapb.Attr) *metapb.Attr {
	return &metapb.Attr{Ino: a.Ino, Type: a.Type, Mode: a.Mode, Uid: a.Uid, Gid: a.Gid, Nlink: a.Nlink, Size: a.Size,
		Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime, Rdev: a.Rdev, Version: a.Version}
}

// inlineOK reports whether small writes to block 0 may go inline: the
// file is known to be small (a wrong guess only costs a refused attempt).
// in.mu is held.
func (in *inode) inlineOK(inlineMax int) bool {
	return in.attr == nil || in.attr.Size <= uint64(inlineMax)
}

// takeErr reports EIO when ino failed since the descriptor cur was last
// told (cur nil: since any descriptor was), and moves cur up to now
// (fsync). in.mu is held.
func (in *inode) takeErr(cur *uint64) syscall.Errno {
	since := in.errsSeen
	if cur != nil {
		since = *cur
		*cur = in.errs
	}
	in.errsSeen = in.errs
	if in.errs > since {
		return syscall.EIO
	}
	return 0
}

// flushErr is takeErr for a close (FLUSH): it reports the same, but leaves
// the descriptor's cursor where it is. Every copy of a descriptor sends
// FLUSH when it is closed (a forked child's at exec, close-on-exec), so a
// close does not prove that the descriptor's owner was told: its fsync
// still reports the failure. in.mu is held.
func (in *inode) flushErr(cur *uint64) syscall.Errno {
	if cur != nil {
		c := *cur // takeErr moves the copy
		cur = &c
	}
	return in.takeErr(cur)
}
