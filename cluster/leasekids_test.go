package cluster

import (
	"maps"
	"slices"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// TestWriteLeaseCoversItsFiles: once a directory that holds files is
// write-leased, another session's change of one of those files made
// without touching the directory (a setattr or a commit through a
// descriptor, an open of a name its kernel cached, a link or an unlink
// through another name), and its query of one's attributes, are refused
// and revoke the lease; the holder's own are not; once released (or the
// holder's session ended, or after a snapshot round trip) the index
// follows.
func TestWriteLeaseCoversItsFiles(t *testing.T) {
	x := newLeaseFixture(t)
	d := x.mkdir(namespace.RootIno, "d")
	f := x.create(d, "f")
	sub := x.mkdir(d, "sub")
	other := x.mkdir(namespace.RootIno, "other")
	x.ok(0, &metapb.Command{Op: &metapb.Command_Link{Link: &metapb.LinkOp{Ino: f, NewParent: other, NewName: "alias"}}})
	changes := map[string]*metapb.Command{
		"setattr":            setattrCmd(f, 0o600),
		"commit":             {Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: x.b, Ino: f}}},
		"inline":             {Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: x.b, Ino: f, Data: []byte("hi")}}},
		"open":               {Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: x.b, Ino: f, Handle: x.b<<40 | 1}}},
		"link elsewhere":     {Op: &metapb.Command_Link{Link: &metapb.LinkOp{Ino: f, NewParent: other, NewName: "l2"}}},
		"unlink other name":  {Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: other, Name: "alias"}}},
		"revoke by the file": leaseCmd(x.b, f, leaseRevoke),
	}
	getattr := &metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: f}}}
	for _, name := range slices.Sorted(maps.Keys(changes)) {
		cmd := changes[name]
		x.acquire(x.a, d)
		x.ok(x.a, setattrCmd(f, 0o640)) // the holder's own change
		getattr.LeaseSession = x.b
		if r := x.f.Read(getattr); !r.Leased {
			t.Fatalf("%s: another session's getattr of a leased directory's file: %v", name, r)
		}
		if r := x.apply(x.b, cmd); !isLeased(r) {
			t.Fatalf("%s by another session: %v, want refused (leased)", name, r)
		}
		if got := x.revokes(x.a); !slices.Equal(got, []uint64{d}) {
			t.Fatalf("%s: revoked leases of the holder %v, want [%d]", name, got, d)
		}
		x.ok(x.a, leaseCmd(x.a, d, leaseRelease))
		if len(x.f.wkids.kids) != 0 || len(x.f.wkids.childOf) != 0 {
			t.Fatalf("%s: index left after the release: %+v", name, x.f.wkids)
		}
		if r := x.apply(x.b, cmd); isLeased(r) {
			t.Fatalf("%s after the release still refused: %v", name, r)
		}
		if name == "unlink other name" {
			x.ok(0, &metapb.Command{Op: &metapb.Command_Link{Link: &metapb.LinkOp{Ino: f, NewParent: other, NewName: "alias"}}})
		}
	}
	// Directories are not its files (their own leases and attributes are
	// another matter), nor files made after the grant.
	x.acquire(x.a, d)
	if slices.Contains(x.f.wkids.kids[d], sub) {
		t.Fatal("a child directory is indexed as a file")
	}
	g := x.ok(x.a, createCmd(d, "new", true)).Attr.Ino
	x.ok(x.b, setattrCmd(sub, 0o700))
	if slices.Contains(x.f.wkids.kids[d], g) {
		t.Fatal("a file made under the lease is indexed")
	}
	// A snapshot keeps the index.
	y := &leaseFixture{t: t, f: restored(t, x.f), a: x.a, b: x.b}
	if r := y.apply(x.b, setattrCmd(f, 0o600)); !isLeased(r) {
		t.Fatalf("restored write lease does not cover its file: %v", r)
	}
	// The holder's session ends: so does the index.
	if r := applyAt(x.f, 2e12, &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: x.a}}}); r.Errno != 0 {
		t.Fatalf("expire: %v", r)
	}
	if len(x.f.wkids.kids) != 0 || len(x.f.wkids.childOf) != 0 {
		t.Fatalf("index left after the holder's session ended: %+v", x.f.wkids)
	}
	x.ok(x.b, setattrCmd(f, 0o600))
}
