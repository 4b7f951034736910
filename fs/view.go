package fs

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// view is the mount's view of the namespace: the attributes it knows,
// and, in the directories it leases, the names and the attributes it keeps
// as its own, changed here and written behind (wb.go), or recorded after a
// change made through the service (notes.go). It asks the service through
// the pipeline; it holds no lock of its own but inoMu (a leaf around one
// InoAllocOp call) and takes the leases', the inodes' and the journal
// order locks in the order locking.go gives.
type view struct {
	*base
	pipe    *pipeline
	inodes  *inodeTable
	leases  *leaseTable
	reads   *readLeases
	handles *handleTable

	inoMu   lockorder.Mutex
	inoNext uint64 // inode numbers reserved for this mount: [inoNext, inoEnd)
	inoEnd  uint64
}

// change sends a change now, once the read leases' copies of what it
// touches are dropped (readLeases.changing).
func (v *view) change(ctx context.Context, cmd *metapb.Command) (*metapb.Result, syscall.Errno) {
	defer v.reads.changing(cmd)()
	return v.pipe.apply(ctx, cmd)
}

// applyAttr sends a change now that answers attributes and remembers
// them.
func (v *view) applyAttr(ctx context.Context, cmd *metapb.Command) (*metapb.Attr, syscall.Errno) {
	r, errno := v.change(ctx, cmd)
	if errno != 0 {
		return nil, errno
	}
	return v.inodes.remember(r.Attr), 0
}

// getAttr returns the attributes of ino: the mount's own, a read lease's
// copy's, or the service's.
func (v *view) getAttr(ctx context.Context, ino uint64) (*metapb.Attr, syscall.Errno) {
	a, _, errno := v.getAttrKept(ctx, ino)
	return a, errno
}

// getAttrKept is getAttr, and until when the kernel may keep the answer
// (zero: the mount's attribute timeout).
func (v *view) getAttrKept(ctx context.Context, ino uint64) (*metapb.Attr, time.Time, syscall.Errno) {
	if a := v.localAttr(ino); a != nil {
		return a, time.Time{}, 0
	}
	if a, kept := v.reads.getAttr(ino); a != nil {
		return v.inodes.remember(a), kept, 0
	}
	a, errno := attrOf(v.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}}))
	if errno != 0 {
		return nil, time.Time{}, errno
	}
	return v.inodes.remember(a), time.Time{}, 0
}

// lookup finds name in directory parent: in the mount's own entries of a
// directory it write-leases (leased), in a read lease's copy, or at the
// service.
func (v *view) lookup(ctx context.Context, parent uint64, name string) (*metapb.Attr, Kept, syscall.Errno) {
	if len(name) > maxNameLen {
		return nil, Kept{}, syscall.ENAMETOOLONG // not "no such name" from a leased directory's entries
	}
	if a, ino, ok, errno := v.lookupLeased(parent, name); ok {
		if errno != 0 || a != nil {
			return a, Kept{Own: true}, errno
		}
		a, errno = v.getAttr(ctx, ino)
		return a, Kept{Own: true}, errno
	}
	if a, kept, ok := v.reads.lookup(parent, name); ok {
		if a == nil {
			return nil, Kept{}, syscall.ENOENT
		}
		if own := v.localAttr(a.Ino); own != nil {
			return own, Kept{}, 0 // a directory this mount write-leases: its attributes change here
		}
		return v.inodes.remember(a), Kept{Until: kept}, 0
	}
	a, errno := attrOf(v.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: parent, Name: name}}}))
	if errno == 0 || errno == syscall.ENOENT {
		v.reads.noteLookup(parent)
	}
	if errno != 0 {
		return nil, Kept{}, errno
	}
	return v.inodes.remember(a), Kept{}, 0
}

// localAttr returns an eligible inode's attributes (nil if it is not). It
// takes no lease lock (wbLookup calls it holding the directory's, and a
// second read lock of one RWMutex waits behind a waiting writer): a lease
// being given up has held false before the journal is sent and its inodes
// are made ordinary, so nothing here is older than the service's.
func (v *view) localAttr(ino uint64) *metapb.Attr {
	in := v.inodes.lookup(ino)
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb == nil || !in.wb.held.Load() || in.attr == nil {
		return nil
	}
	return in.report()
}

// dirAttr returns the mount's view of directory dir's attributes.
func (v *view) dirAttr(ctx context.Context, dir uint64) (*metapb.Attr, syscall.Errno) {
	in := v.inodes.get(dir)
	in.mu.Lock()
	a := in.attr
	in.mu.Unlock()
	if a != nil {
		return a, 0
	}
	return v.getAttr(ctx, dir)
}

// touchDir records locally that an entry of dir changed (mtime, ctime,
// nlink by dnlink), when dir's attributes are the mount's.
func (v *view) touchDir(dir uint64, now int64, dnlink int) {
	in := v.inodes.lookup(dir)
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb == nil || in.attr == nil {
		return // the service's: GetAttr asks it (dirAttr needs only mode and group)
	}
	in.changeLocal(func(a *metapb.Attr) {
		a.Mtime, a.Ctime = now, now
		a.Nlink = uint32(int(a.Nlink) + dnlink)
	})
}

// changeLocal changes the mount's own attributes of an eligible inode: on a
// copy (dirAttr hands the current one out), with a new version. in.mu is
// held.
func (in *inode) changeLocal(change func(a *metapb.Attr)) {
	a := cloneAttr(in.attr)
	change(a)
	a.Version++
	in.attr = a
}

// journalOrder takes ino's journal-order lock (inode.jmu) if the mount
// knows the inode, and returns its release: an unlink decided now is
// journaled before any change of the inode decided after it, and after any
// decided before (wbSetAttr holds it from its check to its append).
func (v *view) journalOrder(ino uint64) (unlock func()) {
	in := v.inodes.lookup(ino)
	if in == nil {
		return func() {}
	}
	in.jmu.Lock()
	return in.jmu.Unlock
}

// registerOpensOf registers the opens of ino made under a write lease
// (leaseTable.registerOpens) before a change that removes one of its
// names is journaled: it may free the file. ino's jmu is held.
func (v *view) registerOpensOf(ino uint64) {
	if in := v.inodes.lookup(ino); in != nil {
		v.leases.registerOpens(in)
	}
}

// registerVictim does the same before a change through the service that
// may remove name from dir, for the file dir's lease has there. The
// caller holds dir's lease locked (lockService).
func (v *view) registerVictim(dir uint64, name string) {
	l := v.leases.get(dir)
	if l == nil {
		return
	}
	l.emu.Lock()
	e, ok := l.ents[name]
	l.emu.Unlock()
	if ok {
		defer v.journalOrder(e.ino)()
		v.registerOpensOf(e.ino)
	}
}

// unlinked records that ino lost a link.
func (v *view) unlinked(ino uint64, now int64) {
	in := v.inodes.lookup(ino)
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wb == nil || in.attr == nil {
		in.attr = nil
		return
	}
	in.changeLocal(func(a *metapb.Attr) {
		a.Nlink = max(a.Nlink, 1) - 1
		if a.Type == uint32(namespace.TypeDir) {
			a.Nlink = 0 // a removed directory has no link left, as the service has it
		}
		a.Ctime = now
	})
}

// eligibleIno returns the mount's state of ino and the lease under which
// its attributes are the mount's, read-locked (the caller read-unlocks
// it), or a nil lease.
func (v *view) eligibleIno(ino uint64) (*inode, *dirLease) {
	in := v.inodes.lookup(ino)
	if in == nil {
		return nil, nil
	}
	return in, v.leases.eligible(in)
}

// wbSetAttr changes an eligible inode's mode, owner or times (not its
// size).
func (v *view) setAttr(ino uint64, s SetAttrIn) (*metapb.Attr, bool) {
	if s.Valid&namespace.SetSize != 0 || s.Valid&namespace.SetCtime != 0 {
		return nil, false
	}
	in, l := v.eligibleIno(ino)
	if l == nil {
		return nil, false
	}
	defer l.mu.RUnlock()
	in.jmu.Lock() // until the change is journaled: not after a close (Release)
	defer in.jmu.Unlock()
	in.mu.Lock()
	if in.wb != l || in.attr == nil || in.attr.Nlink == 0 && in.opens == 0 {
		// Not the mount's, or gone (unlinked, not open): the service
		// answers (ENOENT for one gone).
		in.mu.Unlock()
		return nil, false
	}
	now := time.Now().UnixNano()
	a := cloneAttr(in.attr)
	valid := s.Valid
	if valid&namespace.SetMode != 0 {
		a.Mode = s.Mode & namespace.PermMask
	}
	if valid&namespace.SetUid != 0 {
		a.Uid = s.Uid
	}
	if valid&namespace.SetGid != 0 {
		a.Gid = s.Gid
	}
	if valid&(namespace.SetUid|namespace.SetGid) != 0 && valid&namespace.SetMode == 0 && a.Type != uint32(namespace.TypeDir) {
		a.Mode &^= syscall.S_ISUID
		if a.Mode&syscall.S_IXGRP != 0 {
			a.Mode &^= syscall.S_ISGID
		}
	}
	switch {
	case valid&namespace.SetAtimeNow != 0:
		a.Atime = now
	case valid&namespace.SetAtime != 0:
		a.Atime = s.Atime
	}
	switch {
	case valid&namespace.SetMtimeNow != 0:
		a.Mtime = now
	case valid&namespace.SetMtime != 0:
		a.Mtime = s.Mtime
	}
	if valid != 0 {
		a.Ctime = now
		a.Version++
	}
	in.attr = a
	out := in.report()
	in.mu.Unlock()
	if valid != 0 {
		v.pipe.behind(l.sess, &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{
			Ino: ino, Valid: s.Valid, Mode: s.Mode, Uid: s.Uid, Gid: s.Gid, Atime: s.Atime, Mtime: s.Mtime}}}, ino)
	}
	return out, true
}

// wbOpen opens an eligible file.
func (v *view) open(ino uint64, flags uint32) (*Handle, bool) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, false
	}
	in, l := v.eligibleIno(ino)
	if l == nil {
		return nil, false
	}
	defer l.mu.RUnlock()
	in.mu.Lock()
	if in.wb != l || in.attr == nil || in.attr.Type != uint32(namespace.TypeFile) {
		in.mu.Unlock()
		return nil, false
	}
	in.opens++
	in.mu.Unlock()
	h := v.handles.newHandle(ino, l.sess)
	h.wb = true
	in.mu.Lock()
	h.seen = in.errsSeen
	in.mu.Unlock()
	// Not registered with the service: nobody else can remove the file's
	// last name while the lease is held, and this mount registers the
	// open before it does so itself, or gives the lease back
	// (registerOpens). A handle closed before that costs no call.
	in.jmu.Lock()
	h.lazy = true
	in.lazy = append(in.lazy, h)
	in.jmu.Unlock()
	return h, true
}

// wbCommit sends a data commit of an eligible file, written under session
// sess, through the journal and records its new size locally. end is the
// end of the data it commits. Data written under another session than the
// lease's is not written behind.
func (v *view) commit(in *inode, sess uint64, cmd *metapb.Command, end uint64, objects bool) bool {
	l := v.leases.eligible(in)
	if l == nil {
		return false
	}
	defer l.mu.RUnlock()
	if l.sess != sess {
		return false
	}
	in.mu.Lock()
	if in.wb != l || in.attr == nil || (!objects && in.hasBlocks) {
		in.mu.Unlock()
		return false
	}
	now := time.Now().UnixNano()
	in.changeLocal(func(a *metapb.Attr) {
		a.Size = max(a.Size, end)
		a.Mtime, a.Ctime = now, now
	})
	in.cacheVer = in.attr.Version
	if objects {
		in.hasBlocks = true
	}
	in.mu.Unlock()
	v.pipe.behind(l.sess, cmd, in.ino)
	return true
}

// settle makes ino an ordinary inode again before an operation the mount
// does not write behind: the journal is applied, and its attributes are
// asked of the service from now on.
func (v *view) settle(ino uint64) {
	in := v.inodes.lookup(ino)
	if in == nil {
		return
	}
	in.mu.Lock()
	wb := in.wb != nil
	in.mu.Unlock()
	if !wb {
		return
	}
	v.pipe.drain()
	in.mu.Lock()
	in.wb, in.attr = nil, nil
	in.mu.Unlock()
	v.inodes.settled(in)
}

// madeHere reports an eligible inode this mount made (it has no xattrs:
// setting one settles it).
func (v *view) madeHere(ino uint64) bool {
	in, l := v.eligibleIno(ino)
	if l == nil {
		return false
	}
	defer l.mu.RUnlock()
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.wb == l && in.made
}

// lockRemoval locks the leases of dirs for a change through the service
// (lockService) that may remove the directory at parent/name, and, if the
// mount leases that directory, its lease too (the change forgets it once
// applied: dropRemoved). Which directory is there is decided under the
// locks, so that no change written behind and no other change through the
// service moves another one there in between; a leased directory found
// there is locked in order by starting over. keep names a directory that is
// not removed even if found there (a rename onto itself).
func (v *view) lockRemoval(ctx context.Context, parent uint64, name string, keep uint64, dirs ...uint64) (unlock func(), victim uint64) {
	for {
		unlock = v.leases.lockService(append(dirs, victim)...)
		now := v.leasedDirAt(ctx, parent, name)
		if now == keep {
			now = 0
		}
		if now == victim {
			return unlock, victim
		}
		unlock()
		victim = now
	}
}

// leasedDirAt returns the directory at parent/name if the mount leases it,
// else 0. The caller holds parent's lease mu if it is leased (lockService):
// its entries are read directly.
func (v *view) leasedDirAt(ctx context.Context, parent uint64, name string) uint64 {
	if v.leases.count() == 0 {
		return 0
	}
	var ino uint64
	if l := v.leases.get(parent); l != nil && l.held.Load() {
		l.emu.Lock()
		e, ok := l.ents[name]
		l.emu.Unlock()
		if !ok || e.typ != namespace.TypeDir {
			return 0
		}
		ino = e.ino
	} else {
		a, errno := attrOf(v.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: parent, Name: name}}}))
		if errno != 0 || a.Type != uint32(namespace.TypeDir) {
			return 0
		}
		ino = a.Ino
	}
	if v.leases.get(ino) == nil {
		return 0
	}
	return ino
}

// listWholeMax is the most entries a listing from a lease has: each open
// directory handle keeps its listing (about 100 bytes an entry); a larger
// directory is listed by the service, page by page.
const listWholeMax = 1 << 16

// listLeased lists dir from its write lease's entries when the mount
// holds it (and its session is sure to last, as for lookupLeased): all of
// them, sorted by name, their cookies numbering this listing (1, 2, ...),
// not the service's. Nothing is asked of the service and nothing waits
// for the journal. Not for more than listWholeMax entries.
func (v *view) listLeased(dir uint64) ([]*metapb.DirEntry, bool) {
	l := v.leases.held(dir)
	if l == nil {
		return nil, false
	}
	defer l.mu.RUnlock()
	if !v.reads.fresh() {
		return nil, false
	}
	l.emu.Lock()
	if len(l.ents) > listWholeMax {
		l.emu.Unlock()
		return nil, false
	}
	out := make([]*metapb.DirEntry, 0, len(l.ents))
	for name, e := range l.ents {
		out = append(out, &metapb.DirEntry{Name: name, Ino: e.ino, Type: uint32(e.typ)})
	}
	l.emu.Unlock()
	slices.SortFunc(out, func(a, b *metapb.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	for i, e := range out {
		e.Cookie = uint64(i) + 1
	}
	return out, true
}

// wbLookup answers a lookup in a leased directory: from the entries, and
// the attributes of an eligible inode from the mount. ino is set when the
// name exists but its attributes must be asked of the service.
//
// Only while the session is sure to last (readLeases.fresh): a mount cut
// off longer may have lost it at the service, and with it the lease,
// while another mount changed the directory. It asks the service then,
// once its own changes there are sent.
func (v *view) lookupLeased(parent uint64, name string) (a *metapb.Attr, ino uint64, handled bool, errno syscall.Errno) {
	l := v.leases.held(parent)
	if l == nil {
		return nil, 0, false, 0
	}
	if !v.reads.fresh() {
		l.mu.RUnlock()
		v.pipe.waitFor(parent)
		return nil, 0, false, 0
	}
	defer l.mu.RUnlock()
	l.emu.Lock()
	e, ok := l.ents[name]
	l.emu.Unlock()
	if !ok {
		if name == "." || name == ".." {
			return nil, 0, false, 0
		}
		return nil, 0, true, syscall.ENOENT
	}
	if a := v.localAttr(e.ino); a != nil {
		return a, 0, true, 0
	}
	return nil, e.ino, true, 0
}
