package fs

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/namespace"
)

// Tests of the namespace operations of the core, against the in-process
// cluster of env_test.go.

func TestCreateLookupGetAttr(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	a, errno := f.Create(ctx, RootIno, "f", namespace.TypeFile, 0o640, 0, 1001, 1002, true)
	mustErrno(t, "create", errno, 0)
	if a.Ino <= RootIno || a.Type != uint32(namespace.TypeFile) || a.Mode != 0o640 || a.Uid != 1001 || a.Gid != 1002 || a.Nlink != 1 || a.Size != 0 {
		t.Fatalf("created %+v", a)
	}
	// Exclusive create of an existing name: EEXIST; without excl the
	// existing file is returned.
	_, errno = f.Create(ctx, RootIno, "f", namespace.TypeFile, 0o600, 0, 0, 0, true)
	mustErrno(t, "exclusive create of an existing name", errno, syscall.EEXIST)
	b, errno := f.Create(ctx, RootIno, "f", namespace.TypeFile, 0o600, 0, 0, 0, false)
	mustErrno(t, "create of an existing name", errno, 0)
	if b.Ino != a.Ino || b.Mode != 0o640 {
		t.Fatalf("non-exclusive create of an existing file gave %+v, want inode %d unchanged", b, a.Ino)
	}
	// A special file (mknod).
	fifo, errno := f.Create(ctx, RootIno, "p", namespace.TypeFifo, 0o600, 0, 0, 0, true)
	mustErrno(t, "mknod fifo", errno, 0)
	if fifo.Type != uint32(namespace.TypeFifo) {
		t.Fatalf("fifo has type %d", fifo.Type)
	}
	d := mustMkdir(t, f, RootIno, "d")
	if d.Type != uint32(namespace.TypeDir) || d.Nlink != 2 {
		t.Fatalf("mkdir gave %+v", d)
	}
	_, errno = f.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	mustErrno(t, "mkdir of an existing name", errno, syscall.EEXIST)
	_, errno = f.Create(ctx, 999999, "x", namespace.TypeFile, 0o644, 0, 0, 0, true)
	mustErrno(t, "create in a missing directory", errno, syscall.ENOENT)
	_, errno = f.Create(ctx, a.Ino, "x", namespace.TypeFile, 0o644, 0, 0, 0, true)
	mustErrno(t, "create in a file", errno, syscall.ENOTDIR)

	for _, tc := range []struct {
		parent uint64
		name   string
		ino    uint64
		errno  syscall.Errno
	}{
		{RootIno, "f", a.Ino, 0},
		{RootIno, "d", d.Ino, 0},
		{RootIno, "p", fifo.Ino, 0},
		{RootIno, "missing", 0, syscall.ENOENT},
		{d.Ino, "f", 0, syscall.ENOENT},
		{a.Ino, "f", 0, syscall.ENOTDIR},
	} {
		got, errno := f.Lookup(ctx, tc.parent, tc.name)
		if errno != tc.errno || (errno == 0 && got.Ino != tc.ino) {
			t.Errorf("lookup %d/%s: %+v errno %v, want inode %d errno %v", tc.parent, tc.name, got, errno, tc.ino, tc.errno)
		}
	}
	root, errno := f.GetAttr(ctx, RootIno)
	mustErrno(t, "getattr /", errno, 0)
	if root.Type != uint32(namespace.TypeDir) || root.Nlink != 3 {
		t.Fatalf("root: %+v, want a directory with nlink 3", root)
	}
	_, errno = f.GetAttr(ctx, 999999)
	mustErrno(t, "getattr of a missing inode", errno, syscall.ENOENT)
}

func TestSetAttr(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "f")
	const (
		atime = int64(1_000_000_000_123)
		mtime = int64(2_000_000_000_456)
	)
	for _, tc := range []struct {
		name  string
		in    SetAttrIn
		check func(t *testing.T, got SetAttrIn)
	}{
		{"mode", SetAttrIn{Valid: namespace.SetMode, Mode: 0o4755}, func(t *testing.T, g SetAttrIn) {
			if g.Mode != 0o4755 {
				t.Errorf("mode %o, want 4755", g.Mode)
			}
		}},
		{"uid and gid clear setuid", SetAttrIn{Valid: namespace.SetUid | namespace.SetGid, Uid: 7, Gid: 8}, func(t *testing.T, g SetAttrIn) {
			if g.Uid != 7 || g.Gid != 8 || g.Mode != 0o755 {
				t.Errorf("uid %d gid %d mode %o, want 7 8 0755", g.Uid, g.Gid, g.Mode)
			}
		}},
		{"times", SetAttrIn{Valid: namespace.SetAtime | namespace.SetMtime, Atime: atime, Mtime: mtime}, func(t *testing.T, g SetAttrIn) {
			if g.Atime != atime || g.Mtime != mtime {
				t.Errorf("atime %d mtime %d, want %d %d", g.Atime, g.Mtime, atime, mtime)
			}
		}},
		{"size", SetAttrIn{Valid: namespace.SetSize, Size: 12345}, func(t *testing.T, g SetAttrIn) {
			if g.Size != 12345 {
				t.Errorf("size %d, want 12345", g.Size)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, errno := f.SetAttr(ctx, a.Ino, tc.in)
			mustErrno(t, "setattr", errno, 0)
			tc.check(t, SetAttrIn{Mode: r.Mode, Uid: r.Uid, Gid: r.Gid, Size: r.Size, Atime: r.Atime, Mtime: r.Mtime})
			// What the service keeps, seen by a fresh GetAttr.
			g, errno := f.GetAttr(ctx, a.Ino)
			mustErrno(t, "getattr", errno, 0)
			tc.check(t, SetAttrIn{Mode: g.Mode, Uid: g.Uid, Gid: g.Gid, Size: g.Size, Atime: g.Atime, Mtime: g.Mtime})
		})
	}
	d := mustMkdir(t, f, RootIno, "d")
	_, errno := f.SetAttr(ctx, d.Ino, SetAttrIn{Valid: namespace.SetSize, Size: 1})
	mustErrno(t, "truncate of a directory", errno, syscall.EISDIR)
	_, errno = f.SetAttr(ctx, 999999, SetAttrIn{Valid: namespace.SetMode, Mode: 0o600})
	mustErrno(t, "setattr of a missing inode", errno, syscall.ENOENT)
}

// SetAttr commits buffered data first, so an explicit mtime (cp -p) is not
// overwritten by the later commit of that data.
func TestSetAttrMtimeAfterBufferedWrite(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "f")
	data := pattern(5<<20+7, 1)
	mustWrite(t, f, a.Ino, data, 0)
	const mtime = int64(1_234_567_890_000_000_000)
	_, errno := f.SetAttr(ctx, a.Ino, SetAttrIn{Valid: namespace.SetMtime, Mtime: mtime})
	mustErrno(t, "setattr mtime", errno, 0)
	mustFlush(t, f, a.Ino)
	g, errno := f.GetAttr(ctx, a.Ino)
	mustErrno(t, "getattr", errno, 0)
	if g.Mtime != mtime || g.Size != uint64(len(data)) {
		t.Fatalf("after write, setattr mtime, flush: mtime %d size %d, want %d %d", g.Mtime, g.Size, mtime, len(data))
	}
}

func TestSymlinkReadlink(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	const target = "../some/where/else with spaces"
	s, errno := f.Symlink(ctx, RootIno, "l", target, 5, 6)
	mustErrno(t, "symlink", errno, 0)
	if s.Type != uint32(namespace.TypeSymlink) || s.Size != uint64(len(target)) || s.Uid != 5 {
		t.Fatalf("symlink attr %+v", s)
	}
	got, errno := f.Readlink(ctx, s.Ino)
	mustErrno(t, "readlink", errno, 0)
	if got != target {
		t.Fatalf("readlink %q, want %q", got, target)
	}
	l, errno := f.Lookup(ctx, RootIno, "l")
	mustErrno(t, "lookup", errno, 0)
	if l.Ino != s.Ino {
		t.Fatalf("lookup gave inode %d, want %d", l.Ino, s.Ino)
	}
	_, errno = f.Symlink(ctx, RootIno, "l", "x", 0, 0)
	mustErrno(t, "symlink over an existing name", errno, syscall.EEXIST)
	a := mustCreate(t, f, RootIno, "f")
	_, errno = f.Readlink(ctx, a.Ino)
	mustErrno(t, "readlink of a file", errno, syscall.EINVAL)
}

func TestLinkUnlink(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "f")
	d := mustMkdir(t, f, RootIno, "d")
	mustWrite(t, f, a.Ino, []byte("shared content"), 0)
	mustFlush(t, f, a.Ino)
	l, errno := f.Link(ctx, a.Ino, d.Ino, "g")
	mustErrno(t, "link", errno, 0)
	if l.Ino != a.Ino || l.Nlink != 2 {
		t.Fatalf("link gave %+v, want inode %d with nlink 2", l, a.Ino)
	}
	_, errno = f.Link(ctx, a.Ino, d.Ino, "g")
	mustErrno(t, "link over an existing name", errno, syscall.EEXIST)
	_, errno = f.Link(ctx, d.Ino, RootIno, "d2")
	mustErrno(t, "link of a directory", errno, syscall.EPERM)

	mustErrno(t, "unlink f", f.Unlink(ctx, RootIno, "f"), 0)
	_, errno = f.Lookup(ctx, RootIno, "f")
	mustErrno(t, "lookup of the removed name", errno, syscall.ENOENT)
	g, errno := f.Lookup(ctx, d.Ino, "g")
	mustErrno(t, "lookup of the other link", errno, 0)
	if g.Ino != a.Ino || g.Nlink != 1 {
		t.Fatalf("remaining link %+v, want inode %d nlink 1", g, a.Ino)
	}
	if got := string(mustRead(t, f, g.Ino, 100, 0)); got != "shared content" {
		t.Fatalf("read through the other link: %q", got)
	}
	mustErrno(t, "unlink of a missing name", f.Unlink(ctx, RootIno, "f"), syscall.ENOENT)
	mustErrno(t, "unlink of a directory", f.Unlink(ctx, RootIno, "d"), syscall.EISDIR)
	mustErrno(t, "unlink g", f.Unlink(ctx, d.Ino, "g"), 0)
	_, errno = f.GetAttr(ctx, a.Ino)
	mustErrno(t, "getattr of a file without names nor handles", errno, syscall.ENOENT)
}

func TestRmdir(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	d := mustMkdir(t, f, RootIno, "d")
	sub := mustMkdir(t, f, d.Ino, "sub")
	mustCreate(t, f, sub.Ino, "f")
	mustErrno(t, "rmdir of a non-empty directory", f.Rmdir(ctx, RootIno, "d"), syscall.ENOTEMPTY)
	mustErrno(t, "rmdir of a non-empty subdirectory", f.Rmdir(ctx, d.Ino, "sub"), syscall.ENOTEMPTY)
	mustErrno(t, "rmdir of a file", f.Rmdir(ctx, sub.Ino, "f"), syscall.ENOTDIR)
	mustErrno(t, "unlink f", f.Unlink(ctx, sub.Ino, "f"), 0)
	mustErrno(t, "rmdir sub", f.Rmdir(ctx, d.Ino, "sub"), 0)
	mustErrno(t, "rmdir d", f.Rmdir(ctx, RootIno, "d"), 0)
	mustErrno(t, "rmdir of a missing name", f.Rmdir(ctx, RootIno, "d"), syscall.ENOENT)
	root, errno := f.GetAttr(ctx, RootIno)
	mustErrno(t, "getattr /", errno, 0)
	if root.Nlink != 2 {
		t.Fatalf("root nlink %d after removing its only subdirectory, want 2", root.Nlink)
	}
}

func TestRename(t *testing.T) {
	t.Parallel()
	const (
		noReplace = namespace.RenameNoReplace
		exchange  = namespace.RenameExchange
	)
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	ino := func(parent uint64, name string) uint64 {
		t.Helper()
		a, errno := f.Lookup(ctx, parent, name)
		if errno == syscall.ENOENT {
			return 0
		}
		mustErrno(t, "lookup "+name, errno, 0)
		return a.Ino
	}
	d1 := mustMkdir(t, f, RootIno, "d1")
	d2 := mustMkdir(t, f, RootIno, "d2")
	sub := mustMkdir(t, f, d1.Ino, "sub")
	a := mustCreate(t, f, d1.Ino, "a")
	b := mustCreate(t, f, d2.Ino, "b")
	c := mustCreate(t, f, d2.Ino, "c")

	// wantFrom and wantTo are the inodes at the source and target names
	// afterwards (0: no such name).
	for _, tc := range []struct {
		name             string
		from             uint64
		fromName         string
		to               uint64
		toName           string
		flags            uint32
		errno            syscall.Errno
		wantFrom, wantTo uint64
	}{
		{"move across directories", d1.Ino, "a", d2.Ino, "a2", 0, 0, 0, a.Ino},
		{"noreplace onto an existing name", d2.Ino, "a2", d2.Ino, "b", noReplace, syscall.EEXIST, a.Ino, b.Ino},
		{"exchange", d2.Ino, "a2", d2.Ino, "b", exchange, 0, b.Ino, a.Ino},
		{"exchange with a missing target", d2.Ino, "a2", d1.Ino, "nothing", exchange, syscall.ENOENT, b.Ino, 0},
		{"both flags", d2.Ino, "a2", d2.Ino, "b", noReplace | exchange, syscall.EINVAL, b.Ino, a.Ino},
		{"replace a file", d2.Ino, "a2", d2.Ino, "c", 0, 0, 0, b.Ino},
		{"noreplace onto a free name", d2.Ino, "c", d1.Ino, "c", noReplace, 0, 0, b.Ino},
		{"directory into itself", RootIno, "d1", sub.Ino, "x", 0, syscall.EINVAL, d1.Ino, 0},
		{"file over a directory", d1.Ino, "c", d1.Ino, "sub", 0, syscall.EISDIR, b.Ino, sub.Ino},
		{"missing source", d1.Ino, "nothing", d2.Ino, "y", 0, syscall.ENOENT, 0, 0},
	} {
		errno := f.Rename(ctx, tc.from, tc.fromName, tc.to, tc.toName, tc.flags)
		if errno != tc.errno {
			t.Errorf("%s: errno %v, want %v", tc.name, errno, tc.errno)
			continue
		}
		if got := ino(tc.from, tc.fromName); got != tc.wantFrom {
			t.Errorf("%s: source name holds inode %d, want %d", tc.name, got, tc.wantFrom)
		}
		if got := ino(tc.to, tc.toName); got != tc.wantTo {
			t.Errorf("%s: target name holds inode %d, want %d", tc.name, got, tc.wantTo)
		}
	}
	// The replaced file is gone.
	_, errno := f.GetAttr(ctx, c.Ino)
	mustErrno(t, "getattr of the replaced file", errno, syscall.ENOENT)
}

// ReadDir pages through a large directory with cookies: every name once.
// The mount leases nothing: its listings page through the service (one
// of a directory it write-leases is whole: TestReadDirWholeFromWriteLease).
func TestReadDirPaging(t *testing.T) {
	t.Parallel()
	f := newEnv(t).mount("m1", func(c *Config) { c.NoWriteBehind = true }, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, f, RootIno, "big")
	const n = 1500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 16 { // concurrently: the group commit batches them
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				typ := namespace.TypeFile
				if i%7 == 0 {
					typ = namespace.TypeSymlink
				}
				var errno syscall.Errno
				if typ == namespace.TypeSymlink {
					_, errno = f.Symlink(ctx, d.Ino, fmt.Sprintf("entry-%04d", i), "t", 0, 0)
				} else {
					_, errno = f.Create(ctx, d.Ino, fmt.Sprintf("entry-%04d", i), typ, 0o644, 0, 0, 0, true)
				}
				if errno != 0 {
					errs <- fmt.Errorf("create entry-%04d: %w", i, errno)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]int{}
	cookie, pages := uint64(0), 0
	for {
		ents, _, errno := f.ReadDir(ctx, d.Ino, cookie, 100)
		mustErrno(t, "readdir", errno, 0)
		if len(ents) == 0 {
			break
		}
		if len(ents) > 100 {
			t.Fatalf("page of %d entries, asked for 100", len(ents))
		}
		pages++
		for _, e := range ents {
			seen[e.Name]++
			var i int
			if _, err := fmt.Sscanf(e.Name, "entry-%04d", &i); err != nil {
				t.Fatalf("unexpected entry %q", e.Name)
			}
			wantType := uint32(namespace.TypeFile)
			if i%7 == 0 {
				wantType = uint32(namespace.TypeSymlink)
			}
			if e.Type != wantType || e.Ino == 0 {
				t.Errorf("entry %q: type %d ino %d, want type %d", e.Name, e.Type, e.Ino, wantType)
			}
			if e.Cookie < namespace.FirstCookie || e.Cookie <= cookie {
				t.Fatalf("entry %q has cookie %d after cookie %d", e.Name, e.Cookie, cookie)
			}
		}
		cookie = ents[len(ents)-1].Cookie
		if pages > n {
			t.Fatal("readdir does not end")
		}
	}
	if len(seen) != n || pages != n/100 {
		t.Fatalf("readdir saw %d names in %d pages, want %d in %d", len(seen), pages, n, n/100)
	}
	for name, c := range seen {
		if c != 1 {
			t.Errorf("%s listed %d times", name, c)
		}
	}
	// Paging stays right while entries are removed and added: what was
	// neither removed nor added during the listing is listed exactly once.
	ents, _, errno := f.ReadDir(ctx, d.Ino, 0, 100)
	mustErrno(t, "readdir", errno, 0)
	mid := ents[len(ents)-1].Cookie
	mustErrno(t, "unlink", f.Unlink(ctx, d.Ino, ents[0].Name), 0)
	mustCreate(t, f, d.Ino, "zz-new")
	rest := map[string]bool{}
	for cookie := mid; ; {
		ents, _, errno := f.ReadDir(ctx, d.Ino, cookie, 100)
		mustErrno(t, "readdir", errno, 0)
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			if rest[e.Name] {
				t.Fatalf("%s listed twice", e.Name)
			}
			rest[e.Name] = true
		}
		cookie = ents[len(ents)-1].Cookie
	}
	for _, e := range ents {
		if rest[e.Name] {
			t.Errorf("%s listed again after the cookie of the page it was on", e.Name)
		}
	}
	if len(rest) < n-100 {
		t.Errorf("after the first page, %d names, want at least %d", len(rest), n-100)
	}
	_, _, errno = f.ReadDir(ctx, 999999, 0, 100)
	mustErrno(t, "readdir of a missing directory", errno, syscall.ENOENT)
}

func TestXattr(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	a := mustCreate(t, f, RootIno, "f")
	const (
		create  = namespace.XattrCreate
		replace = namespace.XattrReplace
	)
	for _, tc := range []struct {
		op    string // set, get, remove
		name  string
		value string
		flags uint32
		errno syscall.Errno
	}{
		{"get", "user.a", "", 0, syscall.ENODATA},
		{"set", "user.a", "one", 0, 0},
		{"get", "user.a", "one", 0, 0},
		{"set", "user.a", "two", create, syscall.EEXIST},
		{"set", "user.b", "x", replace, syscall.ENODATA},
		{"set", "user.a", "three", replace, 0},
		{"get", "user.a", "three", 0, 0},
		{"set", "user.empty", "", create, 0},
		{"get", "user.empty", "", 0, 0},
		{"set", "trusted.t", "tv", 0, 0},
		{"remove", "user.empty", "", 0, 0},
		{"remove", "user.empty", "", 0, syscall.ENODATA},
		{"get", "system.posix_acl_access", "", 0, syscall.EOPNOTSUPP},
		{"set", "system.posix_acl_access", "\x02\x00\x00\x00", 0, syscall.EOPNOTSUPP},
		{"remove", "system.posix_acl_access", "", 0, syscall.EOPNOTSUPP},
		{"get", "system.posix_acl_default", "", 0, syscall.EOPNOTSUPP},
		{"set", "system.posix_acl_default", "\x02\x00\x00\x00", 0, syscall.EOPNOTSUPP},
	} {
		var errno syscall.Errno
		switch tc.op {
		case "set":
			errno = f.SetXattr(ctx, a.Ino, tc.name, []byte(tc.value), tc.flags)
		case "remove":
			errno = f.RemoveXattr(ctx, a.Ino, tc.name)
		case "get":
			var v []byte
			v, errno = f.GetXattr(ctx, a.Ino, tc.name)
			if errno == 0 && string(v) != tc.value {
				t.Errorf("get %s = %q, want %q", tc.name, v, tc.value)
			}
		}
		if errno != tc.errno {
			t.Errorf("%s %s %q flags %d: errno %v, want %v", tc.op, tc.name, tc.value, tc.flags, errno, tc.errno)
		}
	}
	names, errno := f.ListXattr(ctx, a.Ino)
	mustErrno(t, "listxattr", errno, 0)
	slices.Sort(names)
	if !slices.Equal(names, []string{"trusted.t", "user.a"}) {
		t.Fatalf("listxattr %q, want [trusted.t user.a]", names)
	}
	// security.capability: its absence is cached, and setting it through
	// this mount drops that at once.
	_, errno = f.GetXattr(ctx, a.Ino, capsName)
	mustErrno(t, "get "+capsName, errno, syscall.ENODATA)
	mustErrno(t, "set "+capsName, f.SetXattr(ctx, a.Ino, capsName, []byte("caps"), 0), 0)
	v, errno := f.GetXattr(ctx, a.Ino, capsName)
	mustErrno(t, "get "+capsName+" after setting it", errno, 0)
	if string(v) != "caps" {
		t.Fatalf("%s = %q", capsName, v)
	}
	mustErrno(t, "remove "+capsName, f.RemoveXattr(ctx, a.Ino, capsName), 0)
	_, errno = f.GetXattr(ctx, a.Ino, capsName)
	mustErrno(t, "get "+capsName+" after removing it", errno, syscall.ENODATA)
	_, errno = f.GetXattr(ctx, 999999, "user.a")
	mustErrno(t, "getxattr of a missing inode", errno, syscall.ENOENT)
}

func TestStatfs(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	ctx := testCtx(t)
	mustCreate(t, f, RootIno, "f")
	st, errno := f.Statfs(ctx)
	mustErrno(t, "statfs", errno, 0)
	if st.Total == 0 || st.Free == 0 || st.Free > st.Total || st.Inodes < 2 {
		t.Fatalf("statfs %+v: want non-zero capacity, free <= total and at least 2 inodes", st)
	}
}
