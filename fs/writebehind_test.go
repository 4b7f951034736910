package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
	"github.com/ecfs/ecfs/fs/fstest"
)

// gate holds callers while it is shut.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // nil: open
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

// pass returns once the gate is open (at once if it is), or ctx's error.
func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatedMeta holds the mount's write-behind batches (MultiOp) while the
// gate is shut, and counts them.
type gatedMeta struct {
	Meta
	gate
	multis atomic.Int64
	others atomic.Int64 // other Apply calls
	lose   atomic.Bool  // batches are lost on the way (the mount died)
}

func (g *gatedMeta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if _, ok := cmd.Op.(*metapb.Command_Multi); ok {
		g.multis.Add(1)
		if g.lose.Load() {
			return nil, fmt.Errorf("the mount died before this batch left: %w", context.Canceled)
		}
		if err := g.pass(ctx); err != nil {
			return nil, err
		}
	} else {
		g.others.Add(1)
	}
	return g.Meta.Apply(ctx, cmd)
}

func gated(g *gatedMeta) func(*Config) {
	return func(c *Config) { g.Meta = c.Meta; c.Meta = g }
}

// abandon stops the mount as a crash would: nothing more is sent, the
// journal's unsent changes are lost, the session is not ended.
func (f *FS) abandon() {
	f.closeOnce.Do(func() {
		p := f.pipe
		p.mu.Lock()
		for _, op := range p.ops {
			if op.call != nil {
				op.call.err = errors.New("abandoned")
				close(op.call.done)
			}
		}
		p.ops, p.calls = nil, 0
		p.mu.Unlock()
		close(p.stop)
		f.stop()
		<-f.renew.done
		<-f.leases.watched
	})
}

// writeSmall creates parent/name with data through one handle, as cp does.
func writeSmall(t *testing.T, f *FS, parent uint64, name string, data []byte, excl bool) (uint64, syscall.Errno) {
	t.Helper()
	ctx := testCtx(t)
	flags := uint32(syscall.O_WRONLY | syscall.O_CREAT)
	if excl {
		flags |= syscall.O_EXCL
	}
	a, h, errno := f.CreateOpen(ctx, parent, name, 0o640, 1000, 1000, flags)
	if errno != 0 {
		return 0, errno
	}
	mustWrite(t, f, a.Ino, data, 0)
	mustErrno(t, "flush "+name, f.Flush(ctx, a.Ino), 0)
	mustErrno(t, "release "+name, f.Release(ctx, h), 0)
	return a.Ino, 0
}

func lookupIno(t *testing.T, f *FS, parent uint64, name string) uint64 {
	t.Helper()
	a, errno := f.Lookup(testCtx(t), parent, name)
	mustErrno(t, "lookup "+name, errno, 0)
	return a.Ino
}

func listNames(t *testing.T, f *FS, dir uint64) map[string]bool {
	t.Helper()
	ents, _, errno := f.ReadDir(testCtx(t), dir, 0, 4096)
	mustErrno(t, "readdir", errno, 0)
	out := map[string]bool{}
	for _, e := range ents {
		out[e.Name] = true
	}
	return out
}

// TestWriteBehindDoesNotWaitAndOthersSeeAll: with the metadata service
// holding the mount's batches, creates, writes, chmod, utimes, renames,
// unlinks and closes in a directory the mount made all return; another
// mount that then looks into the directory sees every change (close-to-open
// through the lease's revocation), with every byte.
func TestWriteBehindDoesNotWaitAndOthersSeeAll(t *testing.T) {
	e := newEnv(t)
	g := &gatedMeta{}
	m1 := e.mount("m1", gated(g), nil)
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino
	sub := mustMkdir(t, m1, d, "sub").Ino
	waitUntil(t, "the journal to be applied", 10*time.Second, func() bool { return !m1.pipe.pending() })

	g.shut()
	before := g.others.Load()
	want := map[string][]byte{}
	for i := range 40 {
		name := fmt.Sprint("f", i)
		data := bytes.Repeat([]byte{byte(i)}, 100+i*300)
		if _, errno := writeSmall(t, m1, d, name, data, true); errno != 0 {
			t.Fatalf("create %s: %v", name, errno)
		}
		want[name] = data
	}
	ino5 := lookupIno(t, m1, d, "f5")
	if _, errno := m1.SetAttr(ctx, ino5, SetAttrIn{Valid: namespace.SetMode | namespace.SetMtime, Mode: 0o600, Mtime: 1234567890}); errno != 0 {
		t.Fatal(errno)
	}
	mustErrno(t, "rename f1 -> g1", m1.Rename(ctx, d, "f1", d, "g1", 0), 0)
	want["g1"] = want["f1"]
	delete(want, "f1")
	mustErrno(t, "rename f2 over f3", m1.Rename(ctx, d, "f2", d, "f3", 0), 0)
	want["f3"] = want["f2"]
	delete(want, "f2")
	mustErrno(t, "rename f4 into sub", m1.Rename(ctx, d, "f4", sub, "f4", 0), 0)
	delete(want, "f4")
	mustErrno(t, "unlink f6", m1.Unlink(ctx, d, "f6"), 0)
	delete(want, "f6")
	if _, errno := m1.Symlink(ctx, d, "link", "f0", 1000, 1000); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := writeSmall(t, m1, d, "f7", []byte("x"), true); errno != syscall.EEXIST {
		t.Fatalf("O_EXCL create of an existing name in a leased directory: errno %v, want EEXIST", errno)
	}
	// Read-after-write in the mount, from its own view.
	if a, errno := m1.GetAttr(ctx, ino5); errno != 0 || a.Mode&0o777 != 0o600 || a.Mtime != 1234567890 || a.Size != 1600 {
		t.Fatalf("m1 sees f5 as %v (errno %v), want mode 0600, mtime 1234567890, size 1600", a, errno)
	}
	if n := g.others.Load() - before; n > 1 {
		t.Fatalf("%d commands waited for the service while writing behind (only reserving inode numbers may)", n)
	}
	if !m1.pipe.pending() {
		t.Fatal("nothing waits in the journal although the service held every batch")
	}

	// m2 looks: the lease is revoked, m1 sends its journal (let through
	// now) and gives the lease back.
	g.open()
	got := listNames(t, m2, d)
	for name := range want {
		if !got[name] {
			t.Errorf("m2 does not list %s", name)
		}
	}
	for _, gone := range []string{"f1", "f2", "f4", "f6"} {
		if got[gone] {
			t.Errorf("m2 still lists %s", gone)
		}
	}
	if !got["link"] || !got["sub"] {
		t.Errorf("m2 misses the symlink or the directory: %v", got)
	}
	for name, data := range want {
		ino := lookupIno(t, m2, d, name)
		if b := mustRead(t, m2, ino, len(data)+10, 0); !bytes.Equal(b, data) {
			t.Errorf("m2 reads %d bytes of %s, want the %d written", len(b), name, len(data))
		}
	}
	a5, errno := m2.Lookup(ctx, d, "f5")
	mustErrno(t, "m2 lookup f5", errno, 0)
	if a5.Mode&0o777 != 0o600 || a5.Mtime != 1234567890 || a5.Uid != 1000 {
		t.Errorf("m2 sees f5 with mode %o mtime %d uid %d", a5.Mode, a5.Mtime, a5.Uid)
	}
	if ino := lookupIno(t, m2, sub, "f4"); ino == 0 {
		t.Error("f4 not in sub")
	}
	lino := lookupIno(t, m2, d, "link")
	if tgt, errno := m2.Readlink(ctx, lino); errno != 0 || tgt != "f0" {
		t.Errorf("m2 reads the symlink as %q (%v)", tgt, errno)
	}

	// The lease is gone: m1 goes on through the service, and m2 sees
	// that at once.
	if _, errno := writeSmall(t, m1, d, "late", []byte("late"), true); errno != 0 {
		t.Fatal(errno)
	}
	if b := mustRead(t, m2, lookupIno(t, m2, d, "late"), 10, 0); string(b) != "late" {
		t.Fatalf("m2 reads %q", b)
	}
}

// TestWriteBehindExclusiveAcrossMounts: two mounts racing O_EXCL creates of
// the same names in one directory: each name is created exactly once.
func TestWriteBehindExclusiveAcrossMounts(t *testing.T) {
	e := newEnv(t)
	m1 := e.mount("m1", nil, nil)
	m2 := e.mount("m2", nil, nil)
	d := mustMkdir(t, m1, RootIno, "d").Ino
	const names = 30
	var wins [2]atomic.Int64
	var wg sync.WaitGroup
	for i, m := range []*FS{m1, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range names {
				_, errno := writeSmall(t, m, d, fmt.Sprint("n", n), []byte{byte(i)}, true)
				switch errno {
				case 0:
					wins[i].Add(1)
				case syscall.EEXIST:
				default:
					t.Errorf("mount %d create n%d: %v", i, n, errno)
				}
			}
		}()
	}
	wg.Wait()
	if w := wins[0].Load() + wins[1].Load(); w != names {
		t.Fatalf("%d + %d exclusive creates succeeded, want %d in all", wins[0].Load(), wins[1].Load(), names)
	}
	// Both mounts agree on every file's content.
	for n := range names {
		name := fmt.Sprint("n", n)
		b1 := mustRead(t, m1, lookupIno(t, m1, d, name), 4, 0)
		b2 := mustRead(t, m2, lookupIno(t, m2, d, name), 4, 0)
		if len(b1) != 1 || !bytes.Equal(b1, b2) {
			t.Fatalf("%s reads %v on m1 and %v on m2", name, b1, b2)
		}
	}
}

// TestWriteBehindFsyncSurvivesCrash: what was fsynced is in the service
// when the mount dies; what was written behind after it and not sent is
// lost, and nothing else.
func TestWriteBehindFsyncSurvivesCrash(t *testing.T) {
	e := newEnv(t)
	g := &gatedMeta{}
	m1 := e.mount("m1", gated(g), nil)
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m1, RootIno, "d").Ino
	ino, errno := writeSmall(t, m1, d, "synced", []byte("kept"), true)
	mustErrno(t, "create synced", errno, 0)
	mustErrno(t, "fsync", m1.Fsync(ctx, ino), 0)
	g.lose.Store(true)
	// Its batch may be lost before close returns (then close says EIO) or
	// after: either way the file is not in the service.
	a, h, errno := m1.CreateOpen(ctx, d, "unsynced", 0o644, 0, 0, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY)
	mustErrno(t, "create unsynced", errno, 0)
	mustWrite(t, m1, a.Ino, []byte("lost"), 0)
	_ = m1.Release(ctx, h)
	sess := m1.Session()
	m1.abandon()
	// The health loop ends a dead mount's session after its TTL; here the
	// test ends it at once.
	if _, err := e.client().Apply(ctx, &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: sess}}}); err != nil {
		t.Fatal(err)
	}
	got := listNames(t, m2, d)
	if !got["synced"] || got["unsynced"] {
		t.Fatalf("after the crash m2 lists %v: want synced and not unsynced", got)
	}
	if b := mustRead(t, m2, lookupIno(t, m2, d, "synced"), 10, 0); string(b) != "kept" {
		t.Fatalf("m2 reads %q from the fsynced file", b)
	}
	// The directory is m2's to change now.
	if _, errno := writeSmall(t, m2, d, "unsynced", []byte("new"), true); errno != 0 {
		t.Fatalf("m2 creating the lost name: %v", errno)
	}
}

// TestWriteBehindLargeFileAndRmRf: a file past the inline threshold is
// stored before close returns and committed behind; rm -rf of a leased tree
// is written behind too and leaves nothing.
func TestWriteBehindLargeFileAndRmRf(t *testing.T) {
	e := newEnv(t)
	m1 := e.mount("m1", nil, nil)
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	top := mustMkdir(t, m1, RootIno, "top").Ino
	d := mustMkdir(t, m1, top, "d").Ino
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB
	ino, errno := writeSmall(t, m1, d, "big", big, true)
	mustErrno(t, "create big", errno, 0)
	if b := mustRead(t, m1, ino, len(big)+1, 0); !bytes.Equal(b, big) {
		t.Fatalf("m1 reads back %d bytes, not what it wrote", len(b))
	}
	for i := range 10 {
		if _, errno := writeSmall(t, m1, d, fmt.Sprint("s", i), []byte("s"), true); errno != 0 {
			t.Fatal(errno)
		}
	}
	// rm -rf as m1: unlink everything, rmdir d.
	for name := range listNames(t, m1, d) {
		mustErrno(t, "unlink "+name, m1.Unlink(ctx, d, name), 0)
	}
	mustErrno(t, "rmdir d", m1.Rmdir(ctx, top, "d"), 0)
	if _, errno := m1.Lookup(ctx, top, "d"); errno != syscall.ENOENT {
		t.Fatalf("lookup of the removed directory: %v", errno)
	}
	if got := listNames(t, m2, top); len(got) != 0 {
		t.Fatalf("m2 lists %v in top after rm -rf", got)
	}
	mustErrno(t, "rmdir top", m2.Rmdir(ctx, RootIno, "top"), 0)
	// m2 made a file big enough for objects in its own directory: m1 reads
	// it whole.
	d2 := mustMkdir(t, m2, RootIno, "d2").Ino
	_, errno = writeSmall(t, m2, d2, "big", big, true)
	mustErrno(t, "m2 create big", errno, 0)
	if b := mustRead(t, m1, lookupIno(t, m1, d2, "big"), len(big)+1, 0); !bytes.Equal(b, big) {
		t.Fatalf("m1 reads %d bytes of m2's big file, not what was written", len(b))
	}
}

// TestCoalesce: an open-and-close within one batch sends no open record,
// unless a name is removed in between.
func TestCoalesce(t *testing.T) {
	create := func(h uint64) *jop {
		return &jop{cmd: &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{Name: "x", Session: 7, Handle: h}}}}
	}
	open := func(h uint64) *jop {
		return &jop{cmd: &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{Session: 7, Handle: h}}}}
	}
	closeOp := func(h uint64) *jop {
		return &jop{cmd: &metapb.Command{Op: &metapb.Command_Close{Close: &metapb.CloseOp{Session: 7, Handle: h}}}}
	}
	inline := &jop{cmd: &metapb.Command{Op: &metapb.Command_Inline{Inline: &metapb.InlineOp{Session: 7}}}}
	unlink := &jop{cmd: &metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Name: "x"}}}}

	b := []*jop{create(1), inline, closeOp(1), open(2), closeOp(2), closeOp(3), create(4), unlink, closeOp(4)}
	got := coalesce(b)
	want := []bool{true, true, false, false, false, true, true, true, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("send %v, want %v", got, want)
		}
	}
	if c := b[0].cmd.GetCreate(); c.Handle != 0 || c.Session != 0 {
		t.Fatalf("the create closed within the batch still opens handle %d", c.Handle)
	}
	if c := b[6].cmd.GetCreate(); c.Handle != 4 {
		t.Fatal("the create whose file was unlinked before its close lost its open record")
	}
}

// TestSessionReplacedReopensFiles: a mount whose session ended while it was
// cut off opens a new one and registers its open files again, so a file
// unlinked elsewhere afterwards stays readable through its descriptor.
func TestSessionReplacedReopensFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m1 := e.mount("m1", func(c *Config) { c.SessionTTL = 3 * time.Second }, nil)
	m2 := e.mount("m2", nil, nil)
	ctx := testCtx(t)
	data := bytes.Repeat([]byte("keep me "), 5000) // 40 KB: in objects
	ino, errno := writeSmall(t, m2, RootIno, "f", data, true)
	mustErrno(t, "create f", errno, 0)
	h, _, errno := m1.Open(ctx, ino, syscall.O_RDONLY)
	mustErrno(t, "open f", errno, 0)
	old := m1.Session()
	// The service ends the session, as it does when a mount is cut off
	// past its TTL.
	if _, err := e.client().Apply(ctx, &metapb.Command{Op: &metapb.Command_End{End: &metapb.EndOp{Session: old}}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the mount to open a new session", 10*time.Second, func() bool { return m1.Session() != old })
	waitUntil(t, "the open file to be registered again", 10*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.id>>40 == m1.Session()
	})
	mustErrno(t, "unlink f elsewhere", m2.Unlink(ctx, RootIno, "f"), 0)
	if b := mustRead(t, m1, ino, len(data)+1, 0); !bytes.Equal(b, data) {
		t.Fatalf("read %d bytes through the descriptor after the unlink, want the %d written", len(b), len(data))
	}
	mustErrno(t, "release", m1.Release(ctx, h), 0)
}

// TestLeaseOfExistingDirectory: a mount that keeps creating in a directory
// another mount made leases it (the other does not hold it) and writes
// behind there; the other mount still sees every file.
func TestLeaseOfExistingDirectory(t *testing.T) {
	e := newEnv(t)
	g := &gatedMeta{}
	m1 := e.mount("m1", gated(g), nil)
	m2 := e.mount("m2", nil, nil)
	d := mustMkdir(t, m2, RootIno, "d").Ino
	// m2 holds d's lease from its mkdir; it gives it back when idle or
	// when revoked. m1's first creates revoke it.
	for i := range 2 * leaseAfter {
		if _, errno := writeSmall(t, m1, d, fmt.Sprint("a", i), []byte{byte(i)}, true); errno != 0 {
			t.Fatal(errno)
		}
	}
	waitUntil(t, "m1 to lease d", 10*time.Second, func() bool {
		l := m1.leases.get(d)
		return l != nil && l.mu.TryRLock() && func() bool { defer l.mu.RUnlock(); return l.held.Load() }()
	})
	before := g.multis.Load()
	for i := range 20 {
		if _, errno := writeSmall(t, m1, d, fmt.Sprint("b", i), []byte{byte(i)}, true); errno != 0 {
			t.Fatal(errno)
		}
	}
	if _, errno := writeSmall(t, m1, d, "a0", []byte("x"), true); errno != syscall.EEXIST {
		t.Fatalf("O_EXCL create of a name made before the lease: %v, want EEXIST", errno)
	}
	waitUntil(t, "the journal to be sent", 10*time.Second, func() bool { return !m1.pipe.pending() })
	if g.multis.Load() == before {
		t.Fatal("nothing was written behind in the leased directory")
	}
	got := listNames(t, m2, d)
	if len(got) != 2*leaseAfter+20 {
		t.Fatalf("m2 lists %d names, want %d", len(got), 2*leaseAfter+20)
	}
	for i := range 20 {
		if b := mustRead(t, m2, lookupIno(t, m2, d, fmt.Sprint("b", i)), 4, 0); len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("m2 reads b%d as %v", i, b)
		}
	}
}

// TestNoWriteBehind: with write-behind off, nothing is leased or batched:
// every change is in the service when the call returns.
func TestNoWriteBehind(t *testing.T) {
	e := newEnv(t)
	g := &gatedMeta{}
	m1 := e.mount("m1", func(c *Config) { gated(g)(c); c.NoWriteBehind = true }, nil)
	d := mustMkdir(t, m1, RootIno, "d").Ino
	for i := range 2 * leaseAfter {
		if _, errno := writeSmall(t, m1, d, fmt.Sprint("f", i), []byte("x"), true); errno != 0 {
			t.Fatal(errno)
		}
	}
	r, err := e.client().Read(testCtx(t), &metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: d}}})
	if err != nil || r.Errno != 0 || r.Leased || len(r.Entries) != 2*leaseAfter {
		t.Fatalf("the service's listing: %v, %v (want %d entries, no lease)", r, err, 2*leaseAfter)
	}
	if n := g.multis.Load(); n != 0 {
		t.Fatalf("%d batches written behind with write-behind off", n)
	}
}

// TestForgottenInodeStaysWrittenBehind: the kernel forgets the inodes of a
// tree it walked (memory pressure, drop_caches); a file in a directory the
// mount leases stays the mount's own all the same, so that reading it
// again and removing it are written behind, not one Raft commit per open
// and per unlink (issue 10: cold reads and rm -rf of a tree this mount
// wrote ran at a few hundred files per second).
func TestForgottenInodeStaysWrittenBehind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mount("m", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m, RootIno, "d").Ino // leased to m
	const n = 40
	inos := make([]uint64, n)
	for i := range n {
		ino, errno := writeSmall(t, m, d, fmt.Sprint("f", i), []byte{byte(i)}, true)
		mustErrno(t, "create", errno, 0)
		inos[i] = ino
	}
	mustErrno(t, "fsync of the directory", m.Fsync(ctx, d), 0)
	for _, ino := range inos {
		m.Forget(ino) // the kernel forgot them (drop_caches)
	}
	meta := m.meta.(*fstest.Meta)
	before := meta.Applies()
	for i := range n {
		a, errno := m.Lookup(ctx, d, fmt.Sprint("f", i))
		mustErrno(t, "lookup", errno, 0)
		h, _, errno := m.Open(ctx, a.Ino, syscall.O_RDONLY)
		mustErrno(t, "open", errno, 0)
		if got := mustRead(t, m, a.Ino, 2, 0); len(got) != 1 || got[0] != byte(i) {
			t.Fatalf("f%d reads %v", i, got)
		}
		mustErrno(t, "release", m.Release(ctx, h), 0)
		mustErrno(t, "unlink", m.Unlink(ctx, d, fmt.Sprint("f", i)), 0)
	}
	mustErrno(t, "fsync of the directory", m.Fsync(ctx, d), 0)
	if got := meta.Applies() - before; got >= n {
		t.Fatalf("reading and removing %d forgotten files of a leased directory took %d commits, want them written behind (a few batches)", n, got)
	}
	if names := listNames(t, m, d); len(names) != 0 {
		t.Fatalf("left in the directory: %v", names)
	}
}

// TestRemovedTreeLeavesNoInodes: rm -rf of a tree written behind (files
// unlinked and their directory removed behind, each forgotten by the
// kernel after) leaves nothing in the mount's inode table: only a live
// file under a held lease is kept once forgotten.
func TestRemovedTreeLeavesNoInodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mount("m", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, m, RootIno, "d").Ino // leased to m, and so is sub
	sub := mustMkdir(t, m, d, "sub").Ino
	inos := []uint64{sub}
	for i := range 20 {
		ino, errno := writeSmall(t, m, sub, fmt.Sprint("f", i), []byte{byte(i)}, true)
		mustErrno(t, "create", errno, 0)
		inos = append(inos, ino)
	}
	for i := range 20 {
		mustErrno(t, "unlink", m.Unlink(ctx, sub, fmt.Sprint("f", i)), 0)
	}
	mustErrno(t, "rmdir", m.Rmdir(ctx, d, "sub"), 0)
	mustErrno(t, "fsync of the directory", m.Fsync(ctx, d), 0)
	for _, ino := range inos {
		m.Forget(ino) // the kernel forgets what it removed
	}
	for _, ino := range inos {
		if m.inodes.lookup(ino) != nil {
			t.Fatalf("inode %d, removed and forgotten, is still in the mount's table", ino)
		}
	}
}
