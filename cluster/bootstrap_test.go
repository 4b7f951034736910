package cluster

import (
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// A new filesystem's root has the time of its bootstrap (the Init command,
// stamped by the leader), not 1970.
func TestRootTimesAreTheBootstrapTime(t *testing.T) {
	f := NewFSM()
	const boot = int64(1_700_000_000e9)
	applyAt(f, boot, &metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	root := func() *metapb.Attr {
		t.Helper()
		r := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: namespace.RootIno}}})
		if r.Errno != 0 {
			t.Fatalf("getattr of the root: errno %d", r.Errno)
		}
		return r.Attr
	}
	a := root()
	if a.Atime != boot || a.Mtime != boot || a.Ctime != boot {
		t.Fatalf("root after bootstrap at %d: atime %d mtime %d ctime %d", boot, a.Atime, a.Mtime, a.Ctime)
	}
	// Another Init (a restarted bootstrap member) changes nothing.
	applyAt(f, boot+5e9, &metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}})
	if b := root(); b.Mtime != boot || b.Version != a.Version {
		t.Fatalf("root after a second Init: %v, want it unchanged from %v", b, a)
	}
}
