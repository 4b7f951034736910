package fs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Concurrent use of the components that TestCoreConcurrentTreeOps (view,
// leases, pipeline), TestPipelineOrder, TestBufferBudget and
// TestConcurrentReadWrite (data plane, budget) do not drive alone: the
// inode table, the handle table with its closer, and the placer.

// TestInodeTableConcurrent: gets, forgets and failures of a few inodes
// from many goroutines. An inode that is open, or has a failure nobody was
// told of, is never forgotten (the same object comes back), and no failure
// is lost.
func TestInodeTableConcurrent(t *testing.T) {
	t.Parallel()
	tab := newInodeTable()
	const workers, rounds, inos = 8, 2000, 8
	var failures [inos + 1]atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for range rounds {
				ino := uint64(1 + r.IntN(inos))
				switch r.IntN(3) {
				case 0: // open, forget while open, close
					in := tab.getLocked(ino)
					in.opens++
					in.mu.Unlock()
					tab.forget(ino)
					if got := tab.lookup(ino); got != in {
						errs <- fmt.Errorf("inode %d was forgotten while open", ino)
						return
					}
					in.mu.Lock()
					in.opens--
					in.mu.Unlock()
				case 1:
					tab.failed(ino)
					failures[ino].Add(1)
				default:
					tab.forget(ino)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for ino := uint64(1); ino <= inos; ino++ {
		n := failures[ino].Load()
		in := tab.lookup(ino)
		if n == 0 {
			continue
		}
		if in == nil {
			t.Fatalf("inode %d with %d failures nobody was told of was forgotten", ino, n)
		}
		in.mu.Lock()
		got := in.errs
		in.mu.Unlock()
		if got != uint64(n) {
			t.Fatalf("inode %d recorded %d failures, want %d", ino, got, n)
		}
	}
}

// TestHandlesConcurrent: many goroutines open, write and close one file
// (through the service: in the root) and files made under a lease (their
// opens and closes written behind) while another mount unlinks them. Every
// close succeeds, no descriptor stays registered here, and once the last
// is closed the service frees each file: no open record was lost or left.
func TestHandlesConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mount("m", nil, nil)
	other := e.mount("other", nil, nil)
	ctx := testCtx(t)
	dir := mustMkdir(t, m, RootIno, "leased").Ino
	files := []uint64{mustCreate(t, m, RootIno, "plain").Ino}
	for i := range 2 {
		a, h, errno := m.CreateOpen(ctx, dir, fmt.Sprint("wb", i), 0o644, 0, 0, syscall.O_CREAT|syscall.O_RDWR)
		mustErrno(t, "create under the lease", errno, 0)
		mustErrno(t, "close", m.Release(ctx, h), 0)
		files = append(files, a.Ino)
	}
	// One descriptor of each stays open until the workers are done: an
	// unlinked file no descriptor holds is gone (an open by inode number
	// then fails, as it should).
	var anchors []*Handle
	for _, ino := range files {
		h, _, errno := m.Open(ctx, ino, syscall.O_RDONLY)
		mustErrno(t, "open the anchor", errno, 0)
		anchors = append(anchors, h)
	}
	const workers, rounds = 8, 40
	var opened atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 4))
			for range rounds {
				ino := files[r.IntN(len(files))]
				h, _, errno := m.Open(ctx, ino, syscall.O_RDWR)
				if errno != 0 {
					errs <- fmt.Errorf("open %d: %v", ino, errno)
					return
				}
				opened.Add(1)
				if _, errno := m.WriteFile(ctx, h, []byte{byte(w)}, int64(w)); errno != 0 {
					errs <- fmt.Errorf("write %d: %v", ino, errno)
					return
				}
				if r.IntN(2) == 0 {
					if errno := m.FlushFile(ctx, h); errno != 0 {
						errs <- fmt.Errorf("flush %d: %v", ino, errno)
						return
					}
				}
				if errno := m.Release(ctx, h); errno != 0 {
					errs <- fmt.Errorf("close %d: %v", ino, errno)
					return
				}
			}
		}()
	}
	// Meanwhile another mount unlinks them (revoking the lease): the
	// files live on while open here.
	waitUntil(t, "the first opens", 10*time.Second, func() bool { return opened.Load() >= workers })
	mustErrno(t, "unlink plain", other.Unlink(ctx, RootIno, "plain"), 0)
	for i := range 2 {
		mustErrno(t, "unlink under the lease", other.Unlink(ctx, dir, fmt.Sprint("wb", i)), 0)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, ino := range files {
		if _, errno := other.GetAttr(ctx, ino); errno != 0 {
			t.Fatalf("inode %d, unlinked and open, is gone: %v", ino, errno)
		}
		mustErrno(t, "close the anchor", m.Release(ctx, anchors[i]), 0)
	}
	if n := len(m.handles.open()); n != 0 {
		t.Fatalf("%d descriptors still registered after every close", n)
	}
	for _, ino := range files {
		waitUntil(t, fmt.Sprint("inode ", ino, " to be freed"), 10*time.Second, func() bool {
			_, errno := other.GetAttr(ctx, ino)
			return errno == syscall.ENOENT
		})
	}
}

// TestPlacerConcurrent: placements asked from many goroutines at once
// (while one store is marked failed) are each handed out once, with k+m
// stores.
func TestPlacerConcurrent(t *testing.T) {
	t.Parallel()
	f, _ := newTestFS(t)
	p := &f.data.places
	p.bad("store-0")
	const workers, each = 8, 60
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				pl, err := p.get(context.Background(), 5)
				if err != nil {
					errs <- err
					return
				}
				if len(pl.Addrs) != f.base.scheme.Shards() {
					errs <- fmt.Errorf("placement of %d stores", len(pl.Addrs))
					return
				}
				mu.Lock()
				dup := seen[pl.Object]
				seen[pl.Object] = true
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("object %d handed out twice", pl.Object)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != workers*each {
		t.Fatalf("%d placements, want %d", len(seen), workers*each)
	}
}

// TestServiceAnswerKeepsTheMountsOwnAttributes: the service's answer to a
// change sent through it (a data commit whose lease was busy or moving)
// does not replace attributes the mount keeps as its own under a lease:
// they may be newer (here: unlinked behind, link count 0, its unlink still
// queued), and versions of the two do not compare. Only the size and times
// the commit made grow. Before, the answer put the link count back to 1,
// and a chmod after the last close was written behind and refused.
func TestServiceAnswerKeepsTheMountsOwnAttributes(t *testing.T) {
	in := &inode{ino: 7, wb: newDirLease(2, 1)}
	in.attr = &metapb.Attr{Ino: 7, Nlink: 0, Size: 10, Mtime: 100, Ctime: 100, Version: 3}
	in.setAttr(&metapb.Attr{Ino: 7, Nlink: 1, Size: 4, Mtime: 50, Ctime: 50, Version: 9})
	if a := in.attr; a.Nlink != 0 || a.Size != 10 || a.Mtime != 100 {
		t.Fatalf("after an older answer: nlink %d size %d mtime %d, want the mount's 0, 10, 100", a.Nlink, a.Size, a.Mtime)
	}
	in.setAttr(&metapb.Attr{Ino: 7, Nlink: 1, Size: 20, Mtime: 200, Ctime: 200, Version: 10})
	if a := in.attr; a.Nlink != 0 || a.Size != 20 || a.Mtime != 200 || a.Version <= 3 {
		t.Fatalf("after a commit through the service: nlink %d size %d mtime %d version %d, want 0, 20, 200 and a new version", a.Nlink, a.Size, a.Mtime, a.Version)
	}
	in.wb = nil // ordinary: the service's answer is the attributes
	in.setAttr(&metapb.Attr{Ino: 7, Nlink: 1, Size: 20, Mtime: 200, Version: 11})
	if in.attr.Nlink != 1 || in.attr.Version != 11 {
		t.Fatalf("an ordinary inode keeps %+v, want the service's answer", in.attr)
	}
}

// TestCloneAttrCopiesEveryField: cloneAttr copies each field of
// metapb.Attr (a field added to the message and not to cloneAttr fails
// here).
func TestCloneAttrCopiesEveryField(t *testing.T) {
	a := &metapb.Attr{}
	m := a.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch fd.Kind() {
		case protoreflect.Uint64Kind:
			m.Set(fd, protoreflect.ValueOfUint64(uint64(100+i)))
		case protoreflect.Uint32Kind:
			m.Set(fd, protoreflect.ValueOfUint32(uint32(100+i)))
		case protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(int64(100+i)))
		default:
			t.Fatalf("metapb.Attr.%s is a %v: teach cloneAttr (and this test) to copy it", fd.Name(), fd.Kind())
		}
	}
	if c := cloneAttr(a); !proto.Equal(a, c) || c == a {
		t.Fatalf("cloneAttr(%v) = %v", a, c)
	}
}
