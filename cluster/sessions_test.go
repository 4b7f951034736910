package cluster

import (
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

func TestSessionsFenceAndExpire(t *testing.T) {
	f := NewFSM()
	at := func(now int64, c *metapb.Command) *metapb.Result { return applyAt(f, now, c) }
	const sec = int64(1e9)
	s := at(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 10 * sec}}})
	if s.Errno != 0 || s.SessionId == 0 || s.Expires != 10*sec {
		t.Fatalf("open session: %v", s)
	}
	file := at(1, createCmd(namespace.RootIno, "f", true))
	ino := file.Attr.Ino
	commit := func(now int64, session uint64) *metapb.Result {
		return at(now, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{
			Session: session, Ino: ino, Writes: []*metapb.BlockWrite{{Block: 0, Off: 0, Len: 100, Object: 42}}, NewSize: 100,
		}}})
	}
	if r := commit(2, s.SessionId); r.Errno != 0 || r.Attr.Size != 100 {
		t.Fatalf("commit from a live session: %v", r)
	}
	if r := at(3, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: s.SessionId, Ino: ino, Handle: 7}}}); r.Errno != 0 {
		t.Fatalf("open: %v", r)
	}
	if r := at(4, &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "f"}}}); r.Errno != 0 || len(r.FreedObjects) != 0 {
		t.Fatalf("unlink of an open file freed %v (errno %d): it must wait for the close", r.FreedObjects, r.Errno)
	}
	if r := at(5*sec, &metapb.Command{Op: &metapb.Command_Renew{Renew: &metapb.RenewOp{Session: s.SessionId}}}); r.Errno != 0 || r.Expires != 15*sec {
		t.Fatalf("renew: %v", r)
	}
	// An expiry proposed with a time before the deadline does nothing.
	if r := at(12*sec, &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: s.SessionId}}}); r.Errno != uint32(syscall.EAGAIN) {
		t.Fatalf("early expiry: %v", r)
	}
	r := at(16*sec, &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: s.SessionId}}})
	if r.Errno != 0 || len(r.FreedObjects) != 1 || r.FreedObjects[0] != 42 {
		t.Fatalf("expiry must close the session's files and free the orphan's object 42: %v", r)
	}
	if r := commit(17*sec, s.SessionId); r.Errno != uint32(syscall.ESTALE) {
		t.Fatalf("commit from an expired session: %v, want ESTALE", r)
	}
	if r := at(18*sec, &metapb.Command{Op: &metapb.Command_Renew{Renew: &metapb.RenewOp{Session: s.SessionId}}}); r.Errno != uint32(syscall.ESTALE) {
		t.Fatalf("renew of an expired session: %v, want ESTALE", r)
	}
	s2 := at(19*sec, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: sec}}})
	if s2.SessionId <= s.SessionId {
		t.Fatalf("session ids (fencing tokens) must grow: %d after %d", s2.SessionId, s.SessionId)
	}
}

// TestCreateAndOpenInOneStep: a create that carries a handle opens the file
// in the same command: refused whole from a dead session; the unlinked file
// lives until that handle closes.
func TestCreateAndOpenInOneStep(t *testing.T) {
	f := NewFSM()
	at := func(c *metapb.Command) *metapb.Result { return applyAt(f, 0, c) }
	s := at(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e9}}}).SessionId
	withHandle := func(name string, session, handle uint64) *metapb.Command {
		c := createCmd(namespace.RootIno, name, true)
		c.GetCreate().Session, c.GetCreate().Handle = session, handle
		return c
	}
	if r := at(withHandle("x", s+100, 7)); r.Errno != uint32(syscall.ESTALE) {
		t.Fatalf("create+open from an unknown session: errno %d, want ESTALE", r.Errno)
	}
	if r := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "x"}}}); r.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("a refused create+open left a file: %v", r)
	}
	r := at(withHandle("x", s, 7))
	if r.Errno != 0 {
		t.Fatalf("create+open: errno %d", r.Errno)
	}
	ino := r.Attr.Ino
	at(&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: "x"}}})
	if g := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}}); g.Errno != 0 {
		t.Fatalf("the unlinked file opened by its create is gone: errno %d", g.Errno)
	}
	at(&metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Session: s, Handle: 7}}})
	if g := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}}); g.Errno != uint32(syscall.ENOENT) {
		t.Fatalf("after its last close the unlinked file is still there: errno %d", g.Errno)
	}
}
