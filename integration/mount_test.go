package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// restartAll stops every mount (SIGTERM), SIGKILLs every meta and store,
// and starts them all again from their data dirs.
func (fc *fsCluster) restartAll() {
	fc.t.Helper()
	for _, m := range fc.mounts {
		m.stop(fc.t)
		if m.p.err != nil {
			fc.t.Errorf("mount %s exited with %v after SIGTERM:\n%s", m.dir, m.p.err, m.p.logs.String())
		}
	}
	for _, s := range fc.c.stores {
		s.p.kill()
	}
	for _, m := range fc.g.nodes {
		m.p.kill()
	}
	for i := range fc.g.nodes {
		fc.g.launch(i)
	}
	for i := range fc.g.nodes {
		fc.g.wait(i)
	}
	for i := range fc.c.stores {
		fc.c.start(i)
	}
	waitStoresUp(fc.t, fc.g, len(fc.c.stores))
	for _, m := range fc.mounts {
		fc.start(m)
	}
}

// shardFiles counts the shard files in every store's disk.
func (fc *fsCluster) shardFiles() int {
	n := 0
	for _, s := range fc.c.stores {
		_ = filepath.WalkDir(filepath.Join(s.dataDir, "disk", "shards"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// TestMountCopyTreeInAndOut: cp -a and rsync -a of a real tree into a
// mount; every file's sha256, mode, mtime and symlink matches; a second
// rsync transfers nothing; the other mount sees it all; cp -a back out
// matches; everything survives a restart of every process from its data
// dir; rm -rf leaves an empty directory and, after GC, no shards.
func TestMountCopyTreeInAndOut(t *testing.T) {
	fc := newFSCluster(t, 3, 7)
	m1, m2 := fc.mount(), fc.mount()
	src := makeTree(t, 24)

	sh(t, m1.dir, "cp -a "+src+" cpa")
	n := compareTrees(t, src, filepath.Join(m1.dir, "cpa"), true)
	t.Logf("cp -a: %d paths match", n)

	sh(t, ".", fmt.Sprintf("rsync -a %s/ %s/rs/", src, m1.dir))
	compareTrees(t, src, filepath.Join(m1.dir, "rs"), true)
	out := sh(t, ".", fmt.Sprintf("rsync -a --stats %s/ %s/rs/", src, m1.dir))
	if !regexp.MustCompile(`Number of regular files transferred: 0\b`).MatchString(out) {
		t.Fatalf("a second rsync -a transferred files:\n%s", out)
	}

	// Close-to-open: the other mount reads every file whole.
	compareTrees(t, src, filepath.Join(m2.dir, "rs"), true)
	back := filepath.Join(t.TempDir(), "back")
	sh(t, ".", fmt.Sprintf("cp -a %s/cpa %s", m2.dir, back))
	compareTrees(t, src, back, true)

	fc.restartAll()
	compareTrees(t, src, filepath.Join(m1.dir, "cpa"), true)
	compareTrees(t, src, filepath.Join(m2.dir, "rs"), true)

	sh(t, m1.dir, "rm -rf cpa rs")
	if es, err := os.ReadDir(m1.dir); err != nil || len(es) != 0 {
		t.Fatalf("after rm -rf the mount holds %v (%v)", es, err)
	}
	if es, err := os.ReadDir(m2.dir); err != nil || len(es) != 0 {
		t.Fatalf("after rm -rf the other mount shows %v (%v)", es, err)
	}
	// Shards of writes that were recorded without them (stragglers) go
	// with the orphan GC, once older than its grace period (30 s here).
	waitFor(t, "GC to delete every object and shard", 90*time.Second, func() error {
		st := fc.g.status()
		if st.Objects.Total != 0 {
			return fmt.Errorf("%d objects left", st.Objects.Total)
		}
		if n := fc.shardFiles(); n != 0 {
			return fmt.Errorf("%d shard files left", n)
		}
		return nil
	})
}

// copyInBackground runs cp -a src dst and reports its error.
func copyInBackground(src, dst string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("cp -a: %v: %s", err, out)
		}
		errc <- err
	}()
	return errc
}

// waitCopying waits until dst holds at least n entries (a copy is under way).
func waitCopying(t *testing.T, dst string, n int, errc <-chan error) {
	t.Helper()
	waitFor(t, "the copy to start", 60*time.Second, func() error {
		select {
		case err := <-errc:
			t.Fatalf("the copy ended before the failure was injected: %v", err)
		default:
		}
		count := 0
		_ = filepath.WalkDir(dst, func(string, fs.DirEntry, error) error { count++; return nil })
		if count < n {
			return fmt.Errorf("%d entries", count)
		}
		return nil
	})
}

// TestMountSurvivesStoreAndLeaderLoss: SIGKILL 2 of 7 stores during a copy,
// then the meta leader during another: both copies finish without error
// and match. With only k stores left, a write fails with EIO (at the
// writer's fsync, even after a child closed its copy of the descriptor)
// while everything written before still reads back.
func TestMountSurvivesStoreAndLeaderLoss(t *testing.T) {
	fc := newFSCluster(t, 3, 7)
	m := fc.mount("--write-timeout", "6s")
	src := makeTree(t, 40)

	errc := copyInBackground(src, filepath.Join(m.dir, "a"))
	waitCopying(t, filepath.Join(m.dir, "a"), 50, errc)
	fc.c.stores[0].p.kill()
	fc.c.stores[1].p.kill()
	t.Log("killed 2 stores during the copy")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(m.dir, "a"), true)

	errc = copyInBackground(src, filepath.Join(m.dir, "b"))
	waitCopying(t, filepath.Join(m.dir, "b"), 50, errc)
	leader := fc.g.leader()
	fc.g.nodes[leader].p.kill()
	t.Logf("killed meta leader m%d during the copy", leader)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(m.dir, "b"), true)

	// The healer puts the shards of the dead stores on the 5 left (one
	// shard per object stays missing: 6 shards, 5 stores); then one more
	// store dies and only k = 4 are left.
	waitFor(t, "the healer to finish", 90*time.Second, func() error {
		st := fc.g.status()
		if st.Heal.Pending != 0 {
			return fmt.Errorf("heal pending %d", st.Heal.Pending)
		}
		return nil
	})
	fc.c.stores[2].p.kill()
	cmd := exec.Command("dd", "if=/dev/urandom", "of="+filepath.Join(m.dir, "c"), "bs=1M", "count=8", "conv=fsync", "status=none")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("writing 8 MiB with only k stores up succeeded")
	}
	if !strings.Contains(string(out), "Input/output error") {
		t.Fatalf("writing with only k stores up: want EIO, got %v: %s", err, out)
	}
	t.Logf("with k stores left the write failed as it should: %s", strings.TrimSpace(string(out)))

	// Every copy of a descriptor sends FLUSH when it is closed: a child's,
	// inherited, at its exit. That close must not take the failure from
	// the writer, whose fsync still reports it (it once said nothing, and
	// the fault suite saw lost data renamed into place).
	f, err := os.Create(filepath.Join(m.dir, "d"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	child := exec.Command("true")
	child.ExtraFiles = []*os.File{f}
	if err := child.Run(); err != nil {
		t.Fatalf("a child holding a copy of the descriptor: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync after a child closed its copy of the descriptor: %v, want EIO (the data could not be stored)", err)
	}
	compareTrees(t, src, filepath.Join(m.dir, "a"), true)
	compareTrees(t, src, filepath.Join(m.dir, "b"), true)
}

// TestTwoMounts: a file closed on one mount is read whole on the other;
// flock and fcntl locks exclude across mounts; git and sqlite work inside.
func TestTwoMounts(t *testing.T) {
	fc := newFSCluster(t, 3, 7)
	m1, m2 := fc.mount(), fc.mount()

	data := make([]byte, 9<<20+77)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(m1.dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(m2.dir, "f"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("the other mount read %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	// Overwrite the middle on m2; m1 sees it after a new open.
	sh(t, m2.dir, "printf XYZ | dd of=f bs=1 seek=5000000 conv=notrunc status=none")
	copy(data[5000000:], "XYZ")
	got, err = os.ReadFile(filepath.Join(m1.dir, "f"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("after an overwrite on the other mount: %v, equal %v", err, string(got) == string(data))
	}

	testLocksAcrossMounts(t, m1.dir, m2.dir)

	sh(t, m1.dir, `mkdir repo && cd repo && git init -q && git config user.email t@e && git config user.name t &&
		cp -a `+filepath.Join(must(os.Getwd()), "*.go")+` . && git add . && git commit -qm first &&
		echo change >> mount_test.go && git commit -qam second && git gc -q && git fsck --strict`)
	log := sh(t, filepath.Join(m2.dir, "repo"), "git log --oneline | wc -l && git status --porcelain && git fsck")
	if !strings.HasPrefix(log, "2\n") {
		t.Fatalf("git on the other mount: %q", log)
	}

	sh(t, m1.dir, `sqlite3 db.sqlite "create table t(k integer primary key, v text);" &&
		for i in 1 2 3 4 5; do sqlite3 db.sqlite "begin; with recursive c(x) as (select 1 union all select x+1 from c where x<2000) insert into t(v) select hex(randomblob(100)) from c; commit;"; done &&
		sqlite3 db.sqlite "delete from t where k % 3 = 0; vacuum;"`)
	res := sh(t, m1.dir, `sqlite3 db.sqlite "pragma integrity_check; select count(*) from t;"`)
	if res != "ok\n6667\n" {
		t.Fatalf("sqlite in the mount: %q", res)
	}
	res = sh(t, m2.dir, `sqlite3 db.sqlite "pragma journal_mode=wal; insert into t(v) values('x'); pragma integrity_check; select count(*) from t;"`)
	if res != "wal\nok\n6668\n" {
		t.Fatalf("sqlite (WAL) on the other mount: %q", res)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// testLocksAcrossMounts: flock and fcntl locks taken through one mount
// exclude the same file opened through the other.
func testLocksAcrossMounts(t *testing.T, d1, d2 string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d1, "lockfile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	f1, err := os.OpenFile(filepath.Join(d1, "lockfile"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.OpenFile(filepath.Join(d2, "lockfile"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	fd1, fd2 := int(f1.Fd()), int(f2.Fd())

	if err := syscall.Flock(fd1, syscall.LOCK_EX); err != nil {
		t.Fatalf("flock on mount 1: %v", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Fatalf("flock on mount 2 while mount 1 holds it: %v, want EWOULDBLOCK", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_SH|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Fatalf("shared flock on mount 2 while mount 1 holds it exclusively: %v, want EWOULDBLOCK", err)
	}
	granted := make(chan error, 1)
	go func() { granted <- syscall.Flock(fd2, syscall.LOCK_EX) }()
	select {
	case err := <-granted:
		t.Fatalf("a blocking flock on mount 2 returned (%v) while mount 1 held the lock", err)
	case <-time.After(500 * time.Millisecond): // asserting it stays blocked
	}
	if err := syscall.Flock(fd1, syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-granted:
		if err != nil {
			t.Fatalf("blocking flock on mount 2: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the blocking flock on mount 2 was not granted after mount 1 unlocked")
	}
	if err := syscall.Flock(fd1, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Fatalf("flock on mount 1 while mount 2 holds it: %v", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}

	// POSIX byte-range locks.
	setlk := func(fd int, typ int16, start, length int64) error {
		lk := syscall.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
		return syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk)
	}
	if err := setlk(fd1, syscall.F_WRLCK, 0, 100); err != nil {
		t.Fatalf("F_SETLK on mount 1: %v", err)
	}
	if err := setlk(fd2, syscall.F_WRLCK, 50, 10); err != syscall.EAGAIN && err != syscall.EACCES {
		t.Fatalf("overlapping F_SETLK on mount 2: %v, want EAGAIN", err)
	}
	lk := syscall.Flock_t{Type: syscall.F_RDLCK, Start: 90, Len: 20}
	if err := syscall.FcntlFlock(uintptr(fd2), syscall.F_GETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if lk.Type != syscall.F_WRLCK || lk.Start != 0 || lk.Len != 100 {
		t.Fatalf("F_GETLK on mount 2: %+v, want the write lock [0,100)", lk)
	}
	if err := setlk(fd2, syscall.F_WRLCK, 200, 10); err != nil {
		t.Fatalf("F_SETLK of a free range on mount 2: %v", err)
	}
	if err := setlk(fd1, syscall.F_UNLCK, 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := setlk(fd2, syscall.F_WRLCK, 50, 10); err != nil {
		t.Fatalf("F_SETLK on mount 2 after mount 1 unlocked: %v", err)
	}
}

// TestUnlinkedOnOneMountReadableOnAnother: a file unlinked on one mount
// stays whole for a descriptor open on another, through garbage
// collection (which meanwhile frees another file unlinked with it, so a
// round of it did run), and its data is freed once that descriptor closes.
func TestUnlinkedOnOneMountReadableOnAnother(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	m1, m2 := fc.mount(), fc.mount()
	objects := func() (uint64, uint64) {
		st := fc.g.status()
		return st.Objects.Total, st.GC.Pending
	}
	t0, _ := objects()
	data := make([]byte, 9<<20+5) // three objects
	for i := range data {
		data[i] = byte(i*13 + i>>16)
	}
	if err := os.WriteFile(filepath.Join(m1.dir, "g"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t1, _ := objects()
	if err := os.WriteFile(filepath.Join(m1.dir, "h"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if t2, _ := objects(); t1 <= t0 || t2 <= t1 {
		t.Fatalf("objects recorded: %d, then %d with g, %d with h: each file should add some", t0, t1, t2)
	}
	f, err := os.Open(filepath.Join(m2.dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"g", "h"} {
		if err := os.Remove(filepath.Join(m1.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "GC to free h's objects (and not g's: open on the other mount)", 30*time.Second, func() error {
		if n, pending := objects(); n != t1 || pending != 0 {
			return fmt.Errorf("%d objects recorded (%d to delete), want %d", n, pending, t1)
		}
		return nil
	})
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading g through the other mount's descriptor after its unlink and a GC round: %d bytes, %v; want the %d written", len(got), err, len(data))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "GC to free g's objects after its last close", 30*time.Second, func() error {
		if n, pending := objects(); n != t0 || pending != 0 {
			return fmt.Errorf("%d objects recorded (%d to delete), want %d", n, pending, t0)
		}
		return nil
	})
}
