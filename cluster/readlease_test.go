package cluster

import (
	"fmt"
	"slices"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

func (x *leaseFixture) read(session, dir uint64) *metapb.Result {
	return x.apply(session, leaseCmd(session, dir, leaseRead))
}

func (x *leaseFixture) readRevokes(session uint64) []uint64 {
	return x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{Session: session}}}).ReadDirs
}

func setattrCmd(ino uint64, mode uint32) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{Ino: ino, Valid: namespace.SetMode, Mode: mode}}}
}

// TestReadLeaseRefusesChangesUntilReleased: a change of what a read lease
// covers (an entry, the directory's attributes, a child's attributes,
// a child's data) from another session is refused and revokes every
// reader; once they released it goes through. The readers' own changes
// and everybody's reads are not refused.
func TestReadLeaseRefusesChangesUntilReleased(t *testing.T) {
	x := newLeaseFixture(t)
	c := x.ok(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	d := x.mkdir(namespace.RootIno, "d")
	f := x.create(d, "f")
	sub := x.mkdir(d, "sub")
	other := x.mkdir(namespace.RootIno, "other")
	changes := map[string]*metapb.Command{
		"create":         createCmd(d, "g", true),
		"setattr dir":    setattrCmd(d, 0o700),
		"setattr child":  setattrCmd(f, 0o600),
		"mkdir in sub":   mkdirCmd(sub, "x"), // sub's mtime and link count: a child's attributes
		"inline":         {Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: x.b, Ino: f, Data: []byte("hi")}}},
		"link elsewhere": {Op: &metapb.Command_Link{Link: &metapb.LinkOp{Ino: f, NewParent: other, NewName: "l"}}},
	}
	for name, cmd := range changes {
		x.ok(x.a, leaseCmd(x.a, d, leaseRead))
		x.ok(c, leaseCmd(c, d, leaseRead))
		if r := x.apply(x.b, cmd); !isLeased(r) {
			t.Fatalf("%s by another session under two read leases: %v", name, r)
		}
		if got := x.readRevokes(x.a); !slices.Equal(got, []uint64{d}) {
			t.Fatalf("%s: a's revoked read leases %v", name, got)
		}
		if got := x.readRevokes(c); !slices.Equal(got, []uint64{d}) {
			t.Fatalf("%s: c's revoked read leases %v", name, got)
		}
		if r := x.read(x.a, d); !isLeased(r) {
			t.Fatalf("%s: a revoked read lease taken again before release: %v", name, r)
		}
		if r := x.f.Read(&metapb.ReadReq{LeaseSession: x.b, Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: d, Name: "f"}}}); r.Errno != 0 {
			t.Fatalf("%s: a lookup in a read-leased directory: %v", name, r)
		}
		x.ok(x.a, leaseCmd(x.a, d, leaseUnread))
		if r := x.apply(x.b, cmd); !isLeased(r) {
			t.Fatalf("%s with one reader left: %v", name, r)
		}
		x.ok(c, leaseCmd(c, d, leaseUnread))
		x.ok(x.b, cmd)
		if len(x.f.reads.readers) != 0 || len(x.f.reads.childOf) != 0 || len(x.f.reads.kids) != 0 {
			t.Fatalf("%s: read state left: %+v", name, x.f.reads)
		}
	}
	// A reader's own change is not refused by its own lease, which is
	// marked revoked (the holder may not know all it changed).
	x.ok(x.a, leaseCmd(x.a, d, leaseRead))
	x.ok(x.a, createCmd(d, "own", true))
	if got := x.readRevokes(x.a); !slices.Equal(got, []uint64{d}) {
		t.Fatalf("own change: revoked %v", got)
	}
	// Unrelated changes pass.
	x.ok(x.b, createCmd(other, "free", true))
}

// TestReadLeaseAndWriteLease: a read lease is not granted while another
// session write-leases the directory or a child directory; a write lease
// is not tried while another session reads the directory or its parent,
// and an acquire revokes those readers.
func TestReadLeaseAndWriteLease(t *testing.T) {
	x := newLeaseFixture(t)
	p := x.mkdir(namespace.RootIno, "p")
	d := x.mkdir(p, "d")
	x.acquire(x.a, d)
	if r := x.read(x.b, d); !isLeased(r) {
		t.Fatalf("read lease of a write-leased directory: %v", r)
	}
	if got, revoked := x.holder(d); got != x.a || revoked {
		t.Fatalf("a read lease request revoked the directory's own write lease (holder %d, revoked %v)", got, revoked)
	}
	if r := x.read(x.b, p); !isLeased(r) {
		t.Fatalf("read lease of a write-leased directory's parent: %v", r)
	}
	if got, revoked := x.holder(d); got != x.a || !revoked {
		t.Fatalf("a read lease request of the parent did not ask for the child's write lease back (holder %d, revoked %v)", got, revoked)
	}
	// Its holder hears why: only for the parent (kid_dirs), until a
	// change or a query that goes into it revokes it too.
	revokes := func() *metapb.ReadResp {
		return x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{Session: x.a}}})
	}
	if r := revokes(); !slices.Equal(r.Dirs, []uint64{d}) || !slices.Equal(r.KidDirs, []uint64{d}) {
		t.Fatalf("revoked for the parent's read lease: dirs %v, kid dirs %v", r.Dirs, r.KidDirs)
	}
	if r := x.read(x.b, p); !isLeased(r) {
		t.Fatalf("read lease of the parent, again: %v", r)
	}
	if r := revokes(); !slices.Equal(r.KidDirs, []uint64{d}) {
		t.Fatalf("revoked twice for the parent's read lease: kid dirs %v", r.KidDirs)
	}
	if r := x.apply(x.b, createCmd(d, "x", true)); !isLeased(r) {
		t.Fatalf("create in a write-leased directory: %v", r)
	}
	if r := revokes(); !slices.Equal(r.Dirs, []uint64{d}) || len(r.KidDirs) != 0 {
		t.Fatalf("revoked by a change inside, too: dirs %v, kid dirs %v", r.Dirs, r.KidDirs)
	}
	if r := x.read(x.b, p); !isLeased(r) || len(revokes().KidDirs) != 0 {
		t.Fatalf("a parent's read lease after a change inside: %v, kid dirs %v", r, revokes().KidDirs)
	}
	x.ok(x.a, leaseCmd(x.a, d, leaseRelease))
	x.ok(x.b, leaseCmd(x.b, p, leaseRead))
	if r := x.apply(x.a, leaseCmd(x.a, d, leaseTry)); !isLeased(r) {
		t.Fatalf("write lease tried under a reader of the parent: %v", r)
	}
	if got := x.readRevokes(x.b); len(got) != 0 {
		t.Fatalf("a try revoked read leases: %v", got)
	}
	if r := x.apply(x.a, leaseCmd(x.a, p, leaseAcquire)); !isLeased(r) {
		t.Fatalf("write lease acquired under a reader: %v", r)
	}
	if got := x.readRevokes(x.b); !slices.Equal(got, []uint64{p}) {
		t.Fatalf("acquire did not revoke the reader: %v", got)
	}
	x.ok(x.b, leaseCmd(x.b, p, leaseUnread))
	x.acquire(x.a, p)
	// Nor is a directory read-leased to its own write lease's holder.
	if r := x.read(x.a, p); !isLeased(r) {
		t.Fatalf("read lease of a directory the session write-leases: %v", r)
	}
}

// TestReadLeaseBrokenByBatch: a batch written behind is not refused for a
// read lease; the lease is broken (dropped, reported as revoked until its
// holder releases it).
func TestReadLeaseBrokenByBatch(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	s := x.mkdir(d, "s")
	x.ok(x.b, leaseCmd(x.b, s, leaseRead)) // b reads s ...
	x.acquire(x.a, d)                      // ... before a leases its parent
	r := x.ok(x.a, multiCmd(&metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{OldParent: d, OldName: "s", NewParent: d, NewName: "t"}}}))
	if r.Results[0].Errno != 0 {
		t.Fatalf("rename written behind: %v", r.Results[0])
	}
	if len(x.f.reads.readers) != 0 {
		t.Fatalf("broken lease still held: %v", x.f.reads.readers)
	}
	if got := x.readRevokes(x.b); !slices.Equal(got, []uint64{s}) {
		t.Fatalf("broken lease not reported: %v", got)
	}
	g := restored(t, x.f)
	y := &leaseFixture{t: t, f: g, a: x.a, b: x.b}
	if got := y.readRevokes(x.b); !slices.Equal(got, []uint64{s}) {
		t.Fatalf("broken lease not restored: %v", got)
	}
	x.ok(x.b, leaseCmd(x.b, s, leaseUnread))
	if got := x.readRevokes(x.b); len(got) != 0 {
		t.Fatalf("released broken lease still reported: %v", got)
	}
}

// TestReadLeaseEndsWithSessionAndDirectory: a dead reader does not hold
// changes up once its session expired; a removed directory's read leases
// are gone; read leases survive a snapshot with their children index.
func TestReadLeaseEndsWithSessionAndDirectory(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	f := x.create(d, "f")
	e := x.mkdir(namespace.RootIno, "e")
	x.ok(x.a, leaseCmd(x.a, d, leaseRead))
	x.ok(x.a, leaseCmd(x.a, e, leaseRead))
	g := restored(t, x.f)
	if d1, _ := x.f.Digest(); func() bool { d2, _ := g.Digest(); return d1 != d2 }() {
		t.Fatal("digest differs after restore")
	}
	y := &leaseFixture{t: t, f: g, a: x.a, b: x.b}
	if r := y.apply(x.b, setattrCmd(f, 0o600)); !isLeased(r) {
		t.Fatalf("restored read lease does not cover a child: %v", r)
	}
	if r := x.apply(x.b, setattrCmd(f, 0o600)); !isLeased(r) {
		t.Fatalf("read lease does not cover a child: %v", r)
	}
	if r := applyAt(x.f, 2e12, &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: x.a}}}); r.Errno != 0 {
		t.Fatalf("expire: %v", r)
	}
	if len(x.f.reads.readers) != 0 || len(x.f.reads.childOf) != 0 {
		t.Fatalf("expired session's read leases left: %+v", x.f.reads)
	}
	x.ok(x.b, setattrCmd(f, 0o600))
	x.ok(x.b, leaseCmd(x.b, e, leaseRead))
	x.ok(x.b, &metapb.Command{Op: &metapb.Command_Rmdir{Rmdir: &metapb.RmdirOp{Parent: namespace.RootIno, Name: "e"}}})
	if len(x.f.reads.readers) != 0 {
		t.Fatalf("removed directory's read lease left: %v", x.f.reads.readers)
	}
	// A lease of a session that vanished without its leases dropped
	// (defensive path) gives way.
	x.ok(x.b, leaseCmd(x.b, d, leaseRead))
	x.f.reads.readers[d][999] = &readLease{}
	x.ok(x.b, setattrCmd(f, 0o644))
}

// TestReaddirPlus: entries come with their attributes when asked.
func TestReaddirPlus(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	f := x.create(d, "f")
	x.ok(0, setattrCmd(f, 0o640))
	r := x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d, Plus: true}}})
	var got *metapb.Attr
	for _, e := range r.Entries {
		if e.Name == "f" {
			got = e.Attr
		}
	}
	if got == nil || got.Ino != f || got.Mode != 0o640 {
		t.Fatalf("readdir plus: %v", r.Entries)
	}
	r = x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d}}})
	for _, e := range r.Entries {
		if e.Attr != nil {
			t.Fatalf("plain readdir has attributes: %v", e)
		}
	}
	if !r.Eof {
		t.Fatal("a listing whole in one page does not say it ends")
	}
	// A full page may not be the last.
	x.create(d, "g")
	r = x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d, Max: uint32(len(r.Entries))}}})
	if r.Eof {
		t.Fatalf("a full page of %d entries, with one more left, says the listing ends", len(r.Entries))
	}
	r = x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d, Cookie: r.Entries[len(r.Entries)-1].Cookie}}})
	if len(r.Entries) != 1 || r.Entries[0].Name != "g" || !r.Eof {
		t.Fatalf("the last page: %v (eof %v)", r.Entries, r.Eof)
	}
}

// TestReadDirs: several directories listed in one query, each as a
// readdir plus of it alone would list it; one write-leased to another
// session refused (leased), one missing ENOENT; the entries in all stop
// at max, the listing that reaches it not at its end.
func TestReadDirs(t *testing.T) {
	x := newLeaseFixture(t)
	d1, d2, d3 := x.mkdir(namespace.RootIno, "d1"), x.mkdir(namespace.RootIno, "d2"), x.mkdir(namespace.RootIno, "d3")
	for i := range 3 {
		x.create(d1, fmt.Sprintf("f%d", i))
		x.create(d3, fmt.Sprintf("g%d", i))
	}
	x.create(d2, "h")
	x.acquire(x.b, d2)
	q := func(max uint32, inos ...uint64) *metapb.ReadResp {
		return x.f.Read(&metapb.ReadReq{LeaseSession: x.a, Op: &metapb.ReadReq_Readdirs{Readdirs: &metapb.ReadDirsReq{Inos: inos, Max: max}}})
	}
	r := q(0, d1, d2, 999, d3)
	if r.Errno != 0 || len(r.Listings) != 4 {
		t.Fatalf("readdirs: errno %d, %d listings", r.Errno, len(r.Listings))
	}
	for i, d := range []uint64{d1, d3} {
		l := r.Listings[i*3]
		one := x.f.Read(&metapb.ReadReq{LeaseSession: x.a, Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d, Plus: true}}})
		if l.Ino != d || l.Errno != 0 || !l.Eof || !proto.Equal(l.Attr, one.Attr) || len(l.Entries) != len(one.Entries) || len(l.Entries) != 3 {
			t.Fatalf("listing of %d: %v; alone: %v", d, l, one)
		}
		for j, e := range l.Entries {
			if !proto.Equal(e, one.Entries[j]) || e.Attr == nil {
				t.Fatalf("entry %d of %d: %v, alone %v", j, d, e, one.Entries[j])
			}
		}
	}
	if l := r.Listings[1]; l.Ino != d2 || l.Errno != uint32(syscall.EAGAIN) || !l.Leased || len(l.Entries) != 0 {
		t.Fatalf("listing of a directory write-leased to another session: %v", l)
	}
	if l := r.Listings[2]; l.Ino != 999 || l.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("listing of a missing directory: %v", l)
	}
	// Its holder lists it.
	if l := x.f.Read(&metapb.ReadReq{LeaseSession: x.b, Op: &metapb.ReadReq_Readdirs{Readdirs: &metapb.ReadDirsReq{Inos: []uint64{d2}}}}).Listings[0]; l.Errno != 0 || len(l.Entries) != 1 {
		t.Fatalf("the lease holder's listing: %v", l)
	}
	r = q(4, d1, d3, d1)
	if len(r.Listings) != 2 || len(r.Listings[0].Entries) != 3 || !r.Listings[0].Eof || len(r.Listings[1].Entries) != 1 || r.Listings[1].Eof {
		t.Fatalf("4 entries at most: %v", r.Listings)
	}
	// Many directories: 256 listed at most.
	many := make([]uint64, 1000)
	for i := range many {
		many[i] = 1 << 40
	}
	if r = q(0, many...); len(r.Listings) != maxListings {
		t.Fatalf("%d listings for %d directories, want %d", len(r.Listings), len(many), maxListings)
	}
}

// TestReadLeaseUpgrade: a session's read lease becomes its write lease in
// one command (mode 7): the read lease is gone, the write lease covers the
// directory's files, and another session's change is refused as under
// any write lease. Refused, and the read lease kept, when the session
// holds none, when it was revoked, or when another session reads the
// directory or its parent.
func TestReadLeaseUpgrade(t *testing.T) {
	x := newLeaseFixture(t)
	c := x.ok(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	d := x.mkdir(namespace.RootIno, "d")
	f := x.create(d, "f")
	sub := x.mkdir(d, "sub")

	if r := x.apply(x.a, leaseCmd(x.a, d, leaseUpgrade)); !isLeased(r) {
		t.Fatalf("upgrade without a read lease: %v", r)
	}
	if _, held := x.f.leases[d]; held {
		t.Fatal("upgrade without a read lease granted the write lease")
	}
	// Another reader of the directory, or of its parent, is in the way.
	for name, in := range map[string]uint64{"the directory": d, "its parent": namespace.RootIno} {
		x.ok(x.a, leaseCmd(x.a, d, leaseRead))
		x.ok(c, leaseCmd(c, in, leaseRead))
		if r := x.apply(x.a, leaseCmd(x.a, d, leaseUpgrade)); !isLeased(r) {
			t.Fatalf("upgrade while another session reads %s: %v", name, r)
		}
		if x.f.reads.readers[d][x.a] == nil || x.f.reads.readers[in][c] == nil || x.f.reads.readers[in][c].revoked {
			t.Fatalf("refused upgrade (%s) changed the read leases: %+v", name, x.f.reads.readers)
		}
		x.ok(c, leaseCmd(c, in, leaseUnread))
		x.ok(x.a, leaseCmd(x.a, d, leaseUnread))
	}
	// A revoked read lease is not upgraded: another session waits for it.
	x.ok(x.a, leaseCmd(x.a, d, leaseRead))
	if r := x.apply(x.b, createCmd(d, "g", true)); !isLeased(r) {
		t.Fatalf("create under a read lease: %v", r)
	}
	if r := x.apply(x.a, leaseCmd(x.a, d, leaseUpgrade)); !isLeased(r) {
		t.Fatalf("upgrade of a revoked read lease: %v", r)
	}
	x.ok(x.a, leaseCmd(x.a, d, leaseUnread))
	x.ok(x.b, createCmd(d, "g", true))

	// Granted: the read lease is gone, the write lease covers the files.
	x.ok(x.a, leaseCmd(x.a, d, leaseRead))
	x.ok(x.a, leaseCmd(x.a, d, leaseUpgrade))
	if s, _ := x.holder(d); s != x.a {
		t.Fatalf("write lease of d held by %d after the upgrade, want %d", s, x.a)
	}
	if len(x.f.reads.readers) != 0 || len(x.f.reads.kids) != 0 || len(x.f.reads.childOf) != 0 {
		t.Fatalf("read state left after the upgrade: %+v", x.f.reads)
	}
	if !slices.Contains(x.f.wkids.kids[d], f) || slices.Contains(x.f.wkids.kids[d], sub) {
		t.Fatalf("write lease's file index %v: want f (%d), not sub (%d)", x.f.wkids.kids[d], f, sub)
	}
	x.ok(x.a, createCmd(d, "own", true))
	if r := x.apply(x.b, setattrCmd(f, 0o600)); !isLeased(r) {
		t.Fatalf("another session's setattr of a file under the upgraded lease: %v", r)
	}
	if got := x.revokes(x.a); !slices.Equal(got, []uint64{d}) {
		t.Fatalf("revoked write leases %v, want [%d]", got, d)
	}
	// Upgrading again is refused: the read lease is gone.
	if r := x.apply(x.a, leaseCmd(x.a, d, leaseUpgrade)); !isLeased(r) {
		t.Fatalf("second upgrade: %v", r)
	}
	x.ok(x.a, leaseCmd(x.a, d, leaseRelease))
	x.ok(x.b, setattrCmd(f, 0o600))
	if len(x.f.leases) != 0 || len(x.f.wkids.kids) != 0 {
		t.Fatalf("state left: leases %v, index %+v", x.f.leases, x.f.wkids)
	}
	// A write lease left by a session that ended (its record not yet
	// dropped) does not shadow the grant.
	x.ok(x.a, leaseCmd(x.a, d, leaseRead))
	x.f.leases[d] = &dirLease{session: 999}
	x.ok(x.a, leaseCmd(x.a, d, leaseUpgrade))
	if s, _ := x.holder(d); s != x.a {
		t.Fatalf("write lease of d held by %d after an upgrade over a dead session's lease, want %d", s, x.a)
	}
	x.ok(x.a, leaseCmd(x.a, d, leaseRelease))
	// Not a directory, or a session that ended.
	x.ok(x.a, leaseCmd(x.a, d, leaseRead))
	if r := x.apply(x.a, leaseCmd(x.a, f, leaseUpgrade)); r.Errno == 0 {
		t.Fatal("upgrade of a file granted")
	}
	if r := x.apply(999, leaseCmd(999, d, leaseUpgrade)); r.Errno == 0 {
		t.Fatal("upgrade for no session granted")
	}
}
