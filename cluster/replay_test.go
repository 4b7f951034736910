package cluster

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// TestReplayAfterRestoreMatches drives FSMs through random logs the way a
// mount writing behind does (sessions, files in directories, packed objects
// committed one member at a time with unlinks, renames over, truncates and
// closes between the commits, session ends and expiry, GC, compaction,
// relocation, retried batches) and checks, after every entry, that a
// replica restarted from its own snapshots at random indexes holds the
// same state (Digest, at the same applied index) as one that applied the
// whole log, and so does one restored from the live one's snapshot; the
// state not in snapshots that decides what later commands do (the GC set,
// the pack counts, the files per object, the lease indexes) must agree too.
// Apply must be deterministic for any log, so some commands are odd ones
// (stale, malformed, from dead sessions).
func TestReplayAfterRestoreMatches(t *testing.T) { replaySeeds(t, false) }

// TestReplayWithLeasesAfterRestoreMatches adds directory leases (write and
// read) and commands written behind under them.
func TestReplayWithLeasesAfterRestoreMatches(t *testing.T) { replaySeeds(t, true) }

// replaySeeds runs seeds 0, 1, ... for about 3 s (at least 3 of them; a
// failure names its seed).
func replaySeeds(t *testing.T, leases bool) {
	start := time.Now()
	seed := int64(0)
	for ; seed < 3 || time.Since(start) < 3*time.Second; seed++ {
		if !replayMatches(t, seed, 250, leases) {
			return // one seed's story is enough
		}
	}
	t.Logf("%d seeds", seed)
}

// replayGen makes a random log, reading the live replica's state to pick
// targets that exist (mostly).
type replayGen struct {
	r       *rand.Rand
	live    *FSM // the replica that applies the whole log: the reference
	now     int64
	index   uint64
	nextObj uint64
	handle  uint64
	seq     map[uint64]uint64 // client session -> last seq used
	dirs    []uint64
	files   []uint64 // every regular file ever created (some gone since)
	packs   []*genPack
	sent    []*metapb.Command // commands with a (session, seq), for retries
	leases  bool              // lease commands too
	// wasQueued: objects once in the GC queue, which a stale GCDoneOp
	// (an earlier leader's) may name.
	wasQueued []uint64
}

// genPack is a packed object whose member commits are still to be sent.
type genPack struct {
	obj   uint64
	sess  uint64
	pack  uint32
	next  int
	files []uint64
	rec   *metapb.ObjectRecord
}

var replayStores = []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}

func (g *replayGen) pick(n int) int { return g.r.Intn(n) }

func (g *replayGen) chance(p float64) bool { return g.r.Float64() < p }

// mounts is the live sessions, ascending.
func (g *replayGen) mounts() []uint64 { return slices.Sorted(maps.Keys(g.live.mounts)) }

func (g *replayGen) mount() uint64 {
	ms := g.mounts()
	if len(ms) == 0 || g.chance(0.02) {
		return uint64(g.pick(int(g.live.nextSession) + 1)) // dead or unknown
	}
	return ms[g.pick(len(ms))]
}

func (g *replayGen) dir() uint64 { return g.dirs[g.pick(len(g.dirs))] }

func (g *replayGen) name() string { return fmt.Sprint("n", g.pick(6)) }

func (g *replayGen) file() uint64 {
	if len(g.files) == 0 || g.chance(0.03) {
		return uint64(2 + g.pick(int(g.live.nextIno)))
	}
	return g.files[g.pick(len(g.files))]
}

func (g *replayGen) record(id uint64, length int64) *metapb.ObjectRecord {
	st := slices.Clone(replayStores)
	g.r.Shuffle(len(st), func(i, j int) { st[i], st[j] = st[j], st[i] })
	st = st[:6]
	if g.chance(0.1) {
		st[g.pick(6)] = "" // unplaced
	}
	return &metapb.ObjectRecord{Id: id, Length: length, Stores: st}
}

func (g *replayGen) object() uint64 {
	g.nextObj++
	return g.nextObj
}

// knownObject is an object the live replica knows of, or may have known.
func (g *replayGen) knownObject() uint64 {
	if len(g.live.objects) == 0 || g.chance(0.1) {
		return 1 + uint64(g.pick(int(g.nextObj)))
	}
	ids := slices.Sorted(maps.Keys(g.live.objects))
	return ids[g.pick(len(ids))]
}

func commitCmd(op *metapb.CommitOp) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Commit{Commit: op}}
}

// packMember is the next member commit of p.
func (g *replayGen) packMember(p *genPack) *metapb.Command {
	k := p.next
	p.next++
	size := uint32(64 + g.pick(64))
	op := &metapb.CommitOp{Session: p.sess, Ino: p.files[k], Pack: p.pack, NewSize: uint64(size),
		Writes:  []*metapb.BlockWrite{{Len: size, Object: p.obj, ObjOff: uint32(k * 128)}},
		Objects: []*metapb.ObjectRecord{proto.Clone(p.rec).(*metapb.ObjectRecord)}}
	switch {
	case g.chance(0.1): // another write of the member, further in the block
		op.Writes = append(op.Writes, &metapb.BlockWrite{Off: size, Len: 16, Object: p.obj, ObjOff: uint32(k*128 + 100)})
		op.NewSize += 16
	case g.chance(0.05): // the healer changed the record since the first member
		op.Objects[0] = g.record(p.obj, p.rec.Length)
	case g.chance(0.02): // malformed
		op.Writes[0].Object = p.obj + 1
	case g.chance(0.02):
		op.Session = g.mount() // another (maybe dead) session's commit
	case g.chance(0.03):
		op.Owner, op.LockToken = 1, 7 // fenced by a lock it does not hold
	}
	return commitCmd(op)
}

// command makes one random command.
func (g *replayGen) command() *metapb.Command {
	if len(g.packs) > 0 && g.chance(0.35) {
		i := g.pick(len(g.packs))
		p := g.packs[i]
		c := g.packMember(p)
		if p.next == len(p.files) {
			g.packs = slices.Delete(g.packs, i, i+1)
		}
		return c
	}
	switch k := g.pick(100 + 20*btoi(g.leases)); {
	case k < 12:
		c := createCmd(g.dir(), g.name(), g.chance(0.5))
		if g.chance(0.3) {
			g.handle++
			c.GetCreate().Session, c.GetCreate().Handle = g.mount(), g.handle
		}
		return c
	case k < 15:
		return mkdirCmd(g.dir(), fmt.Sprint("d", g.pick(4)))
	case k < 27: // a packed object: its members' commits come later, in order
		n := 1 + g.pick(5)
		p := &genPack{obj: g.object(), sess: g.mount(), pack: uint32(n)}
		if n == 1 && g.chance(0.5) {
			p.pack = 0
		}
		for range n {
			p.files = append(p.files, g.file())
		}
		p.rec = g.record(p.obj, int64(n*128))
		g.packs = append(g.packs, p)
		c := g.packMember(p)
		if p.next == len(p.files) {
			g.packs = g.packs[:len(g.packs)-1]
		}
		return c
	case k < 33: // a file's own object, maybe shadowing older slices
		id := g.object()
		if g.chance(0.05) {
			id = g.knownObject() // a commit retried after it was applied, its object freed since
		}
		off, n := uint32(g.pick(3)*100), uint32(50+g.pick(200))
		return commitCmd(&metapb.CommitOp{Session: g.mount(), Ino: g.file(), NewSize: uint64(off + n),
			Writes:  []*metapb.BlockWrite{{Block: uint64(g.pick(2)), Off: off, Len: n, Object: id}},
			Objects: []*metapb.ObjectRecord{g.record(id, int64(n))}})
	case k < 41:
		return &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: g.dir(), Name: g.name()}}}
	case k < 48:
		return &metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{
			OldParent: g.dir(), OldName: g.name(), NewParent: g.dir(), NewName: g.name()}}}
	case k < 53:
		return &metapb.Command{Op: &metapb.Command_Setattr{Setattr: &metapb.SetAttrOp{
			Ino: g.file(), Valid: namespace.SetSize, Size: uint64(g.pick(3) * 60)}}}
	case k < 55:
		return &metapb.Command{Op: &metapb.Command_Link{Link: &metapb.LinkOp{Ino: g.file(), NewParent: g.dir(), NewName: g.name()}}}
	case k < 59:
		g.handle++
		return &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: g.mount(), Ino: g.file(), Handle: g.handle}}}
	case k < 64:
		h := uint64(1 + g.pick(int(g.handle)+1))
		return &metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Handle: h}}}
	case k < 66:
		return &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: int64(200 + g.pick(2000))}}}
	case k < 71:
		return &metapb.Command{Op: &metapb.Command_Renew{Renew: &metapb.RenewOp{Session: g.mount()}}}
	case k < 73:
		return &metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: g.mount()}}}
	case k < 74:
		return endCmd(g.mount())
	case k < 79: // the leader's GC: done with some of the queue
		q := slices.Clone(g.live.gc)
		g.r.Shuffle(len(q), func(i, j int) { q[i], q[j] = q[j], q[i] })
		q = q[:g.pick(len(q)+1)]
		switch {
		case len(g.wasQueued) > 0 && g.chance(0.1):
			q = append(q, g.wasQueued[g.pick(len(g.wasQueued))]) // a stale one (an earlier leader's)
		case g.chance(0.1):
			q = append(q, g.knownObject()) // an odd one
		}
		return &metapb.Command{Op: &metapb.Command_GcDone{GcDone: &metapb.GCDoneOp{Objects: q}}}
	case k < 82: // the compactor's due objects, fsck's unreferenced ones
		ids := g.live.gcDueLocked(g.now)
		for range g.pick(3) {
			if id := g.knownObject(); g.live.ns.ObjectRefs(id) == 0 {
				ids = append(ids, id) // fsck's repair: an unreferenced record
			}
		}
		return &metapb.Command{Op: &metapb.Command_GcQueue{GcQueue: &metapb.GCQueueOp{Objects: ids}}}
	case k < 87:
		return g.compact()
	case k < 89:
		id := g.knownObject()
		idx := uint32(g.pick(6))
		from := ""
		if o := g.live.objects[id]; o != nil && int(idx) < len(o.stores) {
			from = g.live.storeIDs[o.stores[idx]]
		}
		return &metapb.Command{Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{
			Object: id, Index: idx, Store: replayStores[g.pick(len(replayStores))], From: from}}}
	case k < 91:
		return &metapb.Command{Op: &metapb.Command_Report{Report: &metapb.ReportOp{Shards: []*metapb.BadShard{
			{Object: g.knownObject(), Index: uint32(g.pick(6)), Store: replayStores[g.pick(len(replayStores))], Reason: "corrupt"}}}}}
	case k < 93:
		states := []string{StoreUp, StoreDraining, StoreDown, StoreSuspect}
		return &metapb.Command{Op: &metapb.Command_StoreState{StoreState: &metapb.StoreStateOp{
			Id: replayStores[g.pick(len(replayStores))], State: states[g.pick(len(states))]}}}
	case k < 95:
		return storeCmd(replayStores[g.pick(len(replayStores))], 1<<30)
	case k < 97:
		return &metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: g.mount(), Ino: g.file(), Data: []byte("inline")}}}
	case k < 98:
		return &metapb.Command{Op: &metapb.Command_Alloc{Alloc: &metapb.AllocOp{Count: uint32(1 + g.pick(4))}}}
	}
	if !g.leases {
		return &metapb.Command{Op: &metapb.Command_Alloc{Alloc: &metapb.AllocOp{Count: 1}}}
	}
	return g.leaseCmd()
}

// leaseCmd is a lease command: write leases of directories (mkdir leasing
// the new one, acquire, try, release, revoke) and read leases (take,
// release, upgrade).
func (g *replayGen) leaseCmd() *metapb.Command {
	s := g.mount()
	if g.chance(0.2) {
		c := mkdirCmd(g.dir(), fmt.Sprint("d", g.pick(4)))
		c.GetMkdir().Lease, c.LeaseSession = true, s
		return c
	}
	return &metapb.Command{LeaseSession: s, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
		Session: s, Dir: g.dir(), Mode: uint32(1 + g.pick(7))}}}
}

// compact rewrites a random file's block as the compactor would.
func (g *replayGen) compact() *metapb.Command {
	ino, block := g.file(), uint64(g.pick(2))
	ss, lo, hi, ok := g.live.ns.Compactable(ino, block)
	if !ok || hi <= lo {
		ss, lo, hi = []namespace.Slice{{Len: 10, Object: g.knownObject()}}, 0, 10
	}
	op := &metapb.CompactOp{Ino: ino, Block: block, Off: lo, Len: hi - lo, GcDelayNs: int64(g.pick(3) * 50)}
	for _, s := range ss {
		op.Expect = append(op.Expect, &metapb.BlockWrite{Block: block, Off: s.Off, Len: s.Len, Object: s.Object, ObjOff: s.ObjOff})
	}
	id := g.object()
	op.Object = g.record(id, int64(hi-lo))
	return &metapb.Command{Op: &metapb.Command_Compact{Compact: op}}
}

// entry makes one log entry: commands on their own (the leader's), or a
// mount's batch written behind, exactly-once, maybe a retry of an earlier
// one.
func (g *replayGen) entry() *metapb.Batch {
	g.now += int64(1 + g.pick(40))
	b := &metapb.Batch{}
	for range 1 + g.pick(3) {
		if len(g.sent) > 0 && g.chance(0.04) {
			c := proto.Clone(g.sent[g.pick(len(g.sent))]).(*metapb.Command)
			c.Now = g.now
			b.Commands = append(b.Commands, c)
			continue
		}
		var c *metapb.Command
		if g.chance(0.4) {
			m := &metapb.MultiOp{ErrorsOnly: g.chance(0.7)}
			for range 1 + g.pick(6) {
				m.Commands = append(m.Commands, g.command())
			}
			c = &metapb.Command{Op: &metapb.Command_Multi{Multi: m}}
		} else {
			c = g.command()
		}
		c.Now = g.now
		if g.leases && g.chance(0.5) {
			c.LeaseSession = g.mount() // written behind under its leases
		}
		if g.chance(0.6) {
			s := g.mount()
			g.seq[s]++
			c.Session, c.Seq = s, g.seq[s]
			g.sent = append(g.sent, c)
		}
		b.Commands = append(b.Commands, c)
	}
	return b
}

// applyEntry applies b to f as Raft does.
func applyEntry(t *testing.T, f *FSM, index uint64, data []byte) []*metapb.Result {
	t.Helper()
	out, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: data}).([]*metapb.Result)
	if !ok {
		t.Fatalf("entry %d: Apply answered %T", index, out)
	}
	return out
}

// derived renders the state not in snapshots that decides what later
// commands do: per object, whether it is set for GC, in the heal queue,
// waiting for pack commits, and how many files reference it; the shards
// per store; the files of write-leased directories and the children of
// read-leased ones.
func derived(f *FSM) string {
	ids := slices.Concat(slices.Collect(maps.Keys(f.objects)), f.gc, slices.Collect(maps.Keys(f.packs)),
		slices.Collect(maps.Keys(f.gcQueued)), slices.Collect(maps.Keys(f.gcLater)))
	slices.Sort(ids)
	var b strings.Builder
	for _, id := range slices.Compact(ids) {
		_, heal := f.heal[id]
		fmt.Fprintf(&b, "%d:gc=%v,heal=%v,pack=%v,files=%d ", id, f.gcQueued[id], heal, f.packs[id], f.ns.ObjectRefs(id))
	}
	shards := map[string]int64{}
	for i, n := range f.onStore {
		if n != 0 {
			shards[f.storeIDs[i]] = n // store indexes differ after a restore
		}
	}
	fmt.Fprint(&b, "\nshards ", shards, "\nwrite-leased files ", sortedLists(f.wkids.childOf),
		"\nread-leased children ", sortedLists(f.reads.childOf))
	return b.String()
}

// replayMatches runs one seed; false when it failed.
func replayMatches(t *testing.T, seed int64, steps int, leases bool) bool {
	t.Helper()
	g := &replayGen{r: rand.New(rand.NewSource(seed)), live: NewFSM(), now: 1000, nextObj: 1000,
		seq: map[uint64]uint64{}, dirs: []uint64{namespace.RootIno}, leases: leases}
	restarted := NewFSM() // restores from its own snapshots now and then
	var log [][]byte
	apply := func(b *metapb.Batch) {
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		g.index++
		log = append(log, data)
		applyEntry(t, g.live, g.index, data)
		applyEntry(t, restarted, g.index, data)
		g.learn(b.Commands)
		for _, id := range g.live.gc {
			if !slices.Contains(g.wasQueued, id) {
				g.wasQueued = append(g.wasQueued, id)
			}
		}
	}
	setup := &metapb.Batch{Commands: []*metapb.Command{
		{Now: g.now, Op: &metapb.Command_Init{Init: &metapb.InitOp{Scheme: "4+2", K: 4, M: 2}}}}}
	for _, s := range replayStores {
		c := storeCmd(s, 1<<30)
		c.Now = g.now
		setup.Commands = append(setup.Commands, c)
	}
	for range 3 {
		setup.Commands = append(setup.Commands, &metapb.Command{Now: g.now,
			Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: int64(500 + g.pick(3000))}}})
	}
	apply(setup)

	var fromLive *FSM // restored from the live replica's snapshot
	var fromLiveAt uint64
	for range steps {
		if g.chance(0.05) || fromLive == nil && g.chance(0.03) {
			restarted = restored(t, restarted)
			if fromLive == nil {
				fromLive, fromLiveAt = restored(t, g.live), g.index
			}
			if !sameReplicas(t, g.live, restarted, fromLive, fromLiveAt) {
				t.Errorf("seed %d: restored at entry %d", seed, g.index)
				return false
			}
		}
		b := g.entry()
		apply(b)
		if fromLive != nil {
			applyEntry(t, fromLive, g.index, log[g.index-1])
		}
		if !sameReplicas(t, g.live, restarted, fromLive, fromLiveAt) {
			t.Errorf("seed %d, after entry %d: %v", seed, g.index, b)
			return false
		}
	}
	again := NewFSM() // applies the whole log again
	for i, data := range log {
		applyEntry(t, again, uint64(i+1), data)
	}
	if !sameReplicas(t, g.live, again, nil, 0) {
		t.Errorf("seed %d: the same log applied again", seed)
		return false
	}
	return true
}

// sameReplicas reports whether restarted and fromLive (restored from
// live's snapshot at index at), unless nil, are where live is, in the same
// state, with the same state derived from it.
func sameReplicas(t *testing.T, live, restarted, fromLive *FSM, at uint64) bool {
	t.Helper()
	idx, want, err := live.AppliedDigest()
	if err != nil {
		t.Fatal(err)
	}
	wantDerived := derived(live)
	for _, r := range []struct {
		name string
		f    *FSM
	}{{"the replica restarted from its snapshots", restarted}, {fmt.Sprint("the replica restored at ", at), fromLive}} {
		if r.f == nil {
			continue
		}
		i, d, err := r.f.AppliedDigest()
		switch {
		case err != nil:
			t.Fatal(err)
		case i != idx:
			t.Errorf("%s is at index %d, the live one at %d", r.name, i, idx)
		case derived(r.f) != wantDerived:
			t.Errorf("%s differs in what it derives from its state:\n got %s\nwant %s", r.name, derived(r.f), wantDerived)
		case d != want:
			t.Errorf("%s holds a different state", r.name)
		default:
			continue
		}
		return false
	}
	return true
}

// learn notes the directories and files an entry's creates made.
func (g *replayGen) learn(cmds []*metapb.Command) {
	for _, c := range cmds {
		var dir uint64
		var name string
		switch op := c.Op.(type) {
		case *metapb.Command_Multi:
			g.learn(op.Multi.Commands)
			continue
		case *metapb.Command_Create:
			dir, name = op.Create.Parent, op.Create.Name
		case *metapb.Command_Mkdir:
			dir, name = op.Mkdir.Parent, op.Mkdir.Name
		default:
			continue
		}
		a, e := g.live.ns.Lookup(dir, name)
		switch {
		case e != 0:
		case a.Type == namespace.TypeDir && !slices.Contains(g.dirs, a.Ino):
			g.dirs = append(g.dirs, a.Ino)
		case a.Type == namespace.TypeFile && !slices.Contains(g.files, a.Ino):
			g.files = append(g.files, a.Ino)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sortedLists renders m with its keys and lists sorted.
func sortedLists(m map[uint64][]uint64) string {
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s += fmt.Sprint(k, slices.Sorted(slices.Values(m[k])), " ")
	}
	return s
}

// TestStatusDigestAtItsIndex: a member's status gives its digest with the
// index of the state it digested. raft counts an entry applied once it is
// handed to the state machine, and entries may be applied while the status
// is made: a member that had not applied an entry yet reported its index
// with the state before it, which looked like two members holding
// different states at one index (TestRollingRestart).
func TestStatusDigestAtItsIndex(t *testing.T) {
	g := newTestGroup(t, 3)
	l := g.leader(t)
	srvs := g.servers(t)
	slow := (l + 1) % 3
	ctx := context.Background()
	mkdir := func(name string) {
		if r, err := srvs[l].Apply(ctx, mkdirCmd(namespace.RootIno, name)); err != nil || r.Errno != 0 {
			t.Fatalf("mkdir %s: %v %v", name, r, err)
		}
	}
	status := func(i int) *metapb.StatusResp {
		st, err := srvs[i].Status(ctx, &metapb.StatusReq{Digest: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	mkdir("a")
	waitFor(t, "the slow member to apply the first entry", 5*time.Second, func() bool {
		st := status(slow)
		return st.AppliedIndex > 0 && st.Digest == status(l).Digest
	})
	release := holdApplies(t, g.fsms[slow])
	mkdir("b")
	last := g.nodes[l].raft.AppliedIndex()
	waitFor(t, "the slow member's raft to hand the entry to its state machine", 5*time.Second, func() bool {
		return g.nodes[slow].raft.AppliedIndex() >= last
	})
	lead, lag := status(l), status(slow)
	if lag.AppliedIndex >= lead.AppliedIndex {
		t.Errorf("a member whose state machine has not applied entry %d reports index %d (digest %.12s, the leader's %.12s)",
			lead.AppliedIndex, lag.AppliedIndex, lag.Digest, lead.Digest)
	}
	release()
	waitFor(t, "the slow member at the leader's index", 5*time.Second, func() bool {
		return status(slow).AppliedIndex >= lead.AppliedIndex
	})
	if st := status(slow); st.AppliedIndex != lead.AppliedIndex || st.Digest != lead.Digest {
		t.Errorf("caught up: index %d digest %.12s, the leader's %d %.12s", st.AppliedIndex, st.Digest, lead.AppliedIndex, lead.Digest)
	}
}
