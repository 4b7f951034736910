package fs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/protobuf/proto"
)

// TestFirstChangeWriteLeases: the first change a mount makes in a
// directory it holds a read lease of write-leases the directory before
// the change, which is then written behind with every one after it
// (through the service, it would go there and release the copy first;
// the lease came after). Another mount then sees every change. When a
// third mount reads the directory too, the lease is not granted, and the
// change goes through the service, which has that mount drop its copy
// first.
func TestFirstChangeWriteLeases(t *testing.T) {
	t.Parallel()
	e, a, b, d, files, cm, _ := readLeased(t, 20)
	ctx := testCtx(t)
	want, errno := b.GetAttr(ctx, files[5])
	mustErrno(t, "b getattr f5", errno, 0)
	cm.leaseModes()
	mustErrno(t, "a unlink f0", a.Unlink(ctx, d, "f0"), 0)
	if l := a.leases.get(d); l == nil || !l.held.Load() {
		t.Fatal("a does not write-lease d at its first change there")
	}
	if got := cm.leaseModes(); !slices.Contains(got, 4) || slices.Contains(got, 7) {
		t.Fatalf("lease calls at the first change: modes %v, want a write lease (4)", got)
	}
	if a.reads.count() != 0 {
		t.Fatal("a still answers from its read copy of d")
	}
	applies := cm.applies.Load()
	for i := 1; i < 10; i++ {
		name := fmt.Sprint("f", i)
		at, errno := a.Lookup(ctx, d, name)
		mustErrno(t, "a lookup "+name, errno, 0)
		if i == 5 && (at.Ino != want.Ino || at.Mode != want.Mode || at.Size != want.Size || at.Mtime != want.Mtime) {
			t.Fatalf("a sees f5 as %v under its write lease, b as %v", at, want)
		}
		mustErrno(t, "a unlink "+name, a.Unlink(ctx, d, name), 0)
	}
	if a.view.localAttr(files[15]) == nil {
		t.Fatal("f15 is not a's own under the write lease")
	}
	if n := cm.applies.Load() - applies; n > 3 {
		t.Fatalf("a sent %d changes to remove 9 files of its leased directory (written behind: the journal's batches only)", n)
	}
	mustCreate(t, a, d, "new")
	// b's listing revokes a's lease and sees a's changes.
	names := listNames(t, b, d)
	for i := range 20 {
		if got := names[fmt.Sprint("f", i)]; got != (i >= 10) {
			t.Fatalf("b lists f%d: %v", i, got)
		}
	}
	if !names["new"] {
		t.Fatal("b does not list the file a made")
	}

	// Two readers: a's lease is not granted, its change goes through the
	// service, and c sees it at once.
	c := e.mount("c", nil, nil)
	for _, m := range []*FS{a, c} {
		waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
			if _, _, errno := m.ReadDir(ctx, d, 0, 1000); errno != 0 {
				t.Fatalf("readdir: %v", errno)
			}
			return m.reads.count() == 1
		})
	}
	mustErrno(t, "a unlink f10", a.Unlink(ctx, d, "f10"), 0)
	if l := a.leases.get(d); l != nil && l.held.Load() {
		t.Fatal("a write-leases d while c read-leased it")
	}
	if _, errno := c.Lookup(ctx, d, "f10"); errno != syscall.ENOENT {
		t.Fatalf("c looks up f10 after a removed it: %v", errno)
	}
}

// TestRevokedLeaseTakesIdleOnesAlong: when another mount revokes a lease
// that idles, the holder gives back with it the leases of the directories
// it made under it that idle as long, at once and in one call to the
// service: the other mount going through that tree then waits for no
// revocation in the directories that follow. Its other leases stay: the
// one it is using, another tree's, and one under the revoked directory
// that it used after it last used that one.
func TestRevokedLeaseTakesIdleOnesAlong(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b, bm := e.countedMount("b")
	ctx := testCtx(t)
	top := mustMkdir(t, a, RootIno, "top").Ino
	var dirs []uint64
	for i := range 10 {
		parent := top
		if i >= 5 {
			parent = dirs[i-5] // deeper: top/d0/d5, ...
		}
		d := mustMkdir(t, a, parent, fmt.Sprint("d", i)).Ino
		mustCreate(t, a, d, "f")
		dirs = append(dirs, d)
	}
	// Two levels down (b's read lease of top would revoke a's leases of
	// top's children, whatever they did).
	x := mustMkdir(t, a, top, "x").Ino
	y := mustMkdir(t, a, top, "y").Ino // top's last use
	later := mustMkdir(t, a, x, "later").Ino
	busy := mustMkdir(t, a, y, "busy").Ino
	if _, errno := writeSmall(t, a, later, "h", []byte("h"), true); errno != 0 {
		t.Fatal(errno)
	}
	other := mustMkdir(t, a, RootIno, "other").Ino
	otherSub := mustMkdir(t, a, other, "sub").Ino
	if _, errno := writeSmall(t, a, other, "o", []byte("o"), true); errno != 0 { // other's last use
		t.Fatal(errno)
	}
	for _, d := range append(dirs, top, busy, later, other, otherSub) {
		if a.leases.get(d) == nil {
			t.Fatal("a does not lease a directory it made")
		}
	}
	// Idle: every lease but busy's, which is used just before b's listing.
	a.leases.idleWith.Store(int64(500 * time.Millisecond))
	time.Sleep(600 * time.Millisecond) // the idle time itself is what is tested
	if _, errno := writeSmall(t, a, busy, "g", []byte("g"), true); errno != 0 {
		t.Fatal(errno)
	}
	cm.leaseModes()
	if _, _, errno := b.ReadDir(ctx, top, 0, 100); errno != 0 {
		t.Fatal(errno)
	}
	waitUntil(t, "a to give back the idle leases under top", 10*time.Second, func() bool {
		for _, d := range append(dirs, top) {
			if a.leases.get(d) != nil {
				return false
			}
		}
		return true
	})
	for name, d := range map[string]uint64{"the one it was using": busy, "another tree's": other, "another tree's child": otherSub,
		"the one used after top": later} {
		if a.leases.get(d) == nil {
			t.Fatalf("a gave back %s lease", name)
		}
	}
	if modes := cm.leaseModes(); slices.Contains(modes, 2) {
		t.Fatalf("a released leases one by one: %v", modes)
	}
	refused := bm.refused.Load()
	for _, d := range dirs {
		if names := listNames(t, b, d); !names["f"] {
			t.Fatalf("b lists %v in a directory a made", names)
		}
	}
	if n := bm.refused.Load() - refused; n != 0 {
		t.Fatalf("b was refused %d times for leases in directories a no longer used", n)
	}

	// b's read lease of the root revokes a's lease of other, only because
	// the root lists it: other's subtree stays a's.
	waitUntil(t, "b's read lease of the root", 10*time.Second, func() bool {
		if _, _, errno := b.ReadDir(ctx, RootIno, 0, 100); errno != 0 {
			t.Fatal(errno)
		}
		return a.leases.get(other) == nil
	})
	if a.leases.get(otherSub) == nil {
		t.Fatal("a gave back the leases under a directory revoked only for its parent's read lease")
	}
}

// leaseGate holds the mount's lease requests of one mode (4: write
// leases, 6: read-lease releases) while it is shut.
type leaseGate struct {
	Meta
	gate
	mode    uint32
	waiting chan struct{} // closed at the first request held
	once    sync.Once
}

func (m *leaseGate) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if l := cmd.GetLease(); l != nil && l.Mode == m.mode {
		m.once.Do(func() { close(m.waiting) })
		if err := m.pass(ctx); err != nil {
			return nil, err
		}
	}
	return m.Meta.Apply(ctx, cmd)
}

// TestNoReadCopyBesideWriteLease: while the mount write-leases a
// directory, no read copy of it is taken: one loaded then would answer
// listings without what the mount then writes behind there.
func TestNoReadCopyBesideWriteLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ug := &leaseGate{mode: 4, waiting: make(chan struct{})}
	ug.shut()
	a := e.mount("a", func(c *Config) { ug.Meta = c.Meta; c.Meta = ug }, nil)
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	for i := range 4 {
		mustCreate(t, b, d, fmt.Sprint("f", i))
	}
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 1000)
		return a.reads.count() == 1
	})
	done := make(chan syscall.Errno, 1)
	go func() { done <- a.Unlink(ctx, d, "f0") }()
	<-ug.waiting
	// A listing's (or lookups') read lease, taken while the lease waits.
	if held, _ := a.reads.take(d); held {
		t.Error("a took a copy of d while write-leasing it")
	}
	ug.open()
	mustErrno(t, "a unlinks f0", <-done, 0)
	if l := a.leases.get(d); l == nil || !l.held.Load() {
		t.Fatal("a does not write-lease d after its first change")
	}
	if n := a.reads.count(); n != 0 {
		t.Fatalf("a holds %d read copies beside its write lease of d", n)
	}
	// b's change gets a's lease back; a then lists it.
	mustCreate(t, b, d, "new")
	if names := listNames(t, a, d); !names["new"] || names["f0"] {
		t.Fatalf("a lists %v after b's create", names)
	}
}

// mkdirHook runs after once, when the first mkdir through the service that
// leases the new directory has been applied and before the mount hears of
// it (after is read only for such a mkdir: set it before making one).
type mkdirHook struct {
	Meta
	after func(dir uint64)
	once  sync.Once
}

func (h *mkdirHook) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	r, err := h.Meta.Apply(ctx, cmd)
	if m := cmd.GetMkdir(); m != nil && m.Lease && err == nil && r.GetErrno() == 0 && r.GetAttr() != nil {
		if h.after != nil {
			h.once.Do(func() { h.after(r.GetAttr().GetIno()) })
		}
	}
	return r, err
}

// TestMkdirLeaseRevokedBeforeListed: a directory made through the service
// is leased to its maker by the mkdir; when another mount makes a name in
// it before the maker has listed that lease (its give-back found nothing
// to end), the maker does not list it afterwards, and sees the name.
// (Found by TestFaultsProcesses: "no such file" for a name another mount
// had made.)
func TestMkdirLeaseRevokedBeforeListed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.mount("b", nil, nil)
	hook := &mkdirHook{}
	a := e.mount("a", func(c *Config) { hook.Meta = c.Meta; c.Meta = hook }, nil)
	p := mustMkdir(t, b, RootIno, "p").Ino // b's: a makes d in it through the service
	// a read-leases another directory, so that it watches for
	// revocations (making d in p drops a copy of the root).
	r := mustMkdir(t, b, RootIno, "r").Ino
	waitUntil(t, "a read lease of r", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(testCtx(t), r, 0, 1000)
		return a.reads.holds(r)
	})
	made := make(chan struct{})
	hook.after = func(dir uint64) {
		// b's create revokes a's lease of dir at once; a gives it back
		// while its mkdir's answer is still on the way (a's journal
		// drains once the hook returns).
		go func() {
			defer close(made)
			if _, errno := writeSmall(t, b, dir, "x", []byte("made by b"), true); errno != 0 {
				t.Errorf("b's create in the new directory: %v", errno)
			}
		}()
		// Not waitUntil: this is not the test's goroutine.
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			a.leases.lmu.Lock()
			returning := a.leases.returning[dir] > 0
			a.leases.lmu.Unlock()
			if returning {
				return
			}
			if time.Now().After(end) {
				t.Error("a did not start giving d back within 10 s")
				return
			}
		}
	}
	d := mustMkdir(t, a, p, "d").Ino
	<-made
	if l := a.leases.get(d); l != nil && l.held.Load() {
		t.Error("a lists a lease of d that the service took back before a knew of it")
	}
	x, errno := a.Lookup(testCtx(t), d, "x")
	if errno != 0 {
		t.Fatalf("a looks up the name b made in d: %v", errno)
	}
	openRead(t, a, x.Ino, []byte("made by b"))
}

// TestSpoiledReadLoadReleasedBeforeRetaken: a read lease granted for a
// copy that is not kept (the load was spoiled) is released; until the
// service has that release, no lease of the directory is taken: the
// service would grant the one the session still holds, and the release
// end it while the new copy answers (found by the fault suite: a listing
// still had a name another mount had removed).
func TestSpoiledReadLoadReleasedBeforeRetaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rg := &leaseGate{mode: 6, waiting: make(chan struct{})}
	rg.shut()
	t.Cleanup(rg.open) // a failure leaves no call held up
	a := e.mount("a", func(c *Config) { rg.Meta = c.Meta; c.Meta = rg }, nil)
	b := e.mount("b", func(c *Config) { c.NoWriteBehind = true }, nil) // leases nothing
	d := mustMkdir(t, b, RootIno, "d").Ino
	mustCreate(t, b, d, "f")
	r := a.reads
	sess := a.pipe.session()
	r.mu.Lock()
	load := r.reserve(d)
	r.mu.Unlock()
	if load == nil {
		t.Fatal("no load of d could be reserved")
	}
	if granted, _ := r.copier.grant(sess, []uint64{d}); !granted[0] {
		t.Fatal("a read lease of d not granted")
	}
	cp := r.copier.list(d, sess)
	r.mu.Lock()
	load.spoiled = true
	r.mu.Unlock()
	done := make(chan bool, 1)
	go func() { done <- r.finish(d, load, cp, true, false) }()
	<-rg.waiting
	if held, _ := r.take(d); held {
		t.Fatal("a took a read lease of d while the release of the one it did not keep was on its way")
	}
	rg.open()
	if <-done {
		t.Fatal("a kept the copy of a spoiled load")
	}
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		held, _ := r.take(d)
		return held
	})
	mustErrno(t, "b unlinks f", b.Unlink(testCtx(t), d, "f"), 0)
	if names := listNames(t, a, d); names["f"] {
		t.Fatalf("a lists %v after b removed f", names)
	}
}

// TestStaleReadCopyNotTakenOver: a read copy handed over to a write
// lease is checked against the directory's version first (as of the
// grant, whose answer carries it; asked for when an older service's does
// not); one the service no longer backed (here its lease was ended behind
// the mount's back) is not made the write lease's view: the directory is
// listed again.
func TestStaleReadCopyNotTakenOver(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		t.Run(fmt.Sprintf("older service %v", older), func(t *testing.T) {
			e := newEnv(t)
			sm := &stripGrantAttr{strip: older}
			a := e.mount("a", func(c *Config) { sm.Meta = c.Meta; c.Meta = sm }, nil)
			b := e.mount("b", nil, nil)
			ctx := testCtx(t)
			d := mustMkdir(t, b, RootIno, "d").Ino
			for i := range 4 {
				mustCreate(t, b, d, fmt.Sprint("f", i))
			}
			mustReadLease(t, a, d)
			sess := a.pipe.session()
			if _, err := e.client().Apply(ctx, &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
				Session: sess, Dir: d, Mode: 6}}}); err != nil {
				t.Fatal(err)
			}
			mustErrno(t, "b unlinks f1", b.Unlink(ctx, d, "f1"), 0)
			getattrs := sm.getattrs.Load()
			mustErrno(t, "a unlinks f0", a.Unlink(ctx, d, "f0"), 0) // write-leases d
			if l := a.leases.get(d); l == nil || !l.held.Load() {
				t.Fatal("a does not write-lease d at its first change there")
			}
			if n := sm.getattrs.Load() - getattrs; (n > 0) != older {
				t.Fatalf("%d getattrs at the hand-over; want one only if the grant does not say the version", n)
			}
			if _, errno := a.Lookup(ctx, d, "f1"); errno != syscall.ENOENT {
				t.Fatalf("a looks up f1, which b removed: errno %v, want ENOENT", errno)
			}
			if names := listNames(t, a, d); names["f1"] || !names["f2"] {
				t.Fatalf("a lists %v", names)
			}
		})
	}
}

// stripGrantAttr takes the directory's attributes out of lease grants'
// results when strip is set (as an older service answers), and counts
// getattrs.
type stripGrantAttr struct {
	Meta
	strip    bool
	getattrs atomic.Int64
}

func (m *stripGrantAttr) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	r, err := m.Meta.Apply(ctx, cmd)
	if err == nil && m.strip && (cmd.GetLease() != nil || cmd.GetMulti() != nil) {
		r = proto.Clone(r).(*metapb.Result)
		r.Attr = nil
		for _, ir := range r.Results {
			ir.Attr = nil
		}
	}
	return r, err
}

func (m *stripGrantAttr) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	if q.GetGetattr() != nil {
		m.getattrs.Add(1)
	}
	return m.Meta.Read(ctx, q)
}

// lostGrant applies write-lease grants (mode 4) but loses their answers
// while lose is set: the caller hears nothing until its call times out.
type lostGrant struct {
	Meta
	lose atomic.Bool
}

func (m *lostGrant) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	r, err := m.Meta.Apply(ctx, cmd)
	if l := cmd.GetLease(); l != nil && l.Mode == 4 && m.lose.Load() && err == nil {
		<-ctx.Done()
		return nil, fmt.Errorf("injected: the answer to a grant was lost: %w", ctx.Err())
	}
	return r, err
}

// TestLostGrantReleased: a write-lease grant whose answer was lost may
// have been granted; the mount, which goes on without it, releases it, so
// another mount's change there is not refused for a lease nobody uses.
func TestLostGrantReleased(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lg := &lostGrant{}
	a := e.mount("a", func(c *Config) { lg.Meta = c.Meta; c.Meta = lg; c.MetaTimeout = time.Second }, nil)
	b, bm := e.countedMount("b")
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	for i := range 3 {
		mustCreate(t, b, d, fmt.Sprint("f", i))
	}
	mustReadLease(t, a, d)
	lg.lose.Store(true)
	mustErrno(t, "a unlinks f0", a.Unlink(ctx, d, "f0"), 0) // its grant's answer is lost
	if a.leases.get(d) != nil {
		t.Fatal("a holds a write lease whose grant it did not hear of")
	}
	a.reads.wait() // the read lease's release
	refused := bm.refused.Load()
	mustCreate(t, b, d, "new")
	if n := bm.refused.Load() - refused; n != 0 {
		t.Fatalf("b's create was refused %d times, for a lease a does not know it holds", n)
	}
}
