package fs

import (
	"fmt"
	"maps"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// TestReadDirWholeFromWriteLease: a listing from the start of a directory
// the mount write-leases is answered whole from the lease, asking the
// service nothing and waiting for no batch: it has what is written behind
// and not sent (the service holds every batch), not what was removed or
// renamed away; sorted, its cookies numbering it. A listing past a cookie
// (the service's) still asks the service. Another mount's listing, which
// revokes the lease, has the same names; so does the first mount's once
// the lease is gone.
func TestReadDirWholeFromWriteLease(t *testing.T) {
	e := newEnv(t)
	g := &gatedMeta{}
	cm := &countingMeta{}
	a := e.mount("a", func(c *Config) { cm.Meta = c.Meta; g.Meta = cm; c.Meta = g }, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, a, RootIno, "d").Ino
	waitUntil(t, "the journal to be applied", 10*time.Second, func() bool { return !a.pipe.pending() })

	g.shut()
	want := map[string]bool{}
	const n = 1100 // more than a page of the adapter's (512)
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		mustCreate(t, a, d, name)
		want[name] = true
	}
	mustErrno(t, "unlink f0003", a.Unlink(ctx, d, "f0003"), 0)
	delete(want, "f0003")
	mustErrno(t, "rename f0005 -> g", a.Rename(ctx, d, "f0005", d, "g", 0), 0)
	delete(want, "f0005")
	want["g"] = true
	mustMkdir(t, a, d, "sub")
	want["sub"] = true
	if !a.pipe.pending() {
		t.Fatal("nothing waits in the journal although the service holds every batch")
	}

	before := cm.n.Load()
	type listing struct {
		ents  []*metapb.DirEntry
		whole bool
		errno syscall.Errno
	}
	done := make(chan listing, 1)
	go func() {
		ents, whole, errno := a.ReadDir(ctx, d, 0, 100)
		done <- listing{ents, whole, errno}
	}()
	var l listing
	select {
	case l = <-done:
	case <-time.After(10 * time.Second):
		g.open()
		t.Fatal("the listing of a write-leased directory waited for the journal")
	}
	mustErrno(t, "readdir", l.errno, 0)
	if !l.whole || len(l.ents) != len(want) {
		t.Fatalf("listing from the lease: whole %v, %d entries; want whole, %d", l.whole, len(l.ents), len(want))
	}
	for i, ent := range l.ents {
		if !want[ent.Name] || ent.Cookie != uint64(i)+1 || i > 0 && l.ents[i-1].Name >= ent.Name {
			t.Fatalf("entry %d: %q cookie %d (after %q): want the names sorted, numbered from 1", i, ent.Name, ent.Cookie, l.ents[max(i-1, 0)].Name)
		}
		if wantType := namespace.TypeFile; ent.Name == "sub" && ent.Type != uint32(namespace.TypeDir) || ent.Name != "sub" && ent.Type != uint32(wantType) {
			t.Fatalf("%s has type %d", ent.Name, ent.Type)
		}
	}
	if calls := cm.n.Load() - before; calls != 0 {
		t.Fatalf("the listing asked the service %d times", calls)
	}
	g.open()

	// Past a cookie, the service answers (the mount's changes sent first).
	page, whole, errno := a.ReadDir(ctx, d, namespace.FirstCookie, 100)
	mustErrno(t, "readdir past a cookie", errno, 0)
	if whole || len(page) != 100 || cm.readdirs.Load() == 0 {
		t.Fatalf("a page past a cookie: whole %v, %d entries, %d service listings; want a page of the service's", whole, len(page), cm.readdirs.Load())
	}

	b := e.mount("b", nil, nil)
	got := map[string]bool{}
	for cookie := uint64(0); ; {
		ents, whole, errno := b.ReadDir(ctx, d, cookie, 500)
		mustErrno(t, "b's readdir", errno, 0)
		if whole {
			t.Fatal("b's listing is whole: b holds no lease of d")
		}
		if len(ents) == 0 {
			break
		}
		for _, ent := range ents {
			got[ent.Name] = true
		}
		cookie = ents[len(ents)-1].Cookie
	}
	if !maps.Equal(got, want) {
		t.Fatalf("b lists %d names, a listed %d: not the same", len(got), len(want))
	}
	waitUntil(t, "a to give back d's lease", 10*time.Second, func() bool { return a.leases.get(d) == nil })
	ents, whole, errno := a.ReadDir(ctx, d, 0, 2000)
	mustErrno(t, "readdir after the lease", errno, 0)
	if whole || len(ents) != len(want) {
		t.Fatalf("a's listing after the lease: whole %v, %d entries; want %d from the service", whole, len(ents), len(want))
	}
}

// TestReadDirLargeLeasedDirPaged: a write-leased directory of more than
// listWholeMax entries is listed by the service, a page at a time (each
// open handle would keep a whole listing).
func TestReadDirLargeLeasedDirPaged(t *testing.T) {
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	d := mustMkdir(t, f, RootIno, "d").Ino
	for i := range listWholeMax + 1 {
		mustCreate(t, f, d, fmt.Sprint("f", i))
	}
	if f.leases.get(d) == nil {
		t.Fatal("the mount does not lease the directory it made")
	}
	ents, whole, errno := f.ReadDir(ctx, d, 0, 100)
	mustErrno(t, "readdir", errno, 0)
	if whole || len(ents) != 100 {
		t.Fatalf("whole %v, %d entries; want a page of 100 from the service", whole, len(ents))
	}
}
