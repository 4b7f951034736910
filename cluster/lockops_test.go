package cluster

import (
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

func TestLocksThroughTheFSM(t *testing.T) {
	f := NewFSM()
	at := func(now int64, c *metapb.Command) *metapb.Result { return applyAt(f, now, c) }
	read := func(q *metapb.ReadReq) *metapb.ReadResp { return f.Read(q) }
	const sec = int64(1e9)
	open := func(now int64) uint64 {
		return at(now, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 5 * sec}}}).SessionId
	}
	s1, s2 := open(0), open(0)
	ino := at(1, createCmd(namespace.RootIno, "f", true)).Attr.Ino
	flock := func(now int64, s uint64, typ uint32, wait bool, req uint64) *metapb.Result {
		return at(now, &metapb.Command{Op: &metapb.Command_Lock{Lock: &metapb.LockOp{
			Session: s, Ino: ino, Owner: 1, Kind: 2, Type: typ, Wait: wait, ReqId: req}}})
	}
	r1 := flock(2, s1, 2, false, 0)
	if r1.Errno != 0 || r1.Token == 0 {
		t.Fatalf("exclusive flock: %v", r1)
	}
	if r := flock(3, s2, 1, false, 0); r.Errno != uint32(syscall.EAGAIN) {
		t.Fatalf("conflicting non-blocking flock: %v, want EAGAIN", r)
	}
	if r := flock(3, s2, 1, true, 77); r.Errno != 0 || !r.Queued {
		t.Fatalf("blocking flock: %v, want queued", r)
	}
	if r := read(&metapb.ReadReq{Op: &metapb.ReadReq_LockWait{LockWait: &metapb.LockWaitReq{ReqId: 77}}}); r.Errno != 0 || r.Token != 0 {
		t.Fatalf("queued request before the release: %v", r)
	}
	// A snapshot carries the locks and the queue.
	snap, _ := f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(sink); err != nil {
		t.Fatal(err)
	}
	d1, _ := f.Digest()
	d2, _ := g.Digest()
	if d1 != d2 {
		t.Fatal("restored state differs")
	}
	// s1 dies: its lease runs out and its lock goes to the waiter.
	if r := at(6*sec, &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: s1}}}); r.Errno != 0 {
		t.Fatalf("expire: %v", r)
	}
	w := read(&metapb.ReadReq{Op: &metapb.ReadReq_LockWait{LockWait: &metapb.LockWaitReq{ReqId: 77}}})
	if w.Errno != 0 || w.Token <= r1.Token {
		t.Fatalf("after the holder expired the waiter has %v: want a grant with a newer token than %d", w, r1.Token)
	}
	if r := flock(7*sec, s1, 2, false, 0); r.Errno != uint32(syscall.ESTALE) {
		t.Fatalf("lock from an expired session: %v, want ESTALE", r)
	}
	// POSIX F_GETLK sees s2's shared lock as a conflict for a writer.
	c := read(&metapb.ReadReq{Op: &metapb.ReadReq_Getlk{Getlk: &metapb.GetLkReq{Session: 99, Ino: ino, Owner: 5, Type: 2, Start: 0, End: 10}}})
	if c.ConflictType != 0 {
		t.Fatalf("GETLK found a POSIX conflict %v where only a flock is held", c)
	}
}

// TestCommitFencedByLockToken: a writer whose lock was taken from it (here
// released, then granted to another owner) cannot commit with its old token
// even though its session lives; the new holder can.
func TestCommitFencedByLockToken(t *testing.T) {
	f := NewFSM()
	at := func(now int64, c *metapb.Command) *metapb.Result { return applyAt(f, now, c) }
	const sec = int64(1e9)
	s1 := at(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 50 * sec}}}).SessionId
	s2 := at(0, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 50 * sec}}}).SessionId
	ino := at(1, createCmd(namespace.RootIno, "f", true)).Attr.Ino
	lock := func(now int64, s uint64) *metapb.Result {
		return at(now, &metapb.Command{Op: &metapb.Command_Lock{Lock: &metapb.LockOp{Session: s, Ino: ino, Owner: 1, Kind: 1, Type: 2, Start: 0, End: 99}}})
	}
	commit := func(now int64, s, token uint64) *metapb.Result {
		return at(now, &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: s, Ino: ino, NewSize: 10, Owner: 1, LockToken: token,
			Writes: []*metapb.BlockWrite{{Len: 10, Object: uint64(now)}}}}})
	}
	t1 := lock(2, s1).Token
	if r := commit(3, s1, t1); r.Errno != 0 {
		t.Fatalf("commit under the lock: %v", r)
	}
	at(4, &metapb.Command{Op: &metapb.Command_UnlockOwner{UnlockOwner: &metapb.UnlockOwnerOp{Session: s1, Ino: ino, Owner: 1, Kind: 1}}})
	t2 := lock(5, s2).Token
	if t2 <= t1 {
		t.Fatalf("tokens must grow: %d then %d", t1, t2)
	}
	if r := commit(6, s1, t1); r.Errno != uint32(syscall.ESTALE) {
		t.Fatalf("commit by the old holder with its old token: %v, want ESTALE", r)
	}
	if r := commit(7, s2, t2); r.Errno != 0 {
		t.Fatalf("commit by the new holder: %v", r)
	}
}
