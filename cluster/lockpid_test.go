package cluster

import (
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// F_GETLK answers the pid of the process that took the conflicting lock, as
// its LockOp said, also after a snapshot.
func TestGetLkAnswersThePid(t *testing.T) {
	f := NewFSM()
	open := func() uint64 {
		return applyAt(f, 0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 5e9}}}).SessionId
	}
	s1, s2 := open(), open()
	ino := applyAt(f, 1, createCmd(namespace.RootIno, "f", true)).Attr.Ino
	if r := applyAt(f, 2, &metapb.Command{Op: &metapb.Command_Lock{Lock: &metapb.LockOp{
		Session: s1, Ino: ino, Owner: 1, Kind: 1, Type: 2, Start: 0, End: 99, Pid: 4242}}}); r.Errno != 0 {
		t.Fatalf("lock: %v", r)
	}
	getlk := func(f *FSM) *metapb.ReadResp {
		return f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getlk{Getlk: &metapb.GetLkReq{
			Session: s2, Ino: ino, Owner: 2, Type: 1, Start: 10, End: 10}}})
	}
	if r := getlk(f); r.ConflictType != 2 || r.ConflictSession != s1 || r.ConflictPid != 4242 {
		t.Fatalf("getlk: %v, want the write lock of session %d, pid 4242", r, s1)
	}
	snap, _ := f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(sink); err != nil {
		t.Fatal(err)
	}
	if r := getlk(g); r.ConflictPid != 4242 {
		t.Fatalf("getlk after a restore: %v, want pid 4242", r)
	}
}
