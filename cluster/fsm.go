package cluster

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ecfs/ecfs/cluster/locks"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// sessionWindow is how many recent results each client session keeps for
// exactly-once retries; a client keeps fewer commands than this in flight.
const sessionWindow = 1024

// FSM is the Raft state machine: the namespace, the members' addresses, the
// exactly-once memory of client sessions and the GC queue. Apply is a thin
// dispatcher; the namespace does the work. It reads no clock: the leader
// stamps each command with its time.
type FSM struct {
	mu          sync.RWMutex
	ns          *namespace.Namespace
	nextIno     uint64
	members     map[string]*metapb.MemberOp
	sessions    map[uint64]*sessionResults
	gc          []uint64
	stores      map[string]*metapb.StoreInfo
	scheme      *metapb.InitOp // nil before init
	nextObj     uint64
	mounts      map[uint64]*mountSession
	nextSession uint64
	locks       *locks.Table
	grants      map[uint64]lockGrant // queued lock requests granted since, by request id
	waiting     map[uint64]uint64    // queued lock requests: request id -> session
	objects     map[uint64]*object
	storeIDs    []string // interned store ids; index 0 means none
	storeIdx    map[string]uint32
	// packs: packed objects with commits still to come (pack.go). State:
	// in snapshots, in their object records.
	packs map[uint64]packWait
	// Derived from the objects and the GC queue, not in snapshots (see
	// healq.go): the heal queue, the queued set, shards per store index.
	heal     map[uint64]struct{}
	gcQueued map[uint64]bool // in gc or gcLater
	onStore  []int64
	// gcLater: objects freed by compaction, to queue for GC at a time
	// (leader's clock, ns). State: in snapshots.
	gcLater map[uint64]int64
	// frag: blocks with many slices, and when they last changed (leader's
	// clock): the compactor's candidates. Soft state: not in snapshots
	// (rebuilt on restore), and the leader drops entries it finds stale.
	frag    map[fragKey]int64
	leases  map[uint64]*dirLease // directory write leases, by directory
	reads   readState            // shared read leases (readlease.go)
	wkids   leaseKids            // the files of write-leased directories (leasekids.go)
	inBatch bool                 // applying a MultiOp written behind
	// applied is the index of the last log entry the state holds (0:
	// unknown). Not state: in snapshots, but not in the digest.
	applied   uint64
	revokedCh chan struct{} // closed at each new revocation (not state: not in snapshots)
	// beforeApply, when a test sets it, runs before each entry is applied
	// (outside the lock): a member that applies slowly. Nil in production.
	beforeApply atomic.Pointer[func()]
}

type sessionResults struct {
	seqs     []uint64 // ascending
	results  map[uint64]*metapb.Result
	lastUsed int64 // the leader's time of the session's last command
}

// maxClientSessions bounds the exactly-once memory: past it, the least
// recently used tenth is forgotten (a client idle that long retries nothing).
const maxClientSessions = 16384

// forgetIdleSessions drops the least recently used client sessions when
// there are too many. Deterministic: it orders by the logged times and ids.
func (f *FSM) forgetIdleSessions() {
	if len(f.sessions) <= maxClientSessions {
		return
	}
	type aged struct {
		id   uint64
		used int64
	}
	all := make([]aged, 0, len(f.sessions))
	for id, s := range f.sessions {
		all = append(all, aged{id, s.lastUsed})
	}
	slices.SortFunc(all, func(a, b aged) int {
		if c := cmp.Compare(a.used, b.used); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	for _, a := range all[:len(all)/10] {
		delete(f.sessions, a.id)
	}
}

// InlineMax is the filesystem's inline data threshold.
func (f *FSM) InlineMax() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ns.Limits().InlineMax
}

// NewFSM returns the state of a new, empty filesystem.
func NewFSM() *FSM {
	return &FSM{
		ns:          namespace.New(0o755, 0, 0, 0),
		nextIno:     namespace.RootIno + 1,
		members:     map[string]*metapb.MemberOp{},
		sessions:    map[uint64]*sessionResults{},
		stores:      map[string]*metapb.StoreInfo{},
		nextObj:     1,
		mounts:      map[uint64]*mountSession{},
		nextSession: 1,
		locks:       locks.New(),
		grants:      map[uint64]lockGrant{},
		waiting:     map[uint64]uint64{},
		objects:     map[uint64]*object{},
		packs:       map[uint64]packWait{},
		storeIDs:    []string{""},
		storeIdx:    map[string]uint32{},
		heal:        map[uint64]struct{}{},
		gcQueued:    map[uint64]bool{},
		gcLater:     map[uint64]int64{},
		frag:        map[fragKey]int64{},
		leases:      map[uint64]*dirLease{},
		reads:       newReadState(),
		wkids:       newLeaseKids(),
	}
}

// Apply applies one log entry: a batch of commands, each whole, in order.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if h := f.beforeApply.Load(); h != nil {
		(*h)()
	}
	var b metapb.Batch
	if err := proto.Unmarshal(l.Data, &b); err != nil {
		// Every replica would fail alike, but state must never diverge
		// silently: stop here.
		panic(fmt.Sprintf("cluster: undecodable log entry %d: %v", l.Index, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = l.Index
	out := make([]*metapb.Result, len(b.Commands))
	for i, c := range b.Commands {
		out[i] = f.applyOnce(c)
	}
	return out
}

// applyOnce applies c unless its (session, seq) was applied before, in
// which case it returns the first result again.
func (f *FSM) applyOnce(c *metapb.Command) *metapb.Result {
	if c.Session == 0 {
		return f.apply(c)
	}
	s := f.sessions[c.Session]
	if s == nil {
		s = &sessionResults{results: map[uint64]*metapb.Result{}}
		f.sessions[c.Session] = s
		defer f.forgetIdleSessions()
	}
	s.lastUsed = max(s.lastUsed, c.Now)
	if r, ok := s.results[c.Seq]; ok {
		return r
	}
	if len(s.seqs) > 0 && c.Seq < s.seqs[0] && len(s.seqs) >= sessionWindow {
		// Older than anything remembered: it was answered long ago.
		return &metapb.Result{Errno: uint32(syscall.ESTALE)}
	}
	r := f.apply(c)
	i, _ := slices.BinarySearch(s.seqs, c.Seq)
	s.seqs = slices.Insert(s.seqs, i, c.Seq)
	s.results[c.Seq] = r
	if len(s.seqs) > sessionWindow {
		delete(s.results, s.seqs[0])
		s.seqs = s.seqs[1:]
	}
	return r
}

func errnoResult(e syscall.Errno) *metapb.Result { return &metapb.Result{Errno: uint32(e)} }

func attrResult(a namespace.Attr, e syscall.Errno) *metapb.Result {
	if e != 0 {
		return errnoResult(e)
	}
	return &metapb.Result{Attr: toPB(a)}
}

// created answers a create that was offered inode number ino (the FSM
// allocates them in log order, so every replica picks the same) and marks
// the number used when the namespace took it (a non-exclusive create of an
// existing file does not). A number preset by the command (reserved by an
// InoAllocOp, below nextIno) leaves nextIno as it is.
func (f *FSM) created(a namespace.Attr, e syscall.Errno, ino uint64) *metapb.Result {
	r := attrResult(a, e)
	if e == 0 && a.Ino == ino {
		if ino == f.nextIno {
			f.nextIno++
		}
		r.Created = true
	}
	return r
}

func (f *FSM) apply(c *metapb.Command) *metapb.Result {
	now := c.Now
	if r := f.precheck(c); r != nil {
		return r
	}
	switch op := c.Op.(type) {
	case *metapb.Command_Create:
		o := op.Create
		if o.Handle != 0 && !f.liveSession(o.Session) {
			return errnoResult(syscall.ESTALE)
		}
		ino, e := f.newIno(o.Ino)
		if e != 0 {
			return errnoResult(e)
		}
		a, e := f.ns.Create(o.Parent, o.Name, namespace.FileType(o.Type), o.Mode, o.Uid, o.Gid, o.Rdev, ino, now, o.Excl)
		r := f.created(a, e, ino)
		if e == 0 && o.Handle != 0 {
			if e := f.ns.Open(a.Ino, o.Handle, o.Session); e != 0 {
				r.Errno = uint32(e) // created, not opened: handle ids are unique, so only a caller's bug gets here
			}
		}
		return r
	case *metapb.Command_Mkdir:
		o := op.Mkdir
		ino, e := f.newIno(o.Ino)
		if e != 0 {
			return errnoResult(e)
		}
		a, e := f.ns.Mkdir(o.Parent, o.Name, o.Mode, o.Uid, o.Gid, ino, now)
		r := f.created(a, e, ino)
		f.grantMkdirLease(c, r)
		return r
	case *metapb.Command_Symlink:
		o := op.Symlink
		ino, e := f.newIno(o.Ino)
		if e != 0 {
			return errnoResult(e)
		}
		a, e := f.ns.Symlink(o.Parent, o.Name, o.Target, o.Uid, o.Gid, ino, now)
		return f.created(a, e, ino)
	case *metapb.Command_Link:
		o := op.Link
		return attrResult(f.ns.Link(o.Ino, o.NewParent, o.NewName, now))
	case *metapb.Command_Unlink:
		o := op.Unlink
		r, e := f.ns.Unlink(o.Parent, o.Name, now)
		if e != 0 {
			return errnoResult(e)
		}
		f.queueGC(r.Objects)
		return &metapb.Result{FreedObjects: r.Objects}
	case *metapb.Command_Rmdir:
		o := op.Rmdir
		dir := f.childDir(o.Parent, o.Name)
		e := f.ns.Rmdir(o.Parent, o.Name, now)
		if e == 0 {
			f.endLease(dir)
			f.dropDirReads(dir)
		}
		return errnoResult(e)
	case *metapb.Command_Rename:
		o := op.Rename
		src, target := f.childDir(o.OldParent, o.OldName), f.childDir(o.NewParent, o.NewName)
		r, e := f.ns.Rename(o.OldParent, o.OldName, o.NewParent, o.NewName, o.Flags, now)
		if e != 0 {
			return errnoResult(e)
		}
		if target != src && o.Flags&namespace.RenameExchange == 0 {
			f.endLease(target) // the empty directory it replaced is gone
			f.dropDirReads(target)
		}
		f.queueGC(r.Objects)
		return &metapb.Result{FreedObjects: r.Objects}
	case *metapb.Command_Setattr:
		o := op.Setattr
		a, freed, e := f.ns.SetAttr(o.Ino, namespace.SetAttrIn{
			Valid: o.Valid, Mode: o.Mode, Uid: o.Uid, Gid: o.Gid, Size: o.Size, Atime: o.Atime, Mtime: o.Mtime,
		}, now)
		f.queueGC(freed)
		r := attrResult(a, e)
		r.FreedObjects = freed
		return r
	case *metapb.Command_Setxattr:
		o := op.Setxattr
		return errnoResult(f.ns.SetXattr(o.Ino, o.Name, o.Value, o.Flags, now))
	case *metapb.Command_Removexattr:
		o := op.Removexattr
		return errnoResult(f.ns.RemoveXattr(o.Ino, o.Name, now))
	case *metapb.Command_Member:
		if op.Member.Remove {
			delete(f.members, op.Member.Id)
		} else {
			f.members[op.Member.Id] = op.Member
		}
		return &metapb.Result{}
	case *metapb.Command_Store:
		return f.applyStore(op.Store, now)
	case *metapb.Command_StoreState:
		return f.applyStoreState(op.StoreState)
	case *metapb.Command_Init:
		if in := op.Init; f.scheme == nil {
			if in.K < 1 || in.M < 1 || in.K+in.M > 256 || in.Scheme == "" {
				return errnoResult(syscall.EINVAL)
			}
			if in.InlineMax != nil {
				if err := f.ns.SetInlineMax(int(*in.InlineMax)); err != nil {
					return errnoResult(syscall.EINVAL)
				}
			}
			f.scheme = in
			f.ns.StampRoot(now) // the root was made at time 0: no clock before this
		}
		return &metapb.Result{}
	case *metapb.Command_SessionOpen:
		return f.applySessionOpen(op.SessionOpen, now)
	case *metapb.Command_Renew:
		return f.applyRenew(op.Renew, now)
	case *metapb.Command_Expire:
		return f.applyExpire(op.Expire.Session, now, false)
	case *metapb.Command_End:
		return f.applyExpire(op.End.Session, now, true)
	case *metapb.Command_Commit:
		return f.applyCommit(op.Commit, now)
	case *metapb.Command_Open:
		return f.applyOpen(op.Open)
	case *metapb.Command_Close:
		return f.applyClose(op.Close)
	case *metapb.Command_Lock:
		return f.applyLock(op.Lock)
	case *metapb.Command_UnlockOwner:
		return f.applyUnlockOwner(op.UnlockOwner)
	case *metapb.Command_CancelWait:
		return f.applyCancelWait(op.CancelWait)
	case *metapb.Command_Inline:
		return f.applyInline(op.Inline, now)
	case *metapb.Command_Report:
		return f.applyReport(op.Report)
	case *metapb.Command_GcQueue:
		var ids []uint64
		for _, id := range op.GcQueue.Objects {
			if _, later := f.gcLater[id]; later {
				delete(f.gcLater, id) // its time has come
				f.gc = append(f.gc, id)
			} else if f.objects[id] != nil {
				ids = append(ids, id)
			}
		}
		f.queueGC(ids)
		return &metapb.Result{}
	case *metapb.Command_Compact:
		return f.applyCompact(op.Compact, now)
	case *metapb.Command_Relocate:
		return f.applyRelocate(op.Relocate)
	case *metapb.Command_GcDone:
		return f.applyGCDone(op.GcDone)
	case *metapb.Command_Alloc:
		n := uint64(max(op.Alloc.Count, 1))
		first := f.nextObj
		f.nextObj += n
		return &metapb.Result{FirstId: first}
	case *metapb.Command_InoAlloc:
		return f.applyInoAlloc(op.InoAlloc)
	case *metapb.Command_Lease:
		return f.applyLease(op.Lease, c.LeaseSession)
	case *metapb.Command_Multi:
		return f.applyMulti(op.Multi, c)
	}
	// An operation this version does not know: refuse it the same way on
	// every replica.
	return errnoResult(syscall.ENOSYS)
}

func toPB(a namespace.Attr) *metapb.Attr {
	return &metapb.Attr{
		Ino: a.Ino, Type: uint32(a.Type), Mode: a.Mode, Uid: a.Uid, Gid: a.Gid, Nlink: a.Nlink, Size: a.Size,
		Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime, Rdev: a.Rdev, Version: a.Version,
	}
}

// Read answers a query from the current state.
func (f *FSM) Read(q *metapb.ReadReq) *metapb.ReadResp {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if r := f.readLeased(q); r != nil {
		return r
	}
	switch op := q.Op.(type) {
	case *metapb.ReadReq_Lookup:
		a, e := f.ns.Lookup(op.Lookup.Parent, op.Lookup.Name)
		return attrResp(a, e)
	case *metapb.ReadReq_Getattr:
		a, e := f.ns.GetAttr(op.Getattr.Ino)
		return attrResp(a, e)
	case *metapb.ReadReq_Readdir:
		l := f.readDir(op.Readdir.Ino, op.Readdir.Cookie, op.Readdir.Max, op.Readdir.Plus)
		if l.Errno != 0 {
			return &metapb.ReadResp{Errno: l.Errno}
		}
		return &metapb.ReadResp{Attr: l.Attr, Entries: l.Entries, Eof: l.Eof}
	case *metapb.ReadReq_Readdirs:
		return f.readDirs(op.Readdirs, q.LeaseSession)
	case *metapb.ReadReq_Readlink:
		t, e := f.ns.Readlink(op.Readlink.Ino)
		return &metapb.ReadResp{Errno: uint32(e), Target: t}
	case *metapb.ReadReq_Getxattr:
		v, e := f.ns.GetXattr(op.Getxattr.Ino, op.Getxattr.Name)
		return &metapb.ReadResp{Errno: uint32(e), Value: v}
	case *metapb.ReadReq_Getlk:
		return f.readGetLk(op.Getlk)
	case *metapb.ReadReq_LockWait:
		return f.readLockWait(op.LockWait)
	case *metapb.ReadReq_Statfs:
		return f.readStatfs()
	case *metapb.ReadReq_Slices:
		return f.readSlices(op.Slices)
	case *metapb.ReadReq_Objects:
		return f.readObjects(op.Objects)
	case *metapb.ReadReq_Listxattr:
		n, e := f.ns.ListXattr(op.Listxattr.Ino)
		return &metapb.ReadResp{Errno: uint32(e), Names: n}
	case *metapb.ReadReq_Revokes:
		return f.readRevokes(op.Revokes)
	}
	return &metapb.ReadResp{Errno: uint32(syscall.ENOSYS)}
}

// readDir lists up to max (at most 4096; 0: 4096) of dir's entries
// after cookie; plus: with their attributes and the directory's own.
func (f *FSM) readDir(dir, cookie uint64, max uint32, plus bool) *metapb.Listing {
	if max == 0 || max > 4096 {
		max = 4096
	}
	ents, e := f.ns.ReadDir(dir, cookie, int(max))
	if e != 0 {
		return &metapb.Listing{Ino: dir, Errno: uint32(e)}
	}
	l := &metapb.Listing{Ino: dir, Entries: make([]*metapb.DirEntry, len(ents)), Eof: len(ents) < int(max)}
	if plus {
		a, _ := f.ns.GetAttr(dir)
		l.Attr = toPB(a)
	}
	for i, d := range ents {
		l.Entries[i] = &metapb.DirEntry{Name: d.Name, Ino: d.Ino, Type: uint32(d.Type), Cookie: d.Cookie}
		if plus {
			if a, e := f.ns.GetAttr(d.Ino); e == 0 {
				l.Entries[i].Attr = toPB(a)
			}
		}
	}
	return l
}

func attrResp(a namespace.Attr, e syscall.Errno) *metapb.ReadResp {
	if e != 0 {
		return &metapb.ReadResp{Errno: uint32(e)}
	}
	return &metapb.ReadResp{Attr: toPB(a)}
}

// MemberAPI is the API address a member announced ("" if none).
func (f *FSM) MemberAPI(id string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if m := f.members[id]; m != nil {
		return m.ApiAddr
	}
	return ""
}

// Inodes counts the inodes.
func (f *FSM) Inodes() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, _ := f.ns.Counts()
	return n
}

// Digest identifies the whole state: equal on replicas that applied the
// same log.
func (f *FSM) Digest() ([32]byte, error) {
	_, d, err := f.AppliedDigest()
	return d, err
}

// AppliedDigest is Digest with the index of the last log entry the state
// it digests holds (0 if unknown), read together: comparing replicas by
// raft's applied index instead would compare states that are not yet, or
// no longer, at that index (raft counts an entry applied once it hands it
// to the state machine, and more may be applied meanwhile).
func (f *FSM) AppliedDigest() (uint64, [32]byte, error) {
	snap, at, err := f.encode(false)
	if err != nil {
		return 0, [32]byte{}, err
	}
	return at, sha256.Sum256(snap), nil
}

// Snapshot encodes the state (Apply waits meanwhile); Persist writes it.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	b, _, err := f.encode(true)
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

const snapshotMagic = "ECFSFSM1"

// encode encodes the state and returns the index of the last log entry
// it holds; with applied, a snapshot, the encoding records that index too.
func (f *FSM) encode(applied bool) ([]byte, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := &metapb.FSMHeader{NextIno: f.nextIno, GcQueue: f.gc, Scheme: f.scheme, NextObject: f.nextObj,
		MountSessions: f.encodeMounts(), NextSession: f.nextSession, LockGrants: f.encodeGrants(),
		Objects: f.encodeObjects(), Leases: append(f.encodeLeases(), f.encodeReads()...)}
	if applied {
		h.Applied = f.applied
	}
	for _, id := range slices.Sorted(maps.Keys(f.gcLater)) {
		h.GcLaterIds, h.GcLaterAt = append(h.GcLaterIds, id), append(h.GcLaterAt, f.gcLater[id])
	}
	for _, id := range slices.Sorted(maps.Keys(f.stores)) {
		h.Stores = append(h.Stores, f.stores[id])
	}
	for _, id := range slices.Sorted(maps.Keys(f.members)) {
		h.Members = append(h.Members, f.members[id])
	}
	for _, id := range slices.Sorted(maps.Keys(f.sessions)) {
		s := f.sessions[id]
		sr := &metapb.SessionResults{Session: id, Seqs: s.seqs, LastUsed: s.lastUsed}
		for _, q := range s.seqs {
			sr.Results = append(sr.Results, s.results[q])
		}
		h.Sessions = append(h.Sessions, sr)
	}
	hb, err := proto.MarshalOptions{Deterministic: true}.Marshal(h)
	if err != nil {
		return nil, 0, err
	}
	var buf writeBuffer
	buf.b = append(buf.b, snapshotMagic...)
	buf.b = binary.AppendUvarint(buf.b, uint64(len(hb)))
	buf.b = append(buf.b, hb...)
	for _, w := range []io.WriterTo{f.ns, f.locks} {
		var sec writeBuffer
		if _, err := w.WriteTo(&sec); err != nil {
			return nil, 0, err
		}
		buf.b = binary.AppendUvarint(buf.b, uint64(len(sec.b)))
		buf.b = append(buf.b, sec.b...)
	}
	return buf.b, f.applied, nil
}

type writeBuffer struct{ b []byte }

func (w *writeBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := bufio.NewReader(rc)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapshotMagic {
		return errors.New("cluster: not an ecfs snapshot")
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<30 {
		return fmt.Errorf("cluster: corrupt snapshot header length: %v", err)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(r, hb); err != nil {
		return fmt.Errorf("cluster: truncated snapshot: %w", err)
	}
	var h metapb.FSMHeader
	if err := proto.Unmarshal(hb, &h); err != nil {
		return fmt.Errorf("cluster: corrupt snapshot header: %w", err)
	}
	section := func() (io.Reader, error) {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > 1<<40 {
			return nil, fmt.Errorf("cluster: corrupt snapshot section length: %v", err)
		}
		return io.LimitReader(r, int64(n)), nil
	}
	nsr, err := section()
	if err != nil {
		return err
	}
	ns, err := namespace.Read(nsr)
	if err != nil {
		return fmt.Errorf("cluster: corrupt snapshot namespace: %w", err)
	}
	lr, err := section()
	if err != nil {
		return err
	}
	lt, err := locks.ReadTable(lr)
	if err != nil {
		return fmt.Errorf("cluster: corrupt snapshot locks: %w", err)
	}
	members := map[string]*metapb.MemberOp{}
	for _, m := range h.Members {
		members[m.Id] = m
	}
	sessions := map[uint64]*sessionResults{}
	for _, s := range h.Sessions {
		if len(s.Seqs) != len(s.Results) {
			return errors.New("cluster: corrupt snapshot: session results")
		}
		sr := &sessionResults{seqs: s.Seqs, results: map[uint64]*metapb.Result{}, lastUsed: s.LastUsed}
		for i, q := range s.Seqs {
			sr.results[q] = s.Results[i]
		}
		sessions[s.Session] = sr
	}
	stores := map[string]*metapb.StoreInfo{}
	for _, s := range h.Stores {
		stores[s.Id] = s
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ns, f.nextIno, f.members, f.sessions, f.gc = ns, h.NextIno, members, sessions, h.GcQueue
	f.stores, f.scheme, f.nextObj = stores, h.Scheme, h.NextObject
	f.applied = h.Applied
	f.mounts, f.nextSession = decodeMounts(h.MountSessions), max(h.NextSession, 1)
	f.locks = lt
	f.grants, f.waiting = decodeGrants(h.LockGrants)
	f.objects, f.storeIDs, f.storeIdx = map[uint64]*object{}, []string{""}, map[string]uint32{}
	f.recordObjects(h.Objects)
	f.packs = decodePacks(h.Objects)
	f.gcLater = map[uint64]int64{}
	for i, id := range h.GcLaterIds {
		if i < len(h.GcLaterAt) {
			f.gcLater[id] = h.GcLaterAt[i]
		}
	}
	f.rebuildDerived()
	f.leases = decodeLeases(h.Leases)
	f.decodeKids(h.Leases)
	f.decodeReads(h.Leases)
	f.notifyRevoked() // revocations may be among what was restored
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}
