package cluster

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// packStores are the stores a packed object's record places its shards on.
var packStores = []string{"s0", "s1", "s2", "s3", "s4", "s5"}

const packLen = 300 // a packed object's length: three members of 100 bytes

// packCommit commits member k (bytes [100k, 100k+100) of object obj) as the
// whole content of file ino, one of pack files in obj, from session sess.
func packCommit(sess, ino, obj uint64, k int, pack uint32) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: sess, Ino: ino, NewSize: 100, Pack: pack,
		Writes:  []*metapb.BlockWrite{{Len: 100, Object: obj, ObjOff: uint32(k * 100)}},
		Objects: []*metapb.ObjectRecord{{Id: obj, Length: packLen, Stores: packStores}}}}}
}

func unlinkCmd(name string) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: namespace.RootIno, Name: name}}}
}

func endCmd(sess uint64) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: sess}}}
}

// mustApply applies c through at and fails unless its errno is want.
func mustApply(t *testing.T, at func(*metapb.Command) *metapb.Result, c *metapb.Command, want syscall.Errno) *metapb.Result {
	t.Helper()
	r := at(c)
	if r.Errno != uint32(want) {
		t.Fatalf("%v: errno %v, want %v", c, syscall.Errno(r.Errno), want)
	}
	return r
}

// createFiles creates the regular files names in the root.
func createFiles(t *testing.T, at func(*metapb.Command) *metapb.Result, names ...string) []uint64 {
	t.Helper()
	var inos []uint64
	for _, n := range names {
		inos = append(inos, mustApply(t, at, createCmd(namespace.RootIno, n, true), 0).Attr.Ino)
	}
	return inos
}

// objState is what the FSM knows of object id.
type objState struct {
	recorded, queued bool
	left             uint32 // commits to come (0: none waited for)
	length           int64
}

func stateOf(f *FSM, id uint64) objState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := objState{queued: f.gcQueued[id] || slices.Contains(f.gc, id), left: f.packs[id].left}
	if o := f.objects[id]; o != nil {
		s.recorded, s.length = true, o.length
	}
	return s
}

func wantState(t *testing.T, f *FSM, id uint64, want objState, when string) {
	t.Helper()
	if got := stateOf(f, id); got != want {
		t.Fatalf("%s: object %d is %+v, want %+v", when, id, got, want)
	}
}

// TestPackMemberUnlinkedBeforeTheOthers: the first member's file goes before
// the two other commits are applied; the object, which no file references
// then, is kept recorded until the others come, and goes to GC only once
// every member's file is gone.
func TestPackMemberUnlinkedBeforeTheOthers(t *testing.T) {
	f, at, sess := healFSM(t, 6)
	inos := createFiles(t, at, "a", "b", "c")
	const obj = 100
	mustApply(t, at, packCommit(sess, inos[0], obj, 0, 3), 0)
	wantState(t, f, obj, objState{recorded: true, left: 2, length: packLen}, "after the first commit")
	if r := mustApply(t, at, unlinkCmd("a"), 0); !slices.Equal(r.FreedObjects, []uint64{obj}) {
		t.Fatalf("unlink of a: freed %v, want [%d] (no file references it)", r.FreedObjects, obj)
	}
	wantState(t, f, obj, objState{recorded: true, left: 2, length: packLen}, "a unlinked, two commits to come")
	mustApply(t, at, packCommit(sess, inos[1], obj, 1, 3), 0)
	wantState(t, f, obj, objState{recorded: true, left: 1, length: packLen}, "after the second commit")
	if r := mustApply(t, at, packCommit(sess, inos[2], obj, 2, 3), 0); len(r.FreedObjects) != 0 {
		t.Fatalf("the last commit freed %v: b and c reference the object", r.FreedObjects)
	}
	wantState(t, f, obj, objState{recorded: true, length: packLen}, "after every commit")
	mustApply(t, at, unlinkCmd("b"), 0)
	wantState(t, f, obj, objState{recorded: true, length: packLen}, "c still references it")
	if r := mustApply(t, at, unlinkCmd("c"), 0); !slices.Equal(r.FreedObjects, []uint64{obj}) {
		t.Fatalf("unlink of the last member: freed %v", r.FreedObjects)
	}
	wantState(t, f, obj, objState{recorded: true, queued: true, length: packLen}, "every member unlinked")
}

// TestPackLastCommitQueuesUnreferenced: when the last commit comes and no
// file references the object (every member gone or refused), it goes to GC
// then; failed commits (ENOENT, a stale lock token) count, and the first
// records the object even though it failed.
func TestPackLastCommitQueuesUnreferenced(t *testing.T) {
	f, at, sess := healFSM(t, 6)
	inos := createFiles(t, at, "a", "b")
	const obj = 200
	mustApply(t, at, packCommit(sess, 9999, obj, 0, 3), syscall.ENOENT)
	wantState(t, f, obj, objState{recorded: true, left: 2, length: packLen}, "after a first commit that failed")
	fenced := packCommit(sess, inos[0], obj, 1, 3)
	fenced.GetCommit().Owner, fenced.GetCommit().LockToken = 1, 5 // no such lock: ESTALE
	mustApply(t, at, fenced, syscall.ESTALE)
	wantState(t, f, obj, objState{recorded: true, left: 1, length: packLen}, "after a fenced commit")
	mustApply(t, at, packCommit(sess, inos[1], obj, 2, 3), 0)
	mustApply(t, at, unlinkCmd("b"), 0)
	wantState(t, f, obj, objState{recorded: true, queued: true, length: packLen}, "its only member unlinked")

	// Every member gone before the last commit: that commit queues it.
	const obj2 = 201
	inos = createFiles(t, at, "x", "y")
	mustApply(t, at, packCommit(sess, inos[0], obj2, 0, 2), 0)
	mustApply(t, at, unlinkCmd("x"), 0)
	mustApply(t, at, unlinkCmd("y"), 0)
	if r := mustApply(t, at, packCommit(sess, inos[1], obj2, 1, 2), syscall.ENOENT); !slices.Equal(r.FreedObjects, []uint64{obj2}) {
		t.Fatalf("the last commit, of a file gone: freed %v, want [%d]", r.FreedObjects, obj2)
	}
	wantState(t, f, obj2, objState{recorded: true, queued: true, length: packLen}, "after the last commit")
}

// TestPackRecordNotReplaced: later members do not replace the record (the
// healer may have moved shards since); a commit without pack replaces its
// objects' records as before.
func TestPackRecordNotReplaced(t *testing.T) {
	f, at, sess := healFSM(t, 7)
	inos := createFiles(t, at, "a", "b")
	const obj = 300
	mustApply(t, at, packCommit(sess, inos[0], obj, 0, 2), 0)
	mustApply(t, at, &metapb.Command{Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{Object: obj, Index: 0, From: "s0", Store: "s6"}}}, 0)
	c := packCommit(sess, inos[1], obj, 1, 2)
	c.GetCommit().Objects[0].Length = 999
	mustApply(t, at, c, 0)
	f.mu.RLock()
	rec := f.objectRecord(obj, f.objects[obj], false)
	f.mu.RUnlock()
	if rec.Length != packLen || rec.Stores[0] != "s6" {
		t.Fatalf("record after the second member: %v, want the first's, as relocated", rec)
	}
}

// TestPackSessionEnd: when the session ends with commits still to come,
// they are forgotten: the object goes to GC if no file references it, and
// stays otherwise, until its files go.
func TestPackSessionEnd(t *testing.T) {
	for _, expire := range []bool{false, true} {
		t.Run(fmt.Sprint("expire=", expire), func(t *testing.T) {
			f, at, sess := healFSM(t, 6)
			end := func(sess uint64) *metapb.Result {
				if expire {
					return mustApply(t, func(c *metapb.Command) *metapb.Result { return applyAt(f, 2e12, c) },
						&metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: sess}}}, 0)
				}
				return mustApply(t, at, endCmd(sess), 0)
			}
			inos := createFiles(t, at, "a", "b")
			const gone, kept = 400, 401
			mustApply(t, at, packCommit(sess, inos[0], gone, 0, 3), 0)
			mustApply(t, at, unlinkCmd("a"), 0)
			mustApply(t, at, packCommit(sess, inos[1], kept, 0, 3), 0)
			if r := end(sess); !slices.Equal(r.FreedObjects, []uint64{gone}) {
				t.Fatalf("session end: freed %v, want [%d]", r.FreedObjects, gone)
			}
			wantState(t, f, gone, objState{recorded: true, queued: true, length: packLen}, "unreferenced, session ended")
			wantState(t, f, kept, objState{recorded: true, length: packLen}, "referenced, session ended")
			mustApply(t, at, unlinkCmd("b"), 0)
			wantState(t, f, kept, objState{recorded: true, queued: true, length: packLen}, "its file unlinked")

			// A dead session's commit counts nothing and records nothing.
			ino := createFiles(t, at, "c")[0]
			mustApply(t, at, packCommit(sess, ino, 402, 0, 2), syscall.ESTALE)
			wantState(t, f, 402, objState{}, "a dead session's commit")
		})
	}
}

// TestPackSnapshotKeepsPending: the commits to come survive a snapshot and
// its restore, and count on from there.
func TestPackSnapshotKeepsPending(t *testing.T) {
	f, at, sess := healFSM(t, 6)
	inos := createFiles(t, at, "a", "b", "c")
	const obj = 500
	mustApply(t, at, packCommit(sess, inos[0], obj, 0, 3), 0)
	mustApply(t, at, unlinkCmd("a"), 0)
	f.mu.RLock()
	recs := f.encodeObjects()
	f.mu.RUnlock()
	if len(recs) != 1 || recs[0].PackPending != 2 || recs[0].PackSession != sess {
		t.Fatalf("snapshot records %v, want object %d with 2 commits to come from session %d", recs, obj, sess)
	}
	g := restored(t, f)
	if g.packs[obj] != (packWait{left: 2, sess: sess}) {
		t.Fatalf("restored pack entries %v", g.packs)
	}
	if d1, d2 := mustDigest(t, f), mustDigest(t, g); d1 != d2 {
		t.Fatal("the restored state differs")
	}
	gat := func(c *metapb.Command) *metapb.Result { return applyAt(g, 2, c) }
	mustApply(t, gat, &metapb.Command{Op: &metapb.Command_GcQueue{GcQueue: &metapb.GCQueueOp{Objects: []uint64{obj}}}}, 0)
	wantState(t, g, obj, objState{recorded: true, left: 2, length: packLen}, "restored, asked to queue it")
	mustApply(t, gat, packCommit(sess, inos[1], obj, 1, 3), 0)
	mustApply(t, gat, unlinkCmd("b"), 0)
	wantState(t, g, obj, objState{recorded: true, left: 1, length: packLen}, "restored, one commit to come")
	mustApply(t, gat, unlinkCmd("c"), 0)
	mustApply(t, gat, packCommit(sess, inos[2], obj, 2, 3), syscall.ENOENT)
	wantState(t, g, obj, objState{recorded: true, queued: true, length: packLen}, "restored, every commit applied")
	if h := restored(t, g); len(h.packs) != 0 {
		t.Fatalf("pack entries after the last commit and a restore: %v", h.packs)
	}
}

func mustDigest(t *testing.T, f *FSM) [32]byte {
	t.Helper()
	d, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPackCommitRefused: a pack commit for an object already queued for GC
// (ESTALE) or malformed (EINVAL) changes nothing and counts nothing.
func TestPackCommitRefused(t *testing.T) {
	f, at, sess := healFSM(t, 6)
	commitObject(t, at, sess, 600, packStores...) // file f600, not packed
	mustApply(t, at, unlinkCmd("f600"), 0)
	wantState(t, f, 600, objState{recorded: true, queued: true, length: 1 << 20}, "a plain object unlinked")
	ino := createFiles(t, at, "a")[0]
	mustApply(t, at, packCommit(sess, ino, 600, 0, 2), syscall.ESTALE)
	wantState(t, f, 600, objState{recorded: true, queued: true, length: 1 << 20}, "after a refused pack commit")
	if a := f.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}}); a.Attr.Size != 0 {
		t.Fatalf("a refused commit changed the file: %v", a.Attr)
	}

	other := at(&metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: 1e12}}}).SessionId
	mustApply(t, at, packCommit(other, ino, 601, 0, 3), 0)
	for name, edit := range map[string]func(*metapb.CommitOp){
		"two records": func(op *metapb.CommitOp) {
			op.Objects = append(op.Objects, &metapb.ObjectRecord{Id: 603, Length: 1, Stores: packStores})
		},
		"no record":         func(op *metapb.CommitOp) { op.Objects = nil },
		"a write elsewhere": func(op *metapb.CommitOp) { op.Writes[0].Object = 603 },
		"another session's": func(op *metapb.CommitOp) { op.Objects[0].Id, op.Writes[0].Object = 601, 601 },
	} {
		c := packCommit(sess, ino, 602, 1, 3)
		edit(c.GetCommit())
		if r := at(c); r.Errno != uint32(syscall.EINVAL) {
			t.Errorf("%s: errno %v, want EINVAL", name, syscall.Errno(r.Errno))
		}
	}
	wantState(t, f, 602, objState{}, "after malformed commits")
	wantState(t, f, 603, objState{}, "after malformed commits")
	wantState(t, f, 601, objState{recorded: true, left: 2, length: packLen}, "after another session's commit for it")
}

// TestPackCompactionKeepsPending: compaction moving a member off a packed
// object with commits to come does not send the object to GC.
func TestPackCompactionKeepsPending(t *testing.T) {
	f, at, sess := healFSM(t, 6)
	inos := createFiles(t, at, "a", "b")
	const obj = 700
	mustApply(t, at, packCommit(sess, inos[0], obj, 0, 2), 0)
	mustApply(t, at, &metapb.Command{Op: &metapb.Command_Compact{Compact: &metapb.CompactOp{Ino: inos[0], Block: 0,
		Expect: []*metapb.BlockWrite{{Len: 100, Object: obj}}, Off: 0, Len: 100, GcDelayNs: 1,
		Object: &metapb.ObjectRecord{Id: 701, Length: 100, Stores: packStores}}}}, 0)
	wantState(t, f, obj, objState{recorded: true, left: 1, length: packLen}, "its only file compacted")
	if f.gcLater[obj] != 0 {
		t.Fatalf("a packed object with commits to come is set for GC after compaction")
	}
	mustApply(t, at, packCommit(sess, inos[1], obj, 1, 2), 0)
	mustApply(t, at, unlinkCmd("b"), 0)
	wantState(t, f, obj, objState{recorded: true, queued: true, length: packLen}, "every member gone")
}

// TestObjectSharedWithoutPack: objects not packed go to GC as before, when
// no file references them any more.
func TestObjectSharedWithoutPack(t *testing.T) {
	f, at, sess := healFSM(t, 6)
	commitObject(t, at, sess, 800, packStores...)
	if r := mustApply(t, at, unlinkCmd("f800"), 0); !slices.Equal(r.FreedObjects, []uint64{800}) {
		t.Fatalf("unlink: freed %v", r.FreedObjects)
	}
	wantState(t, f, 800, objState{recorded: true, queued: true, length: 1 << 20}, "its file unlinked")
	// Two files naming one object without pack: it goes with the last.
	inos := createFiles(t, at, "a", "b")
	for k, ino := range inos {
		c := packCommit(sess, ino, 801, k, 0)
		mustApply(t, at, c, 0)
	}
	wantState(t, f, 801, objState{recorded: true, length: packLen}, "committed to two files")
	mustApply(t, at, unlinkCmd("a"), 0)
	wantState(t, f, 801, objState{recorded: true, length: packLen}, "b still references it")
	mustApply(t, at, &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{Ino: inos[1], Valid: namespace.SetSize}}}, 0)
	wantState(t, f, 801, objState{recorded: true, queued: true, length: packLen}, "b truncated")
}

// TestFsckPendingPackNotUnreferenced: a packed object that no file
// references yet, with commits to come, is not reported unreferenced (and
// not queued by the repair); its shards are checked as any object's.
func TestFsckPendingPackNotUnreferenced(t *testing.T) {
	srv, apply, sess := leaderWithStores(t, 6)
	fake := newFakeFsckStores()
	srv.EnableFsck(fake, time.Hour)
	ino := apply(createCmd(namespace.RootIno, "a", true)).Attr.Ino
	const obj = 900
	for i, st := range packStores {
		fake.put(st+":1", obj, i, fakeShardSize(packLen), 2*time.Hour)
	}
	if r := apply(packCommit(sess, ino, obj, 0, 2)); r.Errno != 0 {
		t.Fatalf("pack commit: %v", r)
	}
	apply(unlinkCmd("a"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := srv.Admin(ctx, &metapb.AdminReq{Op: &metapb.AdminReq_Fsck{Fsck: &metapb.FsckReq{Repair: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range FsckKinds {
		if r.Fsck.Counts[k] != 0 {
			t.Errorf("%d %s problems; problems:\n%s", r.Fsck.Counts[k], k, problemList(r.Fsck))
		}
	}
	if r.Fsck.Objects != 1 || r.Fsck.ShardsListed != 6 {
		t.Errorf("fsck saw %d objects, %d shards, want 1 and 6", r.Fsck.Objects, r.Fsck.ShardsListed)
	}
	wantState(t, srv.fsm, obj, objState{recorded: true, left: 1, length: packLen}, "after fsck with repair")
}
