package cluster

import (
	"slices"
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

const (
	eagain = uint32(syscall.EAGAIN)
	estale = uint32(syscall.ESTALE)
	einval = uint32(syscall.EINVAL)
)

// leaseFixture is an FSM with two live mount sessions, a and b.
type leaseFixture struct {
	t    *testing.T
	f    *FSM
	a, b uint64
}

func newLeaseFixture(t *testing.T) *leaseFixture {
	t.Helper()
	x := &leaseFixture{t: t, f: NewFSM()}
	x.a = x.apply(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	x.b = x.apply(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	if x.a == 0 || x.b == 0 || x.a == x.b {
		t.Fatalf("sessions %d %d", x.a, x.b)
	}
	return x
}

// apply applies c as lease session ls.
func (x *leaseFixture) apply(ls uint64, c *metapb.Command) *metapb.Result {
	c.LeaseSession = ls
	return applyAt(x.f, 1, c)
}

// ok applies c as ls and fails the test unless it succeeds.
func (x *leaseFixture) ok(ls uint64, c *metapb.Command) *metapb.Result {
	x.t.Helper()
	r := x.apply(ls, c)
	if r.Errno != 0 {
		x.t.Fatalf("%v as session %d: errno %d", c, ls, r.Errno)
	}
	return r
}

func (x *leaseFixture) mkdir(parent uint64, name string) uint64 {
	x.t.Helper()
	return x.ok(0, mkdirCmd(parent, name)).Attr.Ino
}

func (x *leaseFixture) create(parent uint64, name string) uint64 {
	x.t.Helper()
	return x.ok(0, createCmd(parent, name, true)).Attr.Ino
}

func leaseCmd(session, dir uint64, mode uint32) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: session, Dir: dir, Mode: mode}}}
}

func (x *leaseFixture) acquire(session, dir uint64) {
	x.t.Helper()
	x.ok(session, leaseCmd(session, dir, leaseAcquire))
}

func (x *leaseFixture) revokes(session uint64) []uint64 {
	return x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{Session: session}}}).Dirs
}

func (x *leaseFixture) holder(dir uint64) (uint64, bool) {
	l := x.f.leases[dir]
	if l == nil {
		return 0, false
	}
	return l.session, l.revoked
}

func isLeased(r *metapb.Result) bool { return r.Errno == eagain && r.Leased }

func TestLeaseAcquireReleaseRevoke(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	file := x.create(namespace.RootIno, "file")

	for _, tc := range []struct {
		name     string
		ls       uint64
		op       *metapb.LeaseOp
		errno    uint32
		leased   bool
		holder   uint64 // after; 0: none
		revoked  bool
		setupFor func()
	}{
		{name: "acquire from a dead session", op: &metapb.LeaseOp{Session: 999, Dir: d, Mode: leaseAcquire}, errno: estale},
		{name: "acquire a missing dir", op: &metapb.LeaseOp{Session: x.a, Dir: 12345, Mode: leaseAcquire}, errno: uint32(syscall.ENOENT)},
		{name: "acquire a file", op: &metapb.LeaseOp{Session: x.a, Dir: file, Mode: leaseAcquire}, errno: uint32(syscall.ENOTDIR)},
		{name: "bad mode", op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: 9}, errno: einval},
		{name: "acquire", ls: x.a, op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: leaseAcquire}, holder: x.a},
		{name: "acquire again by the holder", ls: x.a, op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: leaseAcquire}, holder: x.a},
		{name: "acquire by another session revokes", ls: x.b, op: &metapb.LeaseOp{Session: x.b, Dir: d, Mode: leaseAcquire}, errno: eagain, leased: true, holder: x.a, revoked: true},
		{name: "holder's re-acquire keeps the revoked mark", ls: x.a, op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: leaseAcquire}, holder: x.a, revoked: true},
		{name: "release by a non-holder does nothing", ls: x.b, op: &metapb.LeaseOp{Session: x.b, Dir: d, Mode: leaseRelease}, holder: x.a, revoked: true},
		{name: "release", ls: x.a, op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: leaseRelease}},
		{name: "release of nothing", ls: x.a, op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: leaseRelease}},
		{name: "try when free", ls: x.b, op: &metapb.LeaseOp{Session: x.b, Dir: d, Mode: leaseTry}, holder: x.b},
		{name: "release after try", ls: x.b, op: &metapb.LeaseOp{Session: x.b, Dir: d, Mode: leaseRelease}},
		{name: "revoke of nothing", ls: x.b, op: &metapb.LeaseOp{Dir: d, Mode: leaseRevoke}},
		{name: "re-acquire", ls: x.a, op: &metapb.LeaseOp{Session: x.a, Dir: d, Mode: leaseAcquire}, holder: x.a},
		{name: "try by another revokes nothing", ls: x.b, op: &metapb.LeaseOp{Session: x.b, Dir: d, Mode: leaseTry}, errno: eagain, leased: true, holder: x.a},
		{name: "revoke by the holder itself", ls: x.a, op: &metapb.LeaseOp{Dir: d, Mode: leaseRevoke}, holder: x.a},
		{name: "revoke by another", ls: x.b, op: &metapb.LeaseOp{Dir: d, Mode: leaseRevoke}, errno: eagain, leased: true, holder: x.a, revoked: true},
		{name: "revoke with no lease session", op: &metapb.LeaseOp{Dir: d, Mode: leaseRevoke}, errno: eagain, leased: true, holder: x.a, revoked: true},
	} {
		r := x.apply(tc.ls, &metapb.Command{Op: &metapb.Command_Lease{Lease: tc.op}})
		if r.Errno != tc.errno || r.Leased != tc.leased {
			t.Errorf("%s: errno %d leased %v, want %d %v", tc.name, r.Errno, r.Leased, tc.errno, tc.leased)
		}
		if h, rv := x.holder(d); h != tc.holder || rv != tc.revoked {
			t.Errorf("%s: lease held by %d revoked %v, want %d %v", tc.name, h, rv, tc.holder, tc.revoked)
		}
	}
	if got := x.revokes(x.a); !slices.Equal(got, []uint64{d}) {
		t.Errorf("revokes of a: %v, want [%d]", got, d)
	}
	if got := x.revokes(x.b); len(got) != 0 {
		t.Errorf("revokes of b: %v, want none", got)
	}
}

// TestLeaseConflicts: every mutation touching a directory leased to another
// session is refused before it does anything and revokes the lease; the
// holder's own commands pass.
func TestLeaseConflicts(t *testing.T) {
	type env struct {
		x               *leaseFixture
		leased, other   uint64 // the leased directory; an unleased one
		sub             uint64 // an empty directory inside leased
		fileIn, fileOut uint64 // a file in leased ("f"), one in other ("g")
		subOut          uint64 // an empty directory in other ("e")
	}
	setup := func(t *testing.T) *env {
		x := newLeaseFixture(t)
		e := &env{x: x}
		e.leased = x.mkdir(namespace.RootIno, "L")
		e.other = x.mkdir(namespace.RootIno, "O")
		e.sub = x.mkdir(e.leased, "sub")
		e.fileIn = x.create(e.leased, "f")
		e.fileOut = x.create(e.other, "g")
		e.subOut = x.mkdir(e.other, "e")
		return e
	}
	rename := func(op uint64, oname string, np uint64, nname string) *metapb.Command {
		return &metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{OldParent: op, OldName: oname, NewParent: np, NewName: nname}}}
	}
	for _, tc := range []struct {
		name  string
		lease func(e *env) uint64 // the directory to lease to a (default: leased)
		cmd   func(e *env) *metapb.Command
		check func(t *testing.T, e *env) // after the holder's run
	}{
		{name: "create in it", cmd: func(e *env) *metapb.Command { return createCmd(e.leased, "new", true) }},
		{name: "mkdir in it", cmd: func(e *env) *metapb.Command { return mkdirCmd(e.leased, "new") }},
		{name: "symlink in it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Symlink{Symlink: &metapb.SymlinkOp{Parent: e.leased, Name: "s", Target: "x"}}}
		}},
		{name: "link into it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Link{Link: &metapb.LinkOp{Ino: e.fileOut, NewParent: e.leased, NewName: "l"}}}
		}},
		{name: "unlink in it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: e.leased, Name: "f"}}}
		}},
		{name: "rmdir in it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Rmdir{Rmdir: &metapb.RmdirOp{Parent: e.leased, Name: "sub"}}}
		}},
		{name: "rmdir of it (leased child)", lease: func(e *env) uint64 { return e.subOut },
			cmd: func(e *env) *metapb.Command {
				return &metapb.Command{Op: &metapb.Command_Rmdir{Rmdir: &metapb.RmdirOp{Parent: e.other, Name: "e"}}}
			},
			check: func(t *testing.T, e *env) {
				if _, ok := e.x.f.leases[e.subOut]; ok {
					t.Error("the lease of a removed directory remains")
				}
			}},
		{name: "rename out of it", cmd: func(e *env) *metapb.Command { return rename(e.leased, "f", e.other, "f2") }},
		{name: "rename into it", cmd: func(e *env) *metapb.Command { return rename(e.other, "g", e.leased, "g2") }},
		{name: "rename of it (leased directory moves)", lease: func(e *env) uint64 { return e.subOut },
			cmd: func(e *env) *metapb.Command { return rename(e.other, "e", e.other, "e2") }},
		{name: "rename over it (leased empty target)", lease: func(e *env) uint64 { return e.subOut },
			cmd: func(e *env) *metapb.Command { return rename(e.leased, "sub", e.other, "e") },
			check: func(t *testing.T, e *env) {
				if _, ok := e.x.f.leases[e.subOut]; ok {
					t.Error("the lease of a replaced directory remains")
				}
			}},
		{name: "setattr of it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{Ino: e.leased, Valid: namespace.SetMode, Mode: 0o700}}}
		}},
		{name: "setxattr of it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Setxattr{Setxattr: &metapb.SetXattrOp{Ino: e.leased, Name: "user.a", Value: []byte("v")}}}
		}},
		{name: "removexattr of it", cmd: func(e *env) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Removexattr{Removexattr: &metapb.RemoveXattrOp{Ino: e.leased, Name: "user.a"}}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			x := e.x
			dir := e.leased
			if tc.lease != nil {
				dir = tc.lease(e)
			}
			x.acquire(x.a, dir)
			if tc.name == "removexattr of it" {
				x.ok(x.a, &metapb.Command{Op: &metapb.Command_Setxattr{Setxattr: &metapb.SetXattrOp{Ino: e.leased, Name: "user.a", Value: []byte("v")}}})
			}
			before, _ := x.f.Digest()
			// Another session, and no session at all, are refused and
			// change nothing but the revoked mark.
			for _, ls := range []uint64{x.b, 0} {
				x.f.leases[dir].revoked = false
				if r := x.apply(ls, tc.cmd(e)); !isLeased(r) {
					t.Fatalf("as session %d: %v, want EAGAIN leased", ls, r)
				}
				if _, rv := x.holder(dir); !rv {
					t.Fatalf("as session %d: the lease was not marked revoked", ls)
				}
				x.f.leases[dir].revoked = false
				if after, _ := x.f.Digest(); after != before {
					t.Fatalf("as session %d: a refused command changed the state", ls)
				}
			}
			// The holder's own command passes.
			x.ok(x.a, tc.cmd(e))
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}
}

// TestLeaseOfDeadSessionStopsConflicting: once its session is expired or
// ended, a lease no longer refuses anyone, and the session's leases go.
func TestLeaseOfDeadSessionStopsConflicting(t *testing.T) {
	for _, force := range []bool{false, true} {
		x := newLeaseFixture(t)
		d1 := x.mkdir(namespace.RootIno, "d1")
		d2 := x.mkdir(namespace.RootIno, "d2")
		x.acquire(x.a, d1)
		x.acquire(x.a, d2)
		x.acquire(x.b, x.mkdir(namespace.RootIno, "d3"))
		if r := x.apply(x.b, createCmd(d1, "f", true)); !isLeased(r) {
			t.Fatalf("create in a's directory: %v", r)
		}
		var end *metapb.Command
		if force {
			end = &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: x.a}}}
		} else {
			end = &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: x.a}}}
		}
		if r := applyAt(x.f, 2e12, end); r.Errno != 0 {
			t.Fatalf("end of session (force %v): %v", force, r)
		}
		if len(x.f.leases) != 1 {
			t.Fatalf("after the session ended (force %v), leases %v remain; want only b's", force, x.f.leases)
		}
		x.ok(x.b, createCmd(d1, "f", true))
		x.ok(x.b, leaseCmd(x.b, d2, leaseAcquire))
	}
	// A lease whose session vanished without its leases being dropped
	// (defensive path) is dropped when it would conflict.
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	x.f.leases[d] = &dirLease{session: 999}
	x.ok(x.b, createCmd(d, "f", true))
	if _, ok := x.f.leases[d]; ok {
		t.Fatal("a dead session's lease survived a conflict check")
	}
	x.f.leases[d] = &dirLease{session: 999}
	if r := x.f.Read(&metapb.ReadReq{LeaseSession: x.b, Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: d}}}); r.Errno != 0 {
		t.Fatalf("getattr of a dead session's directory: %v", r)
	}
	x.ok(x.b, leaseCmd(0, d, leaseRevoke))
	if _, ok := x.f.leases[d]; ok {
		t.Fatal("revoke of a dead session's lease kept it")
	}
}

func TestLeaseRefusesReads(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	x.create(d, "f")
	x.ok(0, &metapb.Command{Op: &metapb.Command_Setxattr{Setxattr: &metapb.SetXattrOp{Ino: d, Name: "user.a", Value: []byte("v")}}})
	x.acquire(x.a, d)
	reads := map[string]func(ls uint64) *metapb.ReadReq{
		"lookup": func(ls uint64) *metapb.ReadReq {
			return &metapb.ReadReq{LeaseSession: ls, Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: d, Name: "f"}}}
		},
		"getattr": func(ls uint64) *metapb.ReadReq {
			return &metapb.ReadReq{LeaseSession: ls, Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: d}}}
		},
		"readdir": func(ls uint64) *metapb.ReadReq {
			return &metapb.ReadReq{LeaseSession: ls, Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d}}}
		},
		"getxattr": func(ls uint64) *metapb.ReadReq {
			return &metapb.ReadReq{LeaseSession: ls, Op: &metapb.ReadReq_Getxattr{Getxattr: &metapb.GetXattrReq{Ino: d, Name: "user.a"}}}
		},
		"listxattr": func(ls uint64) *metapb.ReadReq {
			return &metapb.ReadReq{LeaseSession: ls, Op: &metapb.ReadReq_Listxattr{Listxattr: &metapb.ListXattrReq{Ino: d}}}
		},
	}
	for name, q := range reads {
		for _, ls := range []uint64{x.b, 0} {
			if r := x.f.Read(q(ls)); r.Errno != eagain || !r.Leased {
				t.Errorf("%s as session %d: errno %d leased %v, want EAGAIN leased", name, ls, r.Errno, r.Leased)
			}
		}
		if r := x.f.Read(q(x.a)); r.Errno != 0 || r.Leased {
			t.Errorf("%s by the holder: errno %d leased %v", name, r.Errno, r.Leased)
		}
	}
	// Reads change nothing: the caller revokes, and the holder learns of it.
	if got := x.revokes(x.a); len(got) != 0 {
		t.Fatalf("a read marked the lease revoked: %v", got)
	}
	if r := x.apply(x.b, leaseCmd(0, d, leaseRevoke)); !isLeased(r) {
		t.Fatalf("revoke: %v", r)
	}
	e := x.mkdir(namespace.RootIno, "e")
	x.acquire(x.a, e) // held, not revoked: not listed
	if got := x.revokes(x.a); !slices.Equal(got, []uint64{d}) {
		t.Fatalf("revokes: %v, want [%d]", got, d)
	}
	// The holder gives it back; the reader retries and gets through.
	x.ok(x.a, leaseCmd(x.a, d, leaseRelease))
	if r := x.f.Read(reads["lookup"](x.b)); r.Errno != 0 {
		t.Fatalf("lookup after the release: %v", r)
	}
	if got := x.revokes(x.a); len(got) != 0 {
		t.Fatalf("revokes after the release: %v", got)
	}
}

func TestMkdirWithLease(t *testing.T) {
	x := newLeaseFixture(t)
	mk := func(name string) *metapb.Command {
		c := mkdirCmd(namespace.RootIno, name)
		c.GetMkdir().Lease = true
		return c
	}
	next := x.f.nextIno
	for _, ls := range []uint64{0, 999} {
		if r := x.apply(ls, mk("d")); r.Errno != estale {
			t.Fatalf("leasing mkdir from session %d: %v, want ESTALE", ls, r)
		}
	}
	if x.f.nextIno != next {
		t.Fatal("a refused leasing mkdir used an inode number")
	}
	if r := x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "d"}}}); r.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("a refused leasing mkdir made the directory: %v", r)
	}
	r := x.ok(x.a, mk("d"))
	if !r.Created {
		t.Fatal("leasing mkdir: Created false")
	}
	if h, rv := x.holder(r.Attr.Ino); h != x.a || rv {
		t.Fatalf("new directory leased to %d (revoked %v), want %d", h, rv, x.a)
	}
	x.ok(x.a, createCmd(r.Attr.Ino, "f", true))
	if r := x.apply(x.b, createCmd(r.Attr.Ino, "g", true)); !isLeased(r) {
		t.Fatalf("create by another session in the new leased directory: %v", r)
	}
	// A failing leasing mkdir leases nothing.
	if r := x.apply(x.a, mk("d")); r.Errno != uint32(syscall.EEXIST) || len(x.f.leases) != 1 {
		t.Fatalf("leasing mkdir of an existing name: %v, leases %v", r, x.f.leases)
	}
}

func TestPresetIno(t *testing.T) {
	x := newLeaseFixture(t)
	alloc := func(n uint32) uint64 {
		return x.ok(0, &metapb.Command{Op: &metapb.Command_InoAlloc{InoAlloc: &metapb.InoAllocOp{Count: n}}}).FirstId
	}
	first := alloc(3)
	if x.f.nextIno != first+3 {
		t.Fatalf("after reserving 3 from %d, nextIno %d", first, x.f.nextIno)
	}
	if f0 := alloc(0); f0 != first+3 || x.f.nextIno != first+4 {
		t.Fatalf("a count of 0 reserves one: first %d nextIno %d", f0, x.f.nextIno)
	}
	if fb := alloc(1 << 20); x.f.nextIno != fb+maxInoAlloc {
		t.Fatalf("a huge count is clamped to %d: nextIno %d from %d", maxInoAlloc, x.f.nextIno, fb)
	}
	d := x.mkdir(namespace.RootIno, "d")
	cmds := map[string]func(name string, ino uint64) *metapb.Command{
		"create": func(name string, ino uint64) *metapb.Command {
			c := createCmd(d, name, true)
			c.GetCreate().Ino = ino
			return c
		},
		"mkdir": func(name string, ino uint64) *metapb.Command {
			c := mkdirCmd(d, name)
			c.GetMkdir().Ino = ino
			return c
		},
		"symlink": func(name string, ino uint64) *metapb.Command {
			return &metapb.Command{Op: &metapb.Command_Symlink{Symlink: &metapb.SymlinkOp{Parent: d, Name: name, Target: "t", Ino: ino}}}
		},
	}
	for i, kind := range []string{"create", "mkdir", "symlink"} {
		mk := cmds[kind]
		ino := first + uint64(i)
		next := x.f.nextIno
		if r := x.apply(0, mk(kind+"-unreserved", next)); r.Errno != einval {
			t.Errorf("%s with unreserved ino %d: %v, want EINVAL", kind, next, r)
		}
		if r := x.apply(0, mk(kind+"-used", d)); r.Errno != einval {
			t.Errorf("%s with used ino %d: %v, want EINVAL", kind, d, r)
		}
		r := x.apply(0, mk(kind, ino))
		if r.Errno != 0 || r.Attr.Ino != ino || !r.Created {
			t.Errorf("%s with reserved ino %d: %v", kind, ino, r)
		}
		if x.f.nextIno != next {
			t.Errorf("%s with a preset ino moved nextIno %d -> %d", kind, next, x.f.nextIno)
		}
		if r := x.apply(0, mk(kind+"-again", ino)); r.Errno != einval {
			t.Errorf("%s reusing ino %d: %v, want EINVAL", kind, ino, r)
		}
	}
	// Without a preset number, allocation goes on as before.
	next := x.f.nextIno
	if r := x.ok(0, createCmd(d, "plain", true)); r.Attr.Ino != next || !r.Created || x.f.nextIno != next+1 {
		t.Fatalf("plain create: %v, nextIno %d", r, x.f.nextIno)
	}
	// A non-exclusive create of an existing file with a preset ino returns
	// the file, not created, and the number stays free.
	spare := alloc(1)
	c := createCmd(d, "plain", false)
	c.GetCreate().Ino = spare
	if r := x.ok(0, c); r.Created || r.Attr.Ino != next {
		t.Fatalf("open-create of an existing file: %v", r)
	}
	x.ok(0, cmds["create"]("spare", spare))
}

func multiCmd(cmds ...*metapb.Command) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds}}}
}

func TestMultiOp(t *testing.T) {
	x := newLeaseFixture(t)
	mk := func(name string) *metapb.Command {
		c := mkdirCmd(namespace.RootIno, name)
		c.GetMkdir().Lease = true
		return c
	}
	// The first command leases d to a (the outer lease session); the second
	// creates in it, which passes only because it inherits that session and
	// runs after the first; the third fails alone; the fourth is a nested
	// multi; the fifth still runs.
	r := x.apply(x.a, multiCmd(
		mk("d"),
		&metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{Parent: 2, Name: "f", Type: uint32(namespace.TypeFile), Mode: 0o644, Excl: true}}},
		createCmd(12345, "x", true),
		multiCmd(createCmd(namespace.RootIno, "nested", true)),
		createCmd(namespace.RootIno, "last", true),
	))
	if r.Errno != 0 || len(r.Results) != 5 {
		t.Fatalf("multi: %v", r)
	}
	want := []uint32{0, 0, uint32(syscall.ENOENT), einval, 0}
	for i, w := range want {
		if r.Results[i].Errno != w {
			t.Errorf("result %d: %v, want errno %d", i, r.Results[i], w)
		}
	}
	d := r.Results[0].Attr.Ino
	if d != 2 || r.Results[1].Attr == nil {
		t.Fatalf("mkdir made %d (test assumes 2), create %v", d, r.Results[1])
	}
	if h, _ := x.holder(d); h != x.a {
		t.Fatalf("d leased to %d, want %d", h, x.a)
	}
	if r := x.f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "nested"}}}); r.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("the nested multi ran: %v", r)
	}
	// An inner command's own lease session wins over the outer one's.
	inner := createCmd(d, "g", true)
	inner.LeaseSession = x.b
	r = x.apply(x.a, multiCmd(inner, createCmd(d, "h", true)))
	if !isLeased(r.Results[0]) || r.Results[1].Errno != 0 {
		t.Fatalf("multi with an inner lease session: %v", r)
	}
	// Freed objects of the inner commands are reported by the outer result.
	f1 := x.create(namespace.RootIno, "o1")
	f2 := x.create(namespace.RootIno, "o2")
	for i, ino := range []uint64{f1, f2} {
		x.ok(0, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
			Session: x.a, Ino: ino, Writes: []*metapb.BlockWrite{{Len: 10, Object: uint64(100 + i)}}, NewSize: 10,
		}}})
	}
	r = x.apply(0, multiCmd(
		&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "o1"}}},
		&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "o2"}}},
	))
	if !slices.Equal(r.FreedObjects, []uint64{100, 101}) {
		t.Fatalf("multi freed %v, want [100 101]", r.FreedObjects)
	}
}

// TestMultiOpExactlyOnce: a retried multi (same session and seq) is not
// applied again and answers the first results.
func TestMultiOpExactlyOnce(t *testing.T) {
	f := NewFSM()
	apply := func(c *metapb.Command) *metapb.Result {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.applyOnce(c)
	}
	mk := func() *metapb.Command {
		c := multiCmd(createCmd(namespace.RootIno, "a", true), mkdirCmd(namespace.RootIno, "b"), createCmd(namespace.RootIno, "a", true))
		c.Session, c.Seq, c.Now = 9, 1, 5
		return c
	}
	first := apply(mk())
	inodes := f.Inodes()
	again := apply(mk())
	if len(first.Results) != 3 || first.Results[0].Errno != 0 || first.Results[1].Errno != 0 || first.Results[2].Errno != uint32(syscall.EEXIST) {
		t.Fatalf("first: %v", first)
	}
	if f.Inodes() != inodes || len(again.Results) != 3 {
		t.Fatalf("retry applied again: %d inodes (was %d), %v", f.Inodes(), inodes, again)
	}
	for i := range first.Results {
		if first.Results[i].Errno != again.Results[i].Errno || first.Results[i].GetAttr().GetIno() != again.Results[i].GetAttr().GetIno() {
			t.Fatalf("retry result %d: %v, first %v", i, again.Results[i], first.Results[i])
		}
	}
}

func TestLeaseSnapshotRoundTrip(t *testing.T) {
	x := newLeaseFixture(t)
	var dirs []uint64
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		dirs = append(dirs, x.mkdir(namespace.RootIno, n))
	}
	x.acquire(x.b, dirs[3])
	x.acquire(x.a, dirs[0])
	x.acquire(x.a, dirs[4])
	x.acquire(x.b, dirs[1])
	x.apply(x.b, leaseCmd(0, dirs[0], leaseRevoke))
	d1, err := x.f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1b, _ := x.f.Digest(); d1b != d1 {
		t.Fatal("digest not deterministic")
	}
	g := restored(t, x.f)
	if d2, _ := g.Digest(); d2 != d1 {
		t.Fatal("digest differs after restore")
	}
	if len(g.leases) != 4 {
		t.Fatalf("restored leases: %v", g.leases)
	}
	for d, l := range x.f.leases {
		if gl := g.leases[d]; gl == nil || *gl != *l {
			t.Fatalf("lease of %d: restored %v, want %v", d, gl, l)
		}
	}
	y := &leaseFixture{t: t, f: g, a: x.a, b: x.b}
	if got := y.revokes(x.a); !slices.Equal(got, []uint64{dirs[0]}) {
		t.Fatalf("restored revokes: %v", got)
	}
	if r := y.apply(x.a, createCmd(dirs[1], "f", true)); !isLeased(r) {
		t.Fatalf("restored lease does not conflict: %v", r)
	}
}

// TestMultiOpOfEndedSession: a batch written behind under a session that
// has ended changes nothing (its view of the leased directories is stale).
func TestMultiOpOfEndedSession(t *testing.T) {
	x := newLeaseFixture(t)
	before, _ := x.f.Digest()
	r := x.apply(999, multiCmd(
		&metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{Parent: namespace.RootIno, Name: "f", Type: uint32(namespace.TypeFile), Mode: 0o644, Excl: true}}},
		&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "g"}}},
	))
	if len(r.Results) != 2 || r.Results[0].Errno != estale || r.Results[1].Errno != estale {
		t.Fatalf("results %v, want ESTALE for each", r.Results)
	}
	if after, _ := x.f.Digest(); after != before {
		t.Fatal("a batch of an ended session changed the state")
	}
}

// TestRevokeWatch: the channel a long poll waits on closes when a lease is
// revoked, not before.
func TestRevokeWatch(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	x.acquire(x.a, d)
	ch := x.f.RevokeWatch()
	select {
	case <-ch:
		t.Fatal("closed before any revocation")
	default:
	}
	x.apply(x.b, &metapb.Command{Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Dir: d, Mode: leaseRevoke}}})
	select {
	case <-ch:
	default:
		t.Fatal("not closed by a revocation")
	}
	if got := x.revokes(x.a); !slices.Equal(got, []uint64{d}) {
		t.Fatalf("revokes %v", got)
	}
}
