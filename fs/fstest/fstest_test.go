package fstest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/fs"
	"github.com/ecfs/ecfs/fs/fstest"
	"github.com/ecfs/ecfs/store"
	"google.golang.org/protobuf/proto"
)

var (
	_ fs.Meta    = (*fstest.Meta)(nil)
	_ fs.Objects = (*fstest.Objects)(nil)
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mkdir(parent uint64, name string) *metapb.Command {
	return &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: parent, Name: name, Mode: 0o755}}}
}

func TestSchemeAndStores(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 6)
	if sc := svc.FSM().Scheme(); sc == nil || sc.Scheme != "4+2" || sc.K != 4 || sc.M != 2 {
		t.Fatalf("scheme %v", sc)
	}
	stores := svc.FSM().Stores()
	if len(stores) != 6 {
		t.Fatalf("%d stores, want 6", len(stores))
	}
	hosts := map[string]bool{}
	for _, st := range stores {
		hosts[st.Host] = true
		if st.State != "up" {
			t.Errorf("store %s is %s", st.Id, st.State)
		}
	}
	if len(hosts) != 6 {
		t.Errorf("hosts %v, want 6 distinct", hosts)
	}
}

// TestExactlyOnce: a command sent again with the Session and Seq the first
// call gave it (its answer was lost) is not applied again and gets the
// first answer; with Seq cleared it is a new command.
func TestExactlyOnce(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 6)
	m := svc.Client()
	ctx := testCtx(t)
	lose := true
	var mu sync.Mutex
	m.FailApply(func(cmd *metapb.Command) fstest.Fault {
		mu.Lock()
		defer mu.Unlock()
		if cmd.GetMkdir() != nil && lose {
			lose = false
			return fstest.Fault{AnswerLost: true}
		}
		return fstest.Fault{}
	})
	cmd := mkdir(namespace.RootIno, "d")
	if _, err := m.Apply(ctx, cmd); !errors.Is(err, fstest.ErrInjected) {
		t.Fatalf("first send: %v, want the injected loss", err)
	}
	if cmd.Session == 0 || cmd.Seq == 0 {
		t.Fatalf("the command has no identity: session %d seq %d", cmd.Session, cmd.Seq)
	}
	// It was applied.
	r := svc.FSM().Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "d"}}})
	if r.Errno != 0 {
		t.Fatalf("lookup after the lost answer: errno %d", r.Errno)
	}
	first := r.Attr
	res, err := m.Apply(ctx, cmd)
	if err != nil || res.Errno != 0 || !proto.Equal(res.Attr, first) || !res.Created {
		t.Fatalf("resend: %v, %v; want the first answer (created %v)", res, err, first)
	}
	if m.Applies() != 2 {
		t.Errorf("%d applies counted, want 2", m.Applies())
	}
	// A new command (Seq cleared) is applied: EEXIST.
	cmd.Seq = 0
	res, err = m.Apply(ctx, cmd)
	if err != nil || syscall.Errno(res.Errno) != syscall.EEXIST {
		t.Fatalf("new command: %v, %v; want EEXIST", res, err)
	}
	// Another client's identity is another: its first command is new.
	other := svc.Client()
	res, err = other.Apply(ctx, mkdir(namespace.RootIno, "d"))
	if err != nil || syscall.Errno(res.Errno) != syscall.EEXIST {
		t.Fatalf("other client: %v, %v; want EEXIST", res, err)
	}
}

// TestFaults: a request lost on the way is not applied; a delayed call
// honours its context.
func TestFaults(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 6)
	m := svc.Client()
	ctx := testCtx(t)
	lost := errors.New("lost")
	m.FailApply(func(*metapb.Command) fstest.Fault { return fstest.Fault{Err: lost} })
	if _, err := m.Apply(ctx, mkdir(namespace.RootIno, "x")); !errors.Is(err, lost) {
		t.Fatalf("apply: %v, want %v", err, lost)
	}
	r := svc.FSM().Read(&metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: namespace.RootIno, Name: "x"}}})
	if syscall.Errno(r.Errno) != syscall.ENOENT {
		t.Fatalf("a lost request was applied: errno %d", r.Errno)
	}
	m.FailApply(func(*metapb.Command) fstest.Fault { return fstest.Fault{Delay: time.Hour} })
	dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := m.Apply(dctx, mkdir(namespace.RootIno, "x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delayed apply: %v, want the deadline", err)
	}
	m.FailApply(nil)
	if r, err := m.Apply(ctx, mkdir(namespace.RootIno, "x")); err != nil || r.Errno != 0 {
		t.Fatalf("apply after the hook went: %v, %v", r, err)
	}
	m.FailRead(func(*metapb.ReadReq) fstest.Fault { return fstest.Fault{Err: lost} })
	if _, err := m.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Statfs{Statfs: &metapb.StatfsReq{}}}); !errors.Is(err, lost) {
		t.Fatalf("read: %v, want %v", err, lost)
	}
	if m.Reads() != 1 {
		t.Errorf("%d reads counted, want 1", m.Reads())
	}
}

// TestRevokesLongPoll: a RevokesReq with WaitMs waits until another
// session's command revokes the session's lease, and ends with its
// context.
func TestRevokesLongPoll(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 6)
	m1, m2 := svc.Client(), svc.Client()
	ctx := testCtx(t)
	s1, _, err := m1.OpenSession(ctx, "one", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := m2.OpenSession(ctx, "two", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Mount one makes d and is granted its lease.
	mk := mkdir(namespace.RootIno, "d")
	mk.LeaseSession = s1
	r, err := m1.Apply(ctx, mk)
	if err != nil || r.Errno != 0 {
		t.Fatalf("mkdir: %v, %v", r, err)
	}
	d := r.Attr.Ino
	lease, err := m1.Apply(ctx, &metapb.Command{LeaseSession: s1, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: s1, Dir: d, Mode: 1}}})
	if err != nil || lease.Errno != 0 {
		t.Fatalf("lease: %v, %v", lease, err)
	}
	poll := func(ctx context.Context) (*metapb.ReadResp, error) {
		return m1.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Revokes{Revokes: &metapb.RevokesReq{Session: s1, WaitMs: 30000}}})
	}
	// Nothing revoked: the poll waits until its context ends.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := poll(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("poll with nothing revoked: %v, want the deadline", err)
	}
	type answer struct {
		r   *metapb.ReadResp
		err error
	}
	got := make(chan answer, 1)
	go func() { r, err := poll(ctx); got <- answer{r, err} }()
	// Mount two looks into d: the service refuses (leased) and revokes.
	rd, err := m2.Read(ctx, &metapb.ReadReq{LeaseSession: s2, Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d}}})
	if err != nil || !rd.Leased {
		t.Fatalf("readdir by the other mount: %v, %v; want refused as leased", rd, err)
	}
	if _, err := m2.Apply(ctx, &metapb.Command{LeaseSession: s2, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: s2, Dir: d, Mode: 3}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.err != nil || !slices.Contains(a.r.Dirs, d) {
			t.Fatalf("poll: %v, %v; want directory %d revoked", a.r, a.err, d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long poll did not wake at the revocation")
	}
}

// TestPlace: every object's k+m shards on distinct stores, the start
// rotating with the id; the scheme and inline threshold answered.
func TestPlace(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 8)
	m := svc.Client()
	r, err := m.Place(testCtx(t), 16)
	if err != nil {
		t.Fatal(err)
	}
	if r.Scheme != "4+2" || r.InlineMax != uint32(svc.FSM().InlineMax()) || r.InlineMax == 0 {
		t.Fatalf("scheme %q inline %d", r.Scheme, r.InlineMax)
	}
	if len(r.Placements) != 16 {
		t.Fatalf("%d placements, want 16", len(r.Placements))
	}
	firsts := map[string]bool{}
	seen := map[uint64]bool{}
	for _, p := range r.Placements {
		if seen[p.Object] {
			t.Fatalf("object %d placed twice", p.Object)
		}
		seen[p.Object] = true
		if len(p.Addrs) != 6 || len(p.StoreIds) != 6 {
			t.Fatalf("placement %v: want 6 stores", p)
		}
		if a := slices.Compact(slices.Sorted(slices.Values(p.Addrs))); len(a) != 6 || a[0] == "" {
			t.Fatalf("placement of object %d: %q, want 6 distinct stores", p.Object, p.Addrs)
		}
		firsts[p.Addrs[0]] = true
	}
	if len(firsts) != 8 {
		t.Errorf("first shards on %d stores, want the rotation over all 8", len(firsts))
	}
	r2, err := m.Place(testCtx(t), 0)
	if err != nil || len(r2.Placements) != 1 || seen[r2.Placements[0].Object] {
		t.Fatalf("place 0: %v, %v; want one new id", r2, err)
	}
}

// TestExpireSessions: a session not renewed within its TTL is ended by
// ExpireSessions; a renewed one is not.
func TestExpireSessions(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 6)
	m := svc.Client()
	ctx := testCtx(t)
	const ttl = 100 * time.Millisecond
	dead, _, err := m.OpenSession(ctx, "dead", ttl)
	if err != nil {
		t.Fatal(err)
	}
	live, _, err := m.OpenSession(ctx, "live", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ended := svc.ExpireSessions(); slices.Contains(ended, dead) {
			if slices.Contains(ended, live) {
				t.Fatalf("ended %v: the live session too", ended)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session was not expired")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if _, err := m.Renew(ctx, dead); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("renew of the expired session: %v, want ESTALE", err)
	}
	if _, err := m.Renew(ctx, live); err != nil {
		t.Fatalf("renew of the live session: %v", err)
	}
}

// TestRunExpiry: the background loop ends a session that stops renewing.
func TestRunExpiry(t *testing.T) {
	svc := fstest.NewMeta(t, "4+2", 6)
	svc.RunExpiry(10 * time.Millisecond)
	m := svc.Client()
	ctx := testCtx(t)
	id, _, err := m.OpenSession(ctx, "dead", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := m.Renew(ctx, id)
		if errors.Is(err, syscall.ESTALE) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("renew: %v; want ESTALE once expired", err)
		}
		// Not renewing is the point: sleep past the TTL before looking again.
		time.Sleep(200 * time.Millisecond)
	}
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7+i>>9) ^ seed
	}
	return p
}

func testObject(t *testing.T, id uint64) store.Object {
	sc, err := codec.ParseScheme("4+2")
	if err != nil {
		t.Fatal(err)
	}
	return store.Object{ID: store.ObjectID(id), Scheme: sc, Placement: []string{"store-0", "store-1", "store-2", "store-3", "store-4", "store-5"}}
}

func TestObjectsRoundTrip(t *testing.T) {
	o := fstest.NewObjects()
	ctx := testCtx(t)
	obj := testObject(t, 7)
	data := pattern(3<<20+5, 1)
	res, err := o.Write(ctx, obj, data, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Index != i || r.Addr != obj.Placement[i] || r.Err != nil {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	obj.Length = int64(len(data))
	for _, tc := range []struct {
		off  int64
		n    int
		want int
	}{{0, len(data), len(data)}, {1 << 20, 100, 100}, {int64(len(data)) - 10, 100, 10}, {int64(len(data)), 10, 0}} {
		p := make([]byte, tc.n)
		n, bad, err := o.ReadAt(ctx, obj, p, tc.off)
		if err != nil || len(bad) != 0 || n != tc.want || !bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]) {
			t.Fatalf("read %d at %d: %d, %v, %v; want %d bytes", tc.n, tc.off, n, bad, err, tc.want)
		}
	}
	if _, _, err := o.ReadAt(ctx, obj, make([]byte, 1), obj.Length+1); !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("read past the end: %v", err)
	}
	if o.Writes() != 1 || o.Reads() != 5 {
		t.Errorf("counted %d writes, %d reads; want 1, 5", o.Writes(), o.Reads())
	}
	// A placement that names other stores (stale) finds no shard.
	moved := obj
	moved.Placement = append(slices.Clone(obj.Placement[1:]), obj.Placement[0])
	_, bad, err := o.ReadAt(ctx, moved, make([]byte, 10), 0)
	if !errors.Is(err, store.ErrDataLoss) || len(bad) != 6 || !errors.Is(bad[0].Err, store.ErrNotFound) {
		t.Fatalf("read through a stale placement: %v, %v", bad, err)
	}
	if !o.Delete(7) {
		t.Fatal("delete: not there")
	}
	_, bad, err = o.ReadAt(ctx, obj, make([]byte, 10), 0)
	if !errors.Is(err, store.ErrDataLoss) || len(bad) == 0 || !errors.Is(bad[0].Err, store.ErrNotFound) {
		t.Fatalf("read of a deleted object: %v, %v", bad, err)
	}
}

func TestObjectsWriteFaults(t *testing.T) {
	o := fstest.NewObjects()
	ctx := testCtx(t)
	obj := testObject(t, 1)
	data := pattern(1000, 2)

	o.FailWrites(true)
	res, err := o.Write(ctx, obj, data, 0)
	var we *store.WriteError
	if !errors.Is(err, store.ErrWriteQuorum) || !errors.As(err, &we) || len(res) != 6 || res[0].Err == nil {
		t.Fatalf("write with writes failing: %v, %v", res, err)
	}
	if _, ok := o.Data(1); ok {
		t.Fatal("a failed write stored the object")
	}
	o.FailWrites(false)

	// One store down: its shard fails, the write succeeds (quorum 5), and
	// reads of its data shard reconstruct around it.
	o.FailStore("store-1", true)
	res, err = o.Write(ctx, obj, data, 0)
	if err != nil || res[1].Err == nil || !errors.Is(res[1].Err, store.ErrUnavailable) || res[0].Err != nil {
		t.Fatalf("write with store-1 down: %v, %v", res, err)
	}
	o.FailStore("store-1", false)
	obj.Length = int64(len(data))
	p := make([]byte, len(data))
	n, bad, err := o.ReadAt(ctx, obj, p, 0)
	if err != nil || n != len(data) || !bytes.Equal(p, data) {
		t.Fatalf("read: %d, %v", n, err)
	}
	if len(bad) != 1 || bad[0].Index != 1 || !errors.Is(bad[0].Err, store.ErrNotFound) {
		t.Fatalf("bad shards %v, want shard 1 missing", bad)
	}
	// Two stores down: below the quorum of 5.
	o.FailStore("store-2", true)
	o.FailStore("store-3", true)
	if _, err := o.Write(ctx, testObject(t, 2), data, 0); !errors.Is(err, store.ErrWriteQuorum) {
		t.Fatalf("write with two stores down: %v", err)
	}
	// But a quorum of k is met.
	if _, err := o.Write(ctx, testObject(t, 2), data, 4); err != nil {
		t.Fatalf("write with quorum 4: %v", err)
	}
}

// TestObjectsBadShards: reads return the exact bytes while k shards are
// fine, listing the corrupt and missing shards they met; with fewer than k
// they fail.
func TestObjectsBadShards(t *testing.T) {
	o := fstest.NewObjects()
	ctx := testCtx(t)
	obj := testObject(t, 9)
	data := pattern(4<<20, 3)
	if _, err := o.Write(ctx, obj, data, 0); err != nil {
		t.Fatal(err)
	}
	obj.Length = int64(len(data))
	read := func(off int64, n int) ([]string, error) {
		t.Helper()
		p := make([]byte, n)
		got, bad, err := o.ReadAt(ctx, obj, p, off)
		if err == nil && (got != n || !bytes.Equal(p, data[off:off+int64(n)])) {
			t.Fatalf("read %d at %d: %d bytes, not the data", n, off, got)
		}
		var out []string
		for _, b := range bad {
			what := "other"
			switch {
			case errors.Is(b.Err, store.ErrDataLoss):
				what = "corrupt"
			case errors.Is(b.Err, store.ErrNotFound):
				what = "missing"
			}
			out = append(out, fmt.Sprintf("%d@%s %s", b.Index, b.Addr, what))
		}
		return out, err
	}
	if !o.Corrupt(9, 0) {
		t.Fatal("corrupt: no such shard")
	}
	// A read of shard 1's range only does not meet shard 0.
	if bad, err := read(1<<20, 4096); err != nil || len(bad) != 0 {
		t.Fatalf("read of shard 1's range: %v, %v", bad, err)
	}
	if bad, err := read(0, len(data)); err != nil || !slices.Equal(bad, []string{"0@store-0 corrupt"}) {
		t.Fatalf("read with shard 0 corrupt: %v, %v", bad, err)
	}
	o.Lose(9, 1)
	if bad, err := read(0, 4096); err != nil || !slices.Equal(bad, []string{"0@store-0 corrupt", "1@store-1 missing"}) {
		t.Fatalf("read with shards 0 and 1 bad: %v, %v", bad, err)
	}
	o.Lose(9, 2)
	bad, err := read(0, 4096)
	var re *store.ReadError
	if !errors.Is(err, store.ErrDataLoss) || !errors.As(err, &re) || re.Good != 3 {
		t.Fatalf("read with 3 of 6 shards bad: %v, want a ReadError", err)
	}
	if !slices.Equal(bad, []string{"0@store-0 corrupt", "1@store-1 missing", "2@store-2 missing"}) {
		t.Fatalf("bad shards %v", bad)
	}
	// The range of shard 3 alone still reads directly.
	if bad, err := read(3<<20, 1000); err != nil || len(bad) != 0 {
		t.Fatalf("read of shard 3's range: %v, %v", bad, err)
	}
}
