package fs

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/fs/fstest"
)

// readLeased sets up a directory d with files f0..f(n-1) made by mount
// b, and mount a (its calls counted, its kernel recorded) holding a read
// lease of d.
func readLeased(t *testing.T, n int) (e *env, a, b *FS, d uint64, files []uint64, cm *countingMeta, k *recordingKernel) {
	t.Helper()
	e = newEnv(t)
	a, cm = e.countedMount("a")
	b = e.mount("b", nil, nil)
	k = &recordingKernel{}
	a.SetInvalidator(k)
	d = mustMkdir(t, b, RootIno, "d").Ino
	for i := range n {
		files = append(files, mustCreate(t, b, d, fmt.Sprintf("f%d", i)).Ino)
	}
	ctx := testCtx(t)
	// The first listing revokes b's write lease (d is b's: it made it);
	// the next one takes the read lease.
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		if _, _, errno := a.ReadDir(ctx, d, 0, 1000); errno != 0 {
			t.Fatalf("readdir: %v", errno)
		}
		return a.reads.count() == 1
	})
	return
}

// TestReadLeaseServesTreeWithoutService: names, attributes and listings
// of a read-leased directory are answered with no call to the service;
// so is a name that is not there.
func TestReadLeaseServesTreeWithoutService(t *testing.T) {
	t.Parallel()
	_, a, _, d, files, cm, _ := readLeased(t, 20)
	ctx := testCtx(t)
	before := cm.n.Load()
	for i, ino := range files {
		at, errno := a.Lookup(ctx, d, fmt.Sprintf("f%d", i))
		mustErrno(t, "lookup", errno, 0)
		if at.Ino != ino {
			t.Fatalf("lookup f%d: %v", i, at)
		}
		if at, errno := a.GetAttr(ctx, ino); errno != 0 || at.Ino != ino {
			t.Fatalf("getattr f%d: %v %v", i, at, errno)
		}
	}
	if at, errno := a.GetAttr(ctx, d); errno != 0 || at.Ino != d {
		t.Fatalf("getattr of the directory: %v %v", at, errno)
	}
	if _, errno := a.Lookup(ctx, d, "nothing"); errno != syscall.ENOENT {
		t.Fatalf("lookup of a missing name: %v", errno)
	}
	ents, _, errno := a.ReadDir(ctx, d, 0, 1000)
	mustErrno(t, "readdir", errno, 0)
	if len(ents) != len(files) {
		t.Fatalf("readdir: %d entries, want %d", len(ents), len(files))
	}
	page, _, errno := a.ReadDir(ctx, d, ents[9].Cookie, 5)
	mustErrno(t, "readdir page", errno, 0)
	if len(page) != 5 || page[0].Name != ents[10].Name {
		t.Fatalf("readdir after the 10th entry: %v", page)
	}
	if n := cm.n.Load() - before; n != 0 {
		t.Fatalf("%d calls to the service for a read-leased directory", n)
	}
}

// TestReadLeaseSeesOtherMountsChangesAtOnce: each change another mount
// makes in a read-leased directory is seen by the holder as soon as it
// returned, and the holder told its kernel to drop the name before the
// change was applied.
func TestReadLeaseSeesOtherMountsChangesAtOnce(t *testing.T) {
	t.Parallel()
	e, a, b, d, files, _, k := readLeased(t, 4)
	ctx := testCtx(t)
	retake := func() {
		t.Helper()
		waitUntil(t, "the read lease again", 10*time.Second, func() bool {
			_, _, _ = a.ReadDir(ctx, d, 0, 1000)
			return a.reads.count() == 1
		})
	}
	// Looked up (given to the kernel), then changed by b.
	mustLookup := func(name string) *metapb.Attr {
		t.Helper()
		at, errno := a.Lookup(ctx, d, name)
		mustErrno(t, "lookup "+name, errno, 0)
		return at
	}
	mustLookup("f0")
	k.before = func() string {
		r := e.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: files[0]}}})
		return fmt.Sprintf("%o", r.Attr.GetMode())
	}
	if _, errno := b.SetAttr(ctx, files[0], SetAttrIn{Valid: namespace.SetMode, Mode: 0o600}); errno != 0 {
		t.Fatalf("chmod on b: %v", errno)
	}
	if at := mustLookup("f0"); at.Mode != 0o600 {
		t.Fatalf("a sees mode %o after b's chmod", at.Mode)
	}
	k.mu.Lock()
	seen := slices.Clone(k.seen)
	k.before = nil
	k.mu.Unlock()
	if !k.told(fmt.Sprintf("%d/f0", d)) || len(seen) == 0 || seen[0] != "644" {
		t.Fatalf("kernel told %v, seeing modes %v: want f0 dropped while it was still 644", k.entries, seen)
	}

	retake()
	mustCreate(t, b, d, "new")
	mustLookup("new")

	retake()
	mustErrno(t, "unlink on b", b.Unlink(ctx, d, "f1"), 0)
	if _, errno := a.Lookup(ctx, d, "f1"); errno != syscall.ENOENT {
		t.Fatalf("a looks up f1 after b unlinked it: %v", errno)
	}

	retake()
	h, _, errno := b.Open(ctx, files[2], syscall.O_RDWR)
	mustErrno(t, "open on b", errno, 0)
	mustWrite(t, b, files[2], []byte("hello"), 0)
	mustErrno(t, "release", b.Release(ctx, h), 0)
	mustSize(t, a, files[2], 5)

	retake()
	if errno := b.Rename(ctx, d, "f3", d, "g3", 0); errno != 0 {
		t.Fatalf("rename on b: %v", errno)
	}
	if _, errno := a.Lookup(ctx, d, "f3"); errno != syscall.ENOENT {
		t.Fatalf("a looks up f3 after b renamed it: %v", errno)
	}
	mustLookup("g3")
}

// TestReadLeaseOwnChanges: the holder's own changes in the directory are
// seen by itself at once (its copy of what they touch is dropped), and
// its kernel is told to drop what it was given from the copy.
func TestReadLeaseOwnChanges(t *testing.T) {
	t.Parallel()
	_, a, _, d, files, _, k := readLeased(t, 2)
	ctx := testCtx(t)
	for _, name := range []string{"f0", "f1"} {
		_, errno := a.Lookup(ctx, d, name)
		mustErrno(t, "lookup "+name, errno, 0)
	}
	if _, errno := a.SetAttr(ctx, files[0], SetAttrIn{Valid: namespace.SetMode, Mode: 0o640}); errno != 0 {
		t.Fatalf("chmod: %v", errno)
	}
	if at, errno := a.GetAttr(ctx, files[0]); errno != 0 || at.Mode != 0o640 {
		t.Fatalf("getattr after own chmod: %v %v", at, errno)
	}
	mustCreate(t, a, d, "mine")
	ents, _, errno := a.ReadDir(ctx, d, 0, 1000)
	mustErrno(t, "readdir", errno, 0)
	if !slices.ContainsFunc(ents, func(e *metapb.DirEntry) bool { return e.Name == "mine" }) {
		t.Fatalf("own create not listed: %v", ents)
	}
	mustErrno(t, "unlink", a.Unlink(ctx, d, "f1"), 0)
	if _, errno := a.Lookup(ctx, d, "f1"); errno != syscall.ENOENT {
		t.Fatalf("lookup after own unlink: %v", errno)
	}
	a.reads.wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	// What the kernel was given from the copy it may keep past the
	// lease (readKeep): it is told to drop it all the same.
	for _, name := range []string{"f0", "f1"} {
		if !slices.Contains(k.entries, fmt.Sprintf("%d/%s", d, name)) {
			t.Errorf("kernel not told to drop %s (told %v)", name, k.entries)
		}
	}
	if !slices.Contains(k.attrs, files[0]) || !slices.Contains(k.attrs, files[1]) {
		t.Errorf("kernel not told to drop the attributes of %v (told %v)", files, k.attrs)
	}
}

// TestReadLeaseOfDeadMount: a mount that holds a read lease and stops
// answering (no release, no renewal) holds another mount's change up only
// until its session expires; and it stops answering from its copy before
// the service could have let the change through.
func TestReadLeaseOfDeadMount(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	e := newEnv(t)
	e.svc.RunExpiry(100 * time.Millisecond)
	a, ma := faultyMount(t, e, ttl)
	ctx := testCtx(t)
	b := e.mount("b", func(c *Config) { c.SessionTTL = ttl }, nil)
	d := mustMkdir(t, b, RootIno, "d").Ino
	f := mustCreate(t, b, d, "f").Ino
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 1000)
		return a.reads.count() == 1
	})
	dead := func(*metapb.Command) fstest.Fault { return fstest.Fault{Err: fstest.ErrInjected} }
	ma.FailApply(dead)
	ma.FailRead(func(*metapb.ReadReq) fstest.Fault { return fstest.Fault{Err: fstest.ErrInjected} })
	start := time.Now()
	if _, errno := b.SetAttr(ctx, f, SetAttrIn{Valid: namespace.SetMode, Mode: 0o600}); errno != 0 {
		t.Fatalf("chmod on b under a dead reader: %v", errno)
	}
	took := time.Since(start)
	if took > 2*ttl {
		t.Fatalf("the change waited %v for a dead reader; its session TTL is %v", took, ttl)
	}
	if took < ttl/3 {
		// Its session lives ttl after its last renewal, sent at most ttl/3
		// before it went dead: the change had to wait for it.
		t.Fatalf("the change waited only %v for a dead reader (session TTL %v): its lease held nothing up", took, ttl)
	}
	t.Logf("the change waited %v for the dead reader (session TTL %v)", took, ttl)
	// The dead mount's copy is no longer trusted: it asks the service
	// (which it cannot reach), never answering the old mode.
	at, errno := a.Lookup(ctx, d, "f")
	if errno == 0 && at.Mode != 0o600 {
		t.Fatalf("the cut-off mount answered the old mode %o", at.Mode)
	}
	ma.FailApply(nil)
	ma.FailRead(nil)
}

// TestReadLeaseOpensAreNotRaftWrites: read-only opens and closes of files
// in a read-leased directory change nothing at the service; a file open
// that way and unlinked by another mount (or by this one) is registered
// before the unlink goes through, stays whole for the descriptor, and is
// freed at its close.
func TestReadLeaseOpensAreNotRaftWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	var files []uint64
	for i := range 4 {
		ino := mustCreate(t, b, d, fmt.Sprintf("f%d", i)).Ino
		mustWrite(t, b, ino, []byte(fmt.Sprintf("content of f%d", i)), 0)
		mustFlush(t, b, ino)
		files = append(files, ino)
	}
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 1000)
		return a.reads.count() == 1
	})
	before := cm.applies.Load()
	for i, ino := range files {
		h, _, errno := a.Open(ctx, ino, syscall.O_RDONLY)
		mustErrno(t, "open", errno, 0)
		if got := string(mustRead(t, a, ino, 100, 0)); got != fmt.Sprintf("content of f%d", i) {
			t.Fatalf("f%d reads %q", i, got)
		}
		mustErrno(t, "close", a.Release(ctx, h), 0)
	}
	if n := cm.applies.Load() - before; n != 0 {
		t.Fatalf("reading 4 files under a read lease made %d changes at the service", n)
	}

	// Open on a; unlinked by b; read whole on a; freed once a closes it.
	h0, _, errno := a.Open(ctx, files[0], syscall.O_RDONLY)
	mustErrno(t, "open f0", errno, 0)
	mustErrno(t, "unlink f0 on b", b.Unlink(ctx, d, "f0"), 0)
	if got := string(mustRead(t, a, files[0], 100, 0)); got != "content of f0" {
		t.Fatalf("f0 unlinked on b, open on a, reads %q", got)
	}
	// Open on a, unlinked by a itself.
	waitUntil(t, "a read lease of d again", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 1000)
		return a.reads.count() == 1
	})
	h1, _, errno := a.Open(ctx, files[1], syscall.O_RDONLY)
	mustErrno(t, "open f1", errno, 0)
	mustErrno(t, "unlink f1 on a", a.Unlink(ctx, d, "f1"), 0)
	if got := string(mustRead(t, a, files[1], 100, 0)); got != "content of f1" {
		t.Fatalf("f1 unlinked and open on a reads %q", got)
	}
	gone := func(ino uint64) bool {
		// Asked as a: a's unlink write-leased d, and the lease covers
		// its files (others' queries of them are refused).
		r := e.fsm.Read(&metapb.ReadReq{LeaseSession: a.pipe.session(), Op: &metapb.ReadReq_Getattr{Getattr: &metapb.GetAttrReq{Ino: ino}}})
		return r.Errno == uint32(syscall.ENOENT)
	}
	if gone(files[0]) || gone(files[1]) {
		t.Fatal("an unlinked file was freed while open on a")
	}
	mustErrno(t, "close f0", a.Release(ctx, h0), 0)
	mustErrno(t, "close f1", a.Release(ctx, h1), 0)
	waitUntil(t, "the unlinked files freed after their close", 10*time.Second, func() bool {
		return gone(files[0]) && gone(files[1])
	})
}

// TestReadLeaseTurnsIntoWriteLease: a mount that changes the entries of a
// directory it read-leases write-leases it at once, and writes the rest of
// its changes there behind.
func TestReadLeaseTurnsIntoWriteLease(t *testing.T) {
	t.Parallel()
	_, a, _, d, _, _, _ := readLeased(t, 20)
	ctx := testCtx(t)
	mustErrno(t, "unlink f0", a.Unlink(ctx, d, "f0"), 0)
	waitUntil(t, "a write lease of d", 10*time.Second, func() bool { return a.leases.get(d) != nil && a.leases.get(d).held.Load() })
	for i := 1; i < 20; i++ {
		mustErrno(t, "unlink", a.Unlink(ctx, d, fmt.Sprintf("f%d", i)), 0)
	}
	ents, _, errno := a.ReadDir(ctx, d, 0, 100)
	mustErrno(t, "readdir", errno, 0)
	if len(ents) != 0 {
		t.Fatalf("%d entries left", len(ents))
	}
}

// TestReadLeaseAfterTheWritersLease: the first listing of a directory
// another mount write-leases revokes that lease and takes the read lease
// at once (its lookups and opens come next); a child directory the other
// mount write-leases is asked back, and the read lease follows.
func TestReadLeaseAfterTheWritersLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.mount("a", nil, nil)
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	for i := range 5 {
		mustCreate(t, b, d, fmt.Sprintf("f%d", i))
	}
	if _, _, errno := a.ReadDir(ctx, d, 0, 100); errno != 0 {
		t.Fatal(errno)
	}
	if a.reads.count() != 1 {
		t.Fatal("the first listing of the writer's directory did not take the read lease")
	}
	p := mustMkdir(t, b, RootIno, "p").Ino
	sub := mustMkdir(t, b, p, "sub").Ino
	if _, _, errno := a.ReadDir(ctx, p, 0, 100); errno != 0 {
		t.Fatal(errno)
	}
	waitUntil(t, "b to give sub's write lease back", 10*time.Second, func() bool { return b.leases.get(sub) == nil })
	waitUntil(t, "a read lease of p", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, p, 0, 100)
		return a.reads.count() == 2
	})
}

// TestLazyOpenRegisteredAcrossSessionLoss: a lazy open's registration
// that is still on its way when the session is replaced (which forgets
// every lazy open: the new session registers all open handles) ends
// without harm.
func TestLazyOpenRegisteredAcrossSessionLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ma := e.client().(*fstest.Meta)
	a := e.mount("a", func(c *Config) { c.Meta = ma }, nil)
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	f := mustCreate(t, b, d, "f").Ino
	g := mustCreate(t, b, d, "g").Ino
	waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
		_, _, _ = a.ReadDir(ctx, d, 0, 100)
		return a.reads.count() == 1
	})
	h, _, errno := a.Open(ctx, f, syscall.O_RDONLY)
	mustErrno(t, "open", errno, 0)
	// The registration's OpenOp is held until the lazy opens are dropped.
	dropped := make(chan struct{})
	ma.FailApply(func(cmd *metapb.Command) fstest.Fault {
		if cmd.GetOpen() != nil {
			<-dropped
		}
		return fstest.Fault{}
	})
	done := make(chan syscall.Errno)
	go func() { // a change of a's own in d registers f's open first
		_, errno := a.SetAttr(ctx, g, SetAttrIn{Valid: namespace.SetMode, Mode: 0o600})
		done <- errno
	}()
	waitUntil(t, "the registration on its way", 10*time.Second, func() bool {
		a.reads.mu.Lock()
		defer a.reads.mu.Unlock()
		lo := a.reads.lazy[h]
		return lo != nil && lo.registering
	})
	a.reads.dropAll()
	close(dropped)
	mustErrno(t, "chmod", <-done, 0)
	ma.FailApply(nil)
	mustErrno(t, "close", a.Release(ctx, h), 0)
}

// TestWriteLeaseOfCutOffMount: a mount whose session is no longer sure to
// last (cut off longer than a quarter of its TTL short of it) stops
// answering names from its write lease's entries: the session, and with
// it the lease, may have ended at the service, and another mount changed
// the directory since. (The fault suite saw such a mount say "no such
// file" for a name another mount had just made, in the second before it
// heard its session had expired.) Here the name is put in at the service
// behind the lease's back, and the mount's session made stale.
func TestWriteLeaseOfCutOffMount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, ma := e.countedMount("a")
	ctx := testCtx(t)
	d := mustMkdir(t, a, RootIno, "d").Ino
	mustCreate(t, a, d, "mine")
	mustErrno(t, "fsync d", a.SyncDir(ctx, d, nil), 0)
	if l := a.leases.get(d); l == nil || !l.held.Load() {
		t.Fatal("a does not hold the lease of the directory it made")
	}
	sess := a.pipe.session()
	r, err := ma.Meta.Apply(ctx, &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: d, Name: "new", Type: uint32(namespace.TypeFile), Mode: 0o644}}})
	if err != nil || r.Errno != 0 {
		t.Fatalf("create at the service: %v %v", r, err)
	}
	if _, errno := a.Lookup(ctx, d, "new"); errno != syscall.ENOENT {
		t.Fatalf("the lease's entries answer a name put in behind them: %v (the test would not test)", errno)
	}
	a.reads.renewed.Store(time.Now().Add(-time.Hour).UnixNano())
	if _, errno := a.Lookup(ctx, d, "new"); errno != 0 {
		t.Fatalf("with its session stale, the mount answered %v from its lease for a name the service has", errno)
	}
	if _, errno := a.Lookup(ctx, d, "mine"); errno != 0 {
		t.Fatalf("its own file: %v", errno)
	}
}

// TestWriteLeasesGivenBackWhileTheSessionIsInDoubt: once a mount's
// renewals have failed long enough that its session may end at the
// service at any time, it gives its write leases back (and takes none):
// the attributes and opens of the files they hold are asked of the
// service again, not answered from what may have changed behind them.
func TestWriteLeasesGivenBackWhileTheSessionIsInDoubt(t *testing.T) {
	t.Parallel()
	const ttl = 6 * time.Second
	e := newEnv(t)
	a, ma := faultyMount(t, e, ttl)
	d := mustMkdir(t, a, RootIno, "d").Ino
	mustCreate(t, a, d, "f")
	if l := a.leases.get(d); l == nil || !l.held.Load() || a.view.localAttr(d) == nil {
		t.Fatal("a does not hold the lease of the directory it made")
	}
	// Renewals go unanswered (each fails only after a TTL).
	ma.FailApply(func(c *metapb.Command) fstest.Fault {
		if c.GetRenew() != nil {
			return fstest.Fault{Delay: time.Hour}
		}
		return fstest.Fault{}
	})
	// Given back before the service could end the session: a TTL after
	// the last renewal that succeeded.
	expiry := time.Unix(0, a.reads.renewed.Load()).Add(ttl)
	waitUntil(t, "a to give back its lease", 3*ttl, func() bool { return a.leases.get(d) == nil })
	if late := time.Since(expiry); late > 0 {
		t.Fatalf("the lease was given back %v after the session could have expired at the service", late)
	}
	if a.view.localAttr(d) != nil {
		t.Fatal("the directory's attributes are still the mount's own")
	}
	mustCreate(t, a, d, "g") // through the service: no lease is taken meanwhile
	if a.leases.get(d) != nil {
		t.Fatal("a leased the directory again while its session is in doubt")
	}
	ma.FailApply(nil)
}

// faultyMount mounts "a" with session TTL ttl through a client of its own,
// whose calls the test can fail; its close is not checked (its session
// may be gone by then: ending it fails).
func faultyMount(t *testing.T, e *env, ttl time.Duration) (*FS, *fstest.Meta) {
	t.Helper()
	ma := e.client().(*fstest.Meta)
	a, err := New(testCtx(t), Config{Meta: ma, Objects: e.objects(), Name: "a", Logger: quietLogger(),
		SessionTTL: ttl, MetaTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a, ma
}
