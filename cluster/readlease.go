package cluster

import (
	"maps"
	"slices"
	"syscall"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Shared read leases (metapb.LeaseOp modes 5 and 6).
//
// A mount that holds a read lease on a directory serves its entries, its
// attributes and its children's from its own cache, and lets the kernel
// cache them too. Every command of another session that would change any
// of that is refused (EAGAIN, leased) until every such lease is released:
// the FSM marks them revoked, their holders hear it through RevokesReq,
// invalidate their caches and the kernel's, and release; the refused
// command is retried by its sender. So a change is applied only once no
// other mount can still serve what it changes.
//
// Which read leases a change must wait for: those on the directories it
// touches (touchedDirs) and on the inodes whose attributes it changes
// (touchedInodes), and those on the directories listing any of them as a
// child (childOf: built from a directory's entries when its first read
// lease is granted; they cannot change while it has one).
//
// A change written behind under a write lease (a MultiOp batch) is never
// refused for a read lease: it would fail the batch. The read leases it
// conflicts with are broken instead (dropped at once and reported as
// revoked). That happens only in corners the grant rules leave: a read
// lease is not granted on a directory while another session holds the
// write lease of it or of a child directory, and a write lease is not
// granted (mode 4) while another session holds a read lease of the
// directory or of its parent.

// readLease is one session's read lease of a directory.
type readLease struct {
	revoked bool
}

// readState is the FSM's read leases: by directory and session, the
// children each leased directory listed at its first grant, the reverse
// of that, and read leases broken by batches that their holders have not
// yet acknowledged (released).
type readState struct {
	readers map[uint64]map[uint64]*readLease // dir -> session -> lease
	kids    map[uint64][]uint64              // dir -> its children when its first read lease was granted
	childOf map[uint64][]uint64              // child -> read-leased dirs that list it
	broken  map[uint64]map[uint64]bool       // session -> dirs whose read lease was broken
}

func newReadState() readState {
	return readState{readers: map[uint64]map[uint64]*readLease{}, kids: map[uint64][]uint64{},
		childOf: map[uint64][]uint64{}, broken: map[uint64]map[uint64]bool{}}
}

// children lists dir's entries but "." and ".." (those of type typ only,
// unless typ is 0).
func (f *FSM) children(dir uint64, typ namespace.FileType) []uint64 {
	var out []uint64
	for cookie := uint64(0); ; {
		ents, e := f.ns.ReadDir(dir, cookie, 4096)
		if e != 0 || len(ents) == 0 {
			return out
		}
		for _, d := range ents {
			if d.Name != "." && d.Name != ".." && (typ == 0 || d.Type == typ) {
				out = append(out, d.Ino)
			}
			cookie = d.Cookie
		}
	}
}

// writeLeasedToOther reports whether dir's write lease is held by a live
// session other than ls.
func (f *FSM) writeLeasedToOther(dir, ls uint64) bool {
	l := f.leases[dir]
	return l != nil && l.session != ls && f.liveSession(l.session)
}

// grantRead takes a read lease of op.Dir for op.Session.
func (f *FSM) grantRead(op *metapb.LeaseOp) *metapb.Result {
	if r := f.leasable(op); r != nil {
		return r
	}
	rs := &f.reads
	if l := rs.readers[op.Dir][op.Session]; l != nil {
		if l.revoked {
			return leasedResult() // released first: a change waits for it
		}
		return &metapb.Result{}
	}
	if l := f.leases[op.Dir]; l != nil && f.liveSession(l.session) {
		// Another's, or the session's own: its holder changes it behind,
		// and its own copy is what it answers from.
		return leasedResult()
	}
	kids, first := rs.kids[op.Dir], rs.readers[op.Dir] == nil
	if first {
		kids = f.children(op.Dir, 0)
	}
	if len(f.leases) > 0 {
		// A child directory another mount write-leases: its holder
		// changes its attributes behind. It is asked to give it back (a
		// walk goes there next anyway), and the reader tries again later.
		refused := false
		for _, k := range kids {
			if f.writeLeasedToOther(k, op.Session) {
				l := f.leases[k]
				kidOnly := !l.revoked || l.kidOnly // nothing else revoked it
				f.conflict(k, op.Session)
				l.kidOnly = kidOnly
				refused = true
			}
		}
		if refused {
			return leasedResult()
		}
	}
	if first {
		rs.readers[op.Dir] = map[uint64]*readLease{}
		rs.kids[op.Dir] = kids
		for _, k := range kids {
			rs.childOf[k] = append(rs.childOf[k], op.Dir)
		}
	}
	rs.readers[op.Dir][op.Session] = &readLease{}
	return &metapb.Result{}
}

// upgradeRead turns op.Session's read lease of op.Dir into the write
// lease, in one step: while the read lease was held nobody else changed
// the directory or its children's attributes, so the holder's copy of
// them is the write lease's view and it need not read them again. Refused
// (Leased) unless the session holds the read lease, not revoked, and no
// other session reads the directory or its parent (as leaseTry: those
// are left be); the read lease is kept then, for its holder to release.
func (f *FSM) upgradeRead(op *metapb.LeaseOp) *metapb.Result {
	if r := f.leasable(op); r != nil {
		return r
	}
	if l := f.reads.readers[op.Dir][op.Session]; l == nil || l.revoked {
		return leasedResult()
	}
	if l := f.leases[op.Dir]; l != nil && l.session != op.Session {
		if f.liveSession(l.session) {
			return leasedResult() // not granted beside a read lease: a corner left by restores
		}
		f.endLease(op.Dir) // its session ended: it would shadow the grant
	}
	if f.readersInWay(op.Dir, op.Session, false) {
		return leasedResult()
	}
	f.dropRead(op.Dir, op.Session)
	if f.leases[op.Dir] == nil {
		f.leases[op.Dir] = &dirLease{session: op.Session}
		f.indexKids(op.Dir)
	}
	return &metapb.Result{}
}

// dropRead ends session's read lease of dir, if any.
func (f *FSM) dropRead(dir, session uint64) {
	rs := &f.reads
	if b := rs.broken[session]; b[dir] {
		delete(b, dir)
		if len(b) == 0 {
			delete(rs.broken, session)
		}
	}
	m := rs.readers[dir]
	if m[session] == nil {
		return
	}
	delete(m, session)
	if len(m) > 0 {
		return
	}
	delete(rs.readers, dir)
	for _, k := range rs.kids[dir] {
		ds := slices.DeleteFunc(rs.childOf[k], func(d uint64) bool { return d == dir })
		if len(ds) == 0 {
			delete(rs.childOf, k)
		} else {
			rs.childOf[k] = ds
		}
	}
	delete(rs.kids, dir)
}

// dropSessionReads ends the read leases of a session that ended.
func (f *FSM) dropSessionReads(session uint64) {
	for _, d := range slices.Sorted(maps.Keys(f.reads.readers)) {
		f.dropRead(d, session)
	}
	delete(f.reads.broken, session)
}

// dropDirReads ends every read lease of a directory that was removed.
func (f *FSM) dropDirReads(dir uint64) {
	for _, s := range slices.Sorted(maps.Keys(f.reads.readers[dir])) {
		f.dropRead(dir, s)
	}
}

// touchedInodes lists the inodes, other than the directories touchedDirs
// names, whose attributes a command changes (a link count, a size, a
// ctime).
func (f *FSM) touchedInodes(c *metapb.Command) []uint64 {
	switch op := c.Op.(type) {
	case *metapb.Command_Link:
		return []uint64{op.Link.Ino}
	case *metapb.Command_Unlink:
		ino, _ := f.childIno(op.Unlink.Parent, op.Unlink.Name)
		return []uint64{ino}
	case *metapb.Command_Rename:
		o := op.Rename
		a, _ := f.childIno(o.OldParent, o.OldName)
		b, _ := f.childIno(o.NewParent, o.NewName)
		return []uint64{a, b}
	case *metapb.Command_Commit:
		return []uint64{op.Commit.Ino}
	case *metapb.Command_Inline:
		return []uint64{op.Inline.Ino}
	case *metapb.Command_Compact:
		return nil // the same bytes: no attribute a reader caches changes
	}
	return nil
}

// readConflict reports whether a command of session ls touching targets
// must wait for other sessions' read leases, and marks them revoked. brk:
// the command was written behind: they are broken instead, and it goes
// ahead. Leases of sessions that are gone are dropped on the way.
func (f *FSM) readConflict(targets []uint64, ls uint64, brk bool) bool {
	rs := &f.reads
	if len(rs.readers) == 0 {
		return false
	}
	var dirs []uint64
	for _, t := range targets {
		if t == 0 {
			continue
		}
		if rs.readers[t] != nil {
			dirs = append(dirs, t)
		}
		dirs = append(dirs, rs.childOf[t]...)
	}
	refused, notify := false, false
	for _, d := range slices.Compact(slices.Sorted(slices.Values(dirs))) {
		for _, s := range slices.Sorted(maps.Keys(rs.readers[d])) {
			l := rs.readers[d][s]
			switch {
			case s == ls:
				// The holder's own change: it dropped its copy of what
				// it touches, unless it did not know the inode there (a
				// hard link changed through another directory). It is
				// told, and waits for nobody.
				if !l.revoked {
					l.revoked = true
					notify = true
				}
			case !f.liveSession(s):
				f.dropRead(d, s)
			case brk:
				f.dropRead(d, s)
				if rs.broken[s] == nil {
					rs.broken[s] = map[uint64]bool{}
				}
				rs.broken[s][d] = true
				notify = true
			default:
				refused = true
				if !l.revoked {
					l.revoked = true
					notify = true
				}
			}
		}
	}
	if notify {
		f.notifyRevoked()
	}
	return refused
}

// readersInWay reports whether a session other than ls holds a live read
// lease of dir or of a directory listing dir: a write lease of dir would
// change what they cache behind their back.
func (f *FSM) readersInWay(dir, ls uint64, revoke bool) bool {
	rs := &f.reads
	if len(rs.readers) == 0 {
		return false
	}
	dirs := append([]uint64{dir}, rs.childOf[dir]...)
	in, notify := false, false
	for _, d := range dirs {
		for s, l := range rs.readers[d] {
			if s == ls || !f.liveSession(s) {
				continue
			}
			in = true
			if revoke && !l.revoked {
				l.revoked, notify = true, true
			}
		}
	}
	if notify {
		f.notifyRevoked()
	}
	return in
}

// revokedReads lists the directories whose read lease of session was
// revoked or broken.
func (f *FSM) revokedReads(session uint64) []uint64 {
	var out []uint64
	for d, m := range f.reads.readers {
		if l := m[session]; l != nil && l.revoked {
			out = append(out, d)
		}
	}
	for d := range f.reads.broken[session] {
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (f *FSM) encodeReads() []*metapb.DirLease {
	var out []*metapb.DirLease
	rs := &f.reads
	for _, d := range slices.Sorted(maps.Keys(rs.readers)) {
		for i, s := range slices.Sorted(maps.Keys(rs.readers[d])) {
			l := &metapb.DirLease{Dir: d, Session: s, Revoked: rs.readers[d][s].revoked, Read: true, KidsListed: true}
			if i == 0 {
				l.Kids = rs.kids[d] // the directory's, once
			}
			out = append(out, l)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(rs.broken)) {
		for _, d := range slices.Sorted(maps.Keys(rs.broken[s])) {
			out = append(out, &metapb.DirLease{Dir: d, Session: s, Read: true, Broken: true})
		}
	}
	return out
}

// decodeReads restores the read leases of a snapshot, with the children
// each directory listed at its first grant: they may differ from what it
// lists now (its holder's own changes go ahead, revoking its lease, which
// it keeps until it releases it), so every replica must keep the same. A
// snapshot of an older version carries none: the directory is listed again
// from the namespace (restored first).
func (f *FSM) decodeReads(in []*metapb.DirLease) {
	f.reads = newReadState()
	rs := &f.reads
	for _, l := range in {
		if !l.Read {
			continue
		}
		if l.Broken {
			if rs.broken[l.Session] == nil {
				rs.broken[l.Session] = map[uint64]bool{}
			}
			rs.broken[l.Session][l.Dir] = true
			continue
		}
		if rs.readers[l.Dir] == nil {
			rs.readers[l.Dir] = map[uint64]*readLease{}
			kids := l.Kids
			if !l.KidsListed {
				kids = f.children(l.Dir, 0)
			}
			rs.kids[l.Dir] = kids
			for _, k := range kids {
				rs.childOf[k] = append(rs.childOf[k], l.Dir)
			}
		}
		rs.readers[l.Dir][l.Session] = &readLease{revoked: l.Revoked}
	}
}

// maxListings is how many directories one ReadDirsReq lists at most.
const maxListings = 256

// readDirs lists q's directories from their start, with attributes, until
// max entries in all; one leased to another session than sess is refused
// as a ReadDirReq of it would be. f.mu is held (read).
func (f *FSM) readDirs(q *metapb.ReadDirsReq, sess uint64) *metapb.ReadResp {
	left := q.Max
	if left == 0 || left > 4096 {
		left = 4096
	}
	r := &metapb.ReadResp{Listings: make([]*metapb.Listing, 0, min(len(q.Inos), maxListings))}
	for _, dir := range q.Inos {
		if left == 0 || len(r.Listings) == maxListings {
			break
		}
		if f.queryRefused(dir, sess) {
			r.Listings = append(r.Listings, &metapb.Listing{Ino: dir, Errno: uint32(syscall.EAGAIN), Leased: true})
			continue
		}
		l := f.readDir(dir, 0, left, true)
		left -= uint32(len(l.Entries))
		r.Listings = append(r.Listings, l)
	}
	return r
}
