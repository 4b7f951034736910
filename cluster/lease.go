package cluster

import (
	"maps"
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Directory write leases (see metapb.LeaseOp): a directory leased to a mount
// session is that session's alone to change and to read; any other
// command or query touching it is refused with EAGAIN and Leased, and the
// lease is marked revoked so the holder, which polls RevokesReq, hands its
// changes back and releases it. A lease ends with its session or its
// directory.

// Lease modes of metapb.LeaseOp.
const (
	leaseAcquire = 1
	leaseRelease = 2
	leaseRevoke  = 3
	leaseTry     = 4 // acquire only if nobody else holds it; revoke nothing
	leaseRead    = 5 // a shared read lease (readlease.go)
	leaseUnread  = 6 // release a read lease
	leaseUpgrade = 7 // turn the session's read lease into the write lease
)

// maxInoAlloc bounds one InoAllocOp.
const maxInoAlloc = 65536

type dirLease struct {
	session uint64
	revoked bool
	// kidOnly: revoked only for a read lease of the parent (grantRead),
	// nothing that went into it. Not kept in snapshots.
	kidOnly bool
}

func leasedResult() *metapb.Result {
	return &metapb.Result{Errno: uint32(syscall.EAGAIN), Leased: true}
}

// conflict reports whether dir is leased to a live session other than ls,
// and if so marks the lease revoked. A lease whose session is gone is
// dropped on the way.
func (f *FSM) conflict(dir, ls uint64) bool {
	l := f.leases[dir]
	if l == nil || l.session == ls {
		return false
	}
	if !f.liveSession(l.session) {
		f.endLease(dir)
		return false
	}
	if !l.revoked {
		l.revoked = true
		f.notifyRevoked()
	}
	l.kidOnly = false
	return true
}

// notifyRevoked wakes the long polls of RevokesReq. f.mu is held (write).
func (f *FSM) notifyRevoked() {
	if f.revokedCh != nil {
		close(f.revokedCh)
	}
	f.revokedCh = make(chan struct{})
}

// RevokeWatch returns a channel closed at the next revocation.
func (f *FSM) RevokeWatch() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revokedCh == nil {
		f.revokedCh = make(chan struct{})
	}
	return f.revokedCh
}

// leasedToOther reports, without changing anything (queries hold only the
// read lock), whether ino is leased to a live session other than ls.
func (f *FSM) leasedToOther(ino, ls uint64) bool {
	l := f.leases[ino]
	return l != nil && l.session != ls && f.liveSession(l.session)
}

// childIno is the inode named name in parent (0 if none, or for "." and
// "..", which name no child).
func (f *FSM) childIno(parent uint64, name string) (uint64, namespace.FileType) {
	if name == "." || name == ".." {
		return 0, 0
	}
	a, e := f.ns.Lookup(parent, name)
	if e != 0 {
		return 0, 0
	}
	return a.Ino, a.Type
}

// childDir is the directory named name in parent, or 0.
func (f *FSM) childDir(parent uint64, name string) uint64 {
	if ino, t := f.childIno(parent, name); t == namespace.TypeDir {
		return ino
	}
	return 0
}

// touchedDirs lists the directories (or, for attribute changes, the inode)
// a namespace mutation changes, whose leases it must respect. Other
// commands touch none.
func (f *FSM) touchedDirs(c *metapb.Command) []uint64 {
	switch op := c.Op.(type) {
	case *metapb.Command_Create:
		return []uint64{op.Create.Parent}
	case *metapb.Command_Mkdir:
		return []uint64{op.Mkdir.Parent}
	case *metapb.Command_Symlink:
		return []uint64{op.Symlink.Parent}
	case *metapb.Command_Link:
		return []uint64{op.Link.NewParent}
	case *metapb.Command_Unlink:
		return []uint64{op.Unlink.Parent}
	case *metapb.Command_Rmdir:
		o := op.Rmdir
		return []uint64{o.Parent, f.childDir(o.Parent, o.Name)}
	case *metapb.Command_Rename:
		o := op.Rename
		return []uint64{o.OldParent, o.NewParent, f.childDir(o.OldParent, o.OldName), f.childDir(o.NewParent, o.NewName)}
	case *metapb.Command_Setattr:
		return []uint64{op.Setattr.Ino}
	case *metapb.Command_Setxattr:
		return []uint64{op.Setxattr.Ino}
	case *metapb.Command_Removexattr:
		return []uint64{op.Removexattr.Ino}
	}
	return nil
}

// precheck refuses, before it does anything, a command that touches a
// directory leased to another live session (every such lease is marked
// revoked, so all their holders hear of it at once), or a leasing mkdir
// from no live session. nil: go ahead.
func (f *FSM) precheck(c *metapb.Command) *metapb.Result {
	if m := c.GetMkdir(); m != nil && m.Lease && !f.liveSession(c.LeaseSession) {
		return errnoResult(syscall.ESTALE)
	}
	if len(f.leases) == 0 && len(f.reads.readers) == 0 {
		return nil
	}
	refused := false
	dirs := f.touchedDirs(c)
	for _, d := range dirs {
		if d != 0 && f.conflict(d, c.LeaseSession) {
			refused = true
		}
	}
	if len(f.wkids.childOf) > 0 || len(f.reads.readers) > 0 {
		// The directories and the inodes whose attributes it changes.
		touched := append(slices.Clip(dirs), f.touchedInodes(c)...)
		if len(f.wkids.childOf) > 0 && f.kidConflict(append(slices.Clip(touched), openedIno(c)), c.LeaseSession) {
			refused = true
		}
		if len(f.reads.readers) > 0 && f.readConflict(touched, c.LeaseSession, f.inBatch) {
			refused = true
		}
	}
	if refused {
		return leasedResult()
	}
	return nil
}

// newIno is the inode number a create offers the namespace: the preset
// one, which must have been reserved by an InoAllocOp (below nextIno; the
// namespace refuses one in use), or else the next one.
func (f *FSM) newIno(preset uint64) (uint64, syscall.Errno) {
	if preset == 0 {
		return f.nextIno, 0
	}
	if preset >= f.nextIno {
		return 0, syscall.EINVAL
	}
	return preset, 0
}

// grantMkdirLease leases a directory just made by a leasing mkdir to the
// command's session (checked live by precheck).
func (f *FSM) grantMkdirLease(c *metapb.Command, r *metapb.Result) {
	if m := c.GetMkdir(); m != nil && m.Lease && r.Errno == 0 && r.Attr != nil {
		f.leases[r.Attr.Ino] = &dirLease{session: c.LeaseSession}
	}
}

// dropSessionLeases ends the leases of a session that ended.
func (f *FSM) dropSessionLeases(session uint64) {
	for d, l := range f.leases {
		if l.session == session {
			f.endLease(d)
		}
	}
}

func (f *FSM) applyInoAlloc(op *metapb.InoAllocOp) *metapb.Result {
	n := uint64(min(max(op.Count, 1), maxInoAlloc))
	first := f.nextIno
	f.nextIno += n
	return &metapb.Result{FirstId: first}
}

// leasable refuses a lease of op.Dir for op.Session unless the session
// is live and op.Dir a directory (nil: go on).
func (f *FSM) leasable(op *metapb.LeaseOp) *metapb.Result {
	if !f.liveSession(op.Session) {
		return errnoResult(syscall.ESTALE)
	}
	a, e := f.ns.GetAttr(op.Dir)
	if e != 0 {
		return errnoResult(e)
	}
	if a.Type != namespace.TypeDir {
		return errnoResult(syscall.ENOTDIR)
	}
	return nil
}

func (f *FSM) applyLease(op *metapb.LeaseOp, ls uint64) *metapb.Result {
	switch op.Mode {
	case leaseAcquire, leaseTry:
		if r := f.leasable(op); r != nil {
			return r
		}
		if l := f.leases[op.Dir]; op.Mode == leaseTry && l != nil && l.session != op.Session && f.liveSession(l.session) {
			return leasedResult() // held by another mount, which keeps it
		}
		if f.conflict(op.Dir, op.Session) {
			return leasedResult()
		}
		// Readers of it, or of its parent (which cache its attributes):
		// try leaves them be, acquire revokes them.
		if f.readersInWay(op.Dir, op.Session, op.Mode == leaseAcquire) {
			return leasedResult()
		}
		if f.leases[op.Dir] == nil {
			f.leases[op.Dir] = &dirLease{session: op.Session}
			f.indexKids(op.Dir)
		}
		// The directory's attributes as of the grant: a holder taking a
		// read lease's copy as its view checks its version against them.
		if a, e := f.ns.GetAttr(op.Dir); e == 0 {
			return &metapb.Result{Attr: toPB(a)}
		}
		return &metapb.Result{}
	case leaseUpgrade:
		return f.upgradeRead(op)
	case leaseRelease:
		if l := f.leases[op.Dir]; l != nil && l.session == op.Session {
			f.endLease(op.Dir)
		}
		return &metapb.Result{}
	case leaseRead:
		return f.grantRead(op)
	case leaseUnread:
		f.dropRead(op.Dir, op.Session)
		return &metapb.Result{}
	case leaseRevoke:
		// The directory, or a file of directories leased to others.
		if c, k := f.conflict(op.Dir, ls), f.kidConflict([]uint64{op.Dir}, ls); c || k {
			return leasedResult()
		}
		return &metapb.Result{}
	}
	return errnoResult(syscall.EINVAL)
}

// applyMulti applies a batch's commands in order, each whole and with its
// own result, under the outer command's time and lease session. The outer
// command's session and seq make the whole batch exactly-once.
func (f *FSM) applyMulti(op *metapb.MultiOp, c *metapb.Command) *metapb.Result {
	r := &metapb.Result{Results: make([]*metapb.Result, len(op.Commands))}
	if c.LeaseSession != 0 && !f.liveSession(c.LeaseSession) {
		// Written behind under leases that ended with their session: the
		// mount's view of those directories is stale, so none of it applies.
		for i := range r.Results {
			r.Results[i] = errnoResult(syscall.ESTALE)
		}
		return r
	}
	f.inBatch = true
	defer func() { f.inBatch = false }()
	for i, in := range op.Commands {
		if in.GetMulti() != nil {
			r.Results[i] = errnoResult(syscall.EINVAL)
			continue
		}
		in.Now = c.Now
		if in.LeaseSession == 0 {
			in.LeaseSession = c.LeaseSession
		}
		ir := f.apply(in)
		r.FreedObjects = append(r.FreedObjects, ir.FreedObjects...)
		if op.ErrorsOnly {
			ir = &metapb.Result{Errno: ir.Errno, Leased: ir.Leased}
		}
		r.Results[i] = ir
	}
	return r
}

func (f *FSM) readRevokes(q *metapb.RevokesReq) *metapb.ReadResp {
	r := &metapb.ReadResp{}
	for d, l := range f.leases {
		if l.session == q.Session && l.revoked {
			r.Dirs = append(r.Dirs, d)
			if l.kidOnly {
				r.KidDirs = append(r.KidDirs, d)
			}
		}
	}
	slices.Sort(r.Dirs)
	slices.Sort(r.KidDirs)
	r.ReadDirs = f.revokedReads(q.Session)
	return r
}

// readLeased refuses a query of an inode leased to another live session.
func (f *FSM) readLeased(q *metapb.ReadReq) *metapb.ReadResp {
	if len(f.leases) == 0 {
		return nil
	}
	var ino uint64
	switch op := q.Op.(type) {
	case *metapb.ReadReq_Lookup:
		ino = op.Lookup.Parent
	case *metapb.ReadReq_Getattr:
		ino = op.Getattr.Ino
	case *metapb.ReadReq_Readdir:
		ino = op.Readdir.Ino
	case *metapb.ReadReq_Getxattr:
		ino = op.Getxattr.Ino
	case *metapb.ReadReq_Listxattr:
		ino = op.Listxattr.Ino
	default:
		return nil
	}
	if f.queryRefused(ino, q.LeaseSession) {
		return &metapb.ReadResp{Errno: uint32(syscall.EAGAIN), Leased: true}
	}
	return nil
}

// queryRefused reports whether a query of ino by session sess is refused:
// ino, or one of its child directories, is leased to another live
// session.
func (f *FSM) queryRefused(ino, sess uint64) bool {
	return len(f.leases) > 0 && (f.leasedToOther(ino, sess) || f.kidLeasedToOther(ino, sess))
}

func (f *FSM) encodeLeases() []*metapb.DirLease {
	out := make([]*metapb.DirLease, 0, len(f.leases))
	for _, d := range slices.Sorted(maps.Keys(f.leases)) {
		l := f.leases[d]
		out = append(out, &metapb.DirLease{Dir: d, Session: l.session, Revoked: l.revoked, Kids: f.wkids.kids[d], KidsListed: true})
	}
	return out
}

func decodeLeases(in []*metapb.DirLease) map[uint64]*dirLease {
	out := make(map[uint64]*dirLease, len(in))
	for _, l := range in {
		if l.Read {
			continue // decodeReads
		}
		out[l.Dir] = &dirLease{session: l.Session, revoked: l.Revoked}
	}
	return out
}
