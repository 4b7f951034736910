package fs

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ecfs/ecfs/store"
)

// content is file i's content at generation gen: every fourth one over
// the inline threshold (its data in objects).
func content(i int, gen byte) []byte {
	p := []byte(fmt.Sprintf("file %d, generation %c\n", i, gen))
	if i%4 == 3 {
		p = bytes.Repeat(p, 20<<10/len(p)+1)
	}
	return p
}

// TestReadAheadOfADirectorysFiles: a mount reading the files of a
// directory it read-leases one after another (as diff -r does) asks the
// service for their slices and object records once per many files, not
// once or twice per file; and a file another mount changed after it was
// prefetched is read with its new content.
func TestReadAheadOfADirectorysFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	const n = 40
	want := map[string][]byte{}
	inos := map[string]uint64{}
	for i := range n {
		name := fmt.Sprintf("f%02d", i)
		ino, errno := writeSmall(t, b, d, name, content(i, 'a'), true)
		mustErrno(t, "write "+name, errno, 0)
		want[name], inos[name] = content(i, 'a'), ino
	}
	var lastListing int64 // readdir queries of the listing that took the lease
	leaseAndList := func() []string {
		t.Helper()
		var names []string
		waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
			before := cm.readdirs.Load()
			defer func() { lastListing = cm.readdirs.Load() - before }()
			ents, _, errno := a.ReadDir(ctx, d, 0, 1000)
			mustErrno(t, "readdir", errno, 0)
			names = names[:0]
			for _, en := range ents {
				names = append(names, en.Name)
			}
			return a.reads.count() == 1
		})
		return names
	}
	names := leaseAndList()

	// The first read prefetches the next files; b then changes one of
	// them (which revokes a's lease): a reads the new content.
	openRead(t, a, inos[names[0]], want[names[0]])
	changed := names[1]
	i := 1
	want[changed] = content(i, 'b')
	if _, errno := writeSmall(t, b, d, changed, want[changed], false); errno != 0 {
		t.Fatal(errno)
	}
	openRead(t, a, inos[changed], want[changed])

	// The rest, in the listing's order, under a lease again: taken with
	// one listing of d (the service says where it ends).
	names = leaseAndList()
	if n := lastListing; n != 1 {
		t.Fatalf("listing d and taking its read lease read its entries %d times, want 1", n)
	}
	slices0, objects0 := cm.slices.Load(), cm.objects.Load()
	for _, name := range names[2:] {
		openRead(t, a, inos[name], want[name])
	}
	if got := cm.slices.Load() - slices0; got > 4 {
		t.Fatalf("reading %d files one after another made %d slices queries", n-2, got)
	}
	if got := cm.objects.Load() - objects0; got > 4 {
		t.Fatalf("reading %d files one after another made %d object-record queries", n-2, got)
	}
}

// TestReadAheadOfOwnFiles: the same for files the mount wrote itself under
// its write lease of the directory (diff -r after rsync -a, on the mount
// that copied), read in the order they were made; one it rewrites after
// they were prefetched is read with its new content.
func TestReadAheadOfOwnFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	ctx := testCtx(t)
	d := mustMkdir(t, a, RootIno, "d").Ino
	const n = 40
	var inos []uint64
	want := map[uint64][]byte{}
	for i := range n {
		ino, errno := writeSmall(t, a, d, fmt.Sprintf("f%02d", i), content(i, 'a'), true)
		mustErrno(t, "write", errno, 0)
		inos = append(inos, ino)
		want[ino] = content(i, 'a')
	}
	mustErrno(t, "fsync d", a.Fsync(ctx, d), 0)
	if l := a.leases.get(d); l == nil || !l.held.Load() {
		t.Fatal("a does not write-lease the directory it made")
	}
	openRead(t, a, inos[0], want[inos[0]])
	// Rewritten after the prefetch, committed, then read.
	want[inos[1]] = content(1, 'b')
	if _, errno := writeSmall(t, a, d, "f01", want[inos[1]], false); errno != 0 {
		t.Fatal(errno)
	}
	mustErrno(t, "fsync f01", a.Fsync(ctx, inos[1]), 0)
	openRead(t, a, inos[1], want[inos[1]])

	slices0 := cm.slices.Load()
	for _, ino := range inos[2:] {
		openRead(t, a, ino, want[ino])
	}
	if got := cm.slices.Load() - slices0; got > 4 {
		t.Fatalf("reading %d of its own files one after another made %d slices queries", n-2, got)
	}
}

// TestReadAheadOfOwnTree: a walk reading a tree the mount made and still
// leases, directory after directory in name order (diff -r), asks the
// service for slices once per many directories, not once per directory:
// a query prefetches the files of the directories the walk reaches next,
// and the walk's reading of those asks for the ones after (prefetchAfter).
// A file changed after it was prefetched is read with its new content.
func TestReadAheadOfOwnTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	ctx := testCtx(t)
	walk, dirs := smallTree(t, a, mustMkdir(t, a, RootIno, "top").Ino)
	if err := a.FlushAll(ctx); err != nil {
		t.Fatal(err)
	}
	readTreeChanged(t, a, a, cm, walk, len(dirs))
}

// treeFile is a file smallTree made: its directory, inode, name and
// content.
type treeFile struct {
	dir, ino uint64
	name     string
	want     []byte
}

// smallTree has f write 3 small files in top, and 3 subdirectories with
// the same, two levels down: 39 files in 13 directories, listed in the
// order diff -r reads them.
func smallTree(t *testing.T, f *FS, top uint64) (walk []treeFile, dirs []uint64) {
	t.Helper()
	var fill func(dir uint64, depth int)
	fill = func(dir uint64, depth int) {
		dirs = append(dirs, dir)
		for i := range 3 {
			data, name := content(len(walk), 'a'), fmt.Sprintf("f%d", i)
			ino, errno := writeSmall(t, f, dir, name, data, true)
			mustErrno(t, "write", errno, 0)
			walk = append(walk, treeFile{dir, ino, name, data})
		}
		if depth == 2 {
			return
		}
		for i := range 3 {
			fill(mustMkdir(t, f, dir, fmt.Sprintf("s%d", i)).Ino, depth+1)
		}
	}
	fill(top, 0)
	return walk, dirs
}

// readTreeChanged has a (its calls counted by cm) read walk's files in
// order, w rewriting one of them (the second subdirectory's first file:
// within the first query's reach) after the first read, and checks every
// content and that the reads asked for slices once per 3 directories at
// most.
func readTreeChanged(t *testing.T, a, w *FS, cm *countingMeta, walk []treeFile, dirs int) {
	t.Helper()
	changed := 3 * 2
	slices0 := cm.slices.Load()
	openRead(t, a, walk[0].ino, walk[0].want)
	c := &walk[changed]
	c.want = content(changed, 'b')
	if _, errno := writeSmall(t, w, c.dir, c.name, c.want, false); errno != 0 {
		t.Fatal(errno)
	}
	for _, f := range walk[1:] {
		openRead(t, a, f.ino, f.want)
	}
	if got := cm.slices.Load() - slices0; got > int64(dirs)/3 {
		t.Fatalf("reading %d files of %d directories in walk order made %d slices queries", len(walk), dirs, got)
	}
}

// objectReads counts the reads of each object, by the offset they start
// at (small files written together share an object: pack.go).
type objectReads struct {
	Objects
	mu sync.Mutex
	n  map[objectAt]int
}

type objectAt struct {
	id  uint64
	off int64
}

func (o *objectReads) ReadAt(ctx context.Context, obj store.Object, p []byte, off int64) (int, []store.ShardResult, error) {
	o.mu.Lock()
	o.n[objectAt{uint64(obj.ID), off}]++
	o.mu.Unlock()
	return o.Objects.ReadAt(ctx, obj, p, off)
}

// count is the reads of object id from off.
func (o *objectReads) count(id uint64, off int64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[objectAt{id, off}]
}

// aheadDone reports whether ino's data was read ahead and is all there.
func aheadDone(f *FS, ino uint64) bool {
	in := f.inodes.lookup(ino)
	if in == nil {
		return false
	}
	in.mu.Lock()
	bf := in.fetches[0]
	in.mu.Unlock()
	if bf == nil || !bf.ahead {
		return false
	}
	select {
	case <-bf.done:
		return bf.errno == 0
	default:
		return false
	}
}

// TestReadAheadOfFilesData: reading a directory's files one after another,
// the next files' data is read from the stores in the background, so that
// their reads wait for none; a file changed after its data was read ahead
// (by another mount, or by the reader) is read with its new content; and
// data read ahead is dropped once read.
func TestReadAheadOfFilesData(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	objs := &objectReads{n: map[objectAt]int{}}
	a := e.mount("a", nil, func(o Objects) Objects { objs.Objects = o; return objs })
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	d := mustMkdir(t, b, RootIno, "d").Ino
	const n = 12
	big := func(i int, gen byte) []byte { return content(4*i+3, gen) } // over the inline threshold
	var inos []uint64
	want := map[uint64][]byte{}
	for i := range n {
		ino, errno := writeSmall(t, b, d, fmt.Sprintf("f%02d", i), big(i, 'a'), true)
		mustErrno(t, "write", errno, 0)
		inos = append(inos, ino)
		want[ino] = big(i, 'a')
	}
	lease := func() {
		t.Helper()
		waitUntil(t, "a read lease of d", 10*time.Second, func() bool {
			_, _, errno := a.ReadDir(ctx, d, 0, 1000)
			mustErrno(t, "readdir", errno, 0)
			return a.reads.count() == 1
		})
		for i := range n { // as the kernel does, by name, before it opens
			_, errno := a.Lookup(ctx, d, fmt.Sprintf("f%02d", i))
			mustErrno(t, "lookup", errno, 0)
		}
	}
	lease()

	openRead(t, a, inos[0], want[inos[0]])
	for _, ino := range inos[1 : 1+aheadFiles] {
		waitUntil(t, "the next files' data read ahead", 10*time.Second, func() bool { return aheadDone(a, ino) })
	}
	in := a.inodes.lookup(inos[1])
	in.mu.Lock()
	ss := in.slices[0]
	in.mu.Unlock()
	if len(ss) == 0 {
		t.Fatal("no slices cached for a file whose data was read ahead")
	}
	before := objs.count(ss[0].Object, int64(ss[0].ObjOff))
	openRead(t, a, inos[1], want[inos[1]])
	if got := objs.count(ss[0].Object, int64(ss[0].ObjOff)) - before; got != 0 {
		t.Fatalf("reading a file whose data was read ahead read its object %d more times, want none", got)
	}
	in.mu.Lock()
	kept := in.fetches[0]
	in.mu.Unlock()
	if kept != nil {
		t.Fatal("data read ahead is kept after its file was read to its end")
	}

	// b rewrites f02 after a read it ahead: a reads the new content.
	want[inos[2]] = big(2, 'b')
	if _, errno := writeSmall(t, b, d, "f02", want[inos[2]], false); errno != 0 {
		t.Fatal(errno)
	}
	openRead(t, a, inos[2], want[inos[2]])

	// a rewrites f04 after it read it ahead (under the lease again): a
	// reads the new content; then the rest.
	lease()
	openRead(t, a, inos[3], want[inos[3]])
	waitUntil(t, "data read ahead", 10*time.Second, func() bool { return aheadDone(a, inos[4]) })
	want[inos[4]] = big(4, 'c')
	if _, errno := writeSmall(t, a, d, "f04", want[inos[4]], false); errno != 0 {
		t.Fatal(errno)
	}
	for _, ino := range inos[4:] {
		openRead(t, a, ino, want[ino])
	}
	for _, ino := range inos {
		openRead(t, b, ino, want[ino])
	}
}

// TestFetchedBlocksBounded: the whole blocks the inodes keep read are
// bounded for the mount (maxFetched), the oldest going first, whichever
// inode keeps them.
func TestFetchedBlocksBounded(t *testing.T) {
	tab := newInodeTable()
	var fb fetchedBlocks
	fb.init()
	const n = 5 // blocks of maxFetched/4 bytes: the first goes with the fifth
	var ins []*inode
	var bfs []*blockFetch
	for i := range n {
		in := tab.get(uint64(100 + i))
		bf := &blockFetch{done: make(chan struct{})}
		in.mu.Lock()
		in.fetches = map[uint64]*blockFetch{7: bf}
		in.mu.Unlock()
		fb.keep(in, 7, bf, maxFetched/4)
		ins, bfs = append(ins, in), append(bfs, bf)
	}
	for i, in := range ins {
		in.mu.Lock()
		kept := in.fetches[7] == bfs[i]
		in.mu.Unlock()
		if kept != (i > 0) {
			t.Errorf("block %d of %d kept: %v", i, n, kept)
		}
	}
	// A block its inode dropped already goes without touching a newer one.
	ins[1].mu.Lock()
	newer := &blockFetch{done: make(chan struct{})}
	ins[1].fetches[7] = newer
	ins[1].mu.Unlock()
	fb.keep(ins[0], 8, &blockFetch{done: make(chan struct{})}, maxFetched/4)
	ins[1].mu.Lock()
	defer ins[1].mu.Unlock()
	if ins[1].fetches[7] != newer {
		t.Error("the bound dropped a block kept after the one it pushed out")
	}
}

// TestReadAheadOfAnotherMountsTree: the same for a tree another mount
// wrote, which the mount holds read copies of (a walk took them ahead):
// a query prefetches the files of the directories the walk reaches next,
// not only those of the file's own; a file changed after it was
// prefetched is read with its new content.
func TestReadAheadOfAnotherMountsTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, cm := e.countedMount("a")
	b := e.mount("b", nil, nil)
	ctx := testCtx(t)
	walk, dirs := smallTree(t, b, mustMkdir(t, b, RootIno, "top").Ino)
	if err := b.FlushAll(ctx); err != nil {
		t.Fatal(err)
	}
	// a takes its copies: b gives its leases back.
	for _, d := range dirs {
		waitUntil(t, "a read lease", 10*time.Second, func() bool {
			ents, _, errno := a.ReadDir(ctx, d, 0, 1000)
			mustErrno(t, "readdir", errno, 0)
			for _, en := range ents {
				_, errno := a.Lookup(ctx, d, en.Name)
				mustErrno(t, "lookup "+en.Name, errno, 0)
			}
			return a.reads.holds(d)
		})
	}
	readTreeChanged(t, a, b, cm, walk, len(dirs))
}
