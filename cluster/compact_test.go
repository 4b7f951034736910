package cluster

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// memObjects is a BlockIO and ShardDeleter keeping objects in memory.
type memObjects struct {
	mu      sync.Mutex
	data    map[uint64][]byte
	deleted []uint64
}

func (m *memObjects) ReadObject(_ context.Context, _ string, object uint64, _ int64, _ []string, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.data[object]
	if !ok || off+int64(len(p)) > int64(len(d)) {
		return fmt.Errorf("object %d: no bytes [%d, %d)", object, off, off+int64(len(p)))
	}
	copy(p, d[off:])
	return nil
}

func (m *memObjects) WriteObject(_ context.Context, _ string, object uint64, data []byte, placement []string, _ int) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[object] = slices.Clone(data)
	ok := make([]bool, len(placement))
	for i, a := range placement {
		ok[i] = a != ""
	}
	return ok, nil
}

func (m *memObjects) DeleteShards(_ context.Context, object uint64, _ []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deleted = append(m.deleted, object)
	return nil
}

// TestCompactorRewritesFragmentedBlocks: a block written as 20 appends and
// an overwrite is rewritten as one object with the same bytes, the file
// reads the same through its slices, and the old objects reach the GC
// queue only after the delay.
func TestCompactorRewritesFragmentedBlocks(t *testing.T) {
	srv, apply, sess := leaderWithStores(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ino := apply(createCmd(namespace.RootIno, "log", true)).Attr.Ino
	mem := &memObjects{data: map[uint64][]byte{}}
	stores := []string{"s0", "s1", "s2", "s3", "s4", "s5"}
	want := make([]byte, 0, 2000)
	commit := func(obj uint64, off uint32, b []byte) {
		mem.data[obj] = append([]byte("xx"), b...) // the slice starts at object offset 2
		apply(&metapb.Command{Op: &metapb.Command_Commit{Commit: &metapb.CommitOp{Session: sess, Ino: ino,
			Writes:  []*metapb.BlockWrite{{Block: 0, Off: off, Len: uint32(len(b)), Object: obj, ObjOff: 2}},
			Objects: []*metapb.ObjectRecord{{Id: obj, Length: int64(len(b) + 2), Stores: stores}}}}})
	}
	for i := range 20 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 100)
		commit(uint64(100+i), uint32(i*100), b)
		want = append(want, b...)
	}
	commit(200, 150, []byte("OVERWRITE"))
	copy(want[150:], "OVERWRITE")
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.RunCompactor(cctx, mem, mem, CompactConfig{Every: 20 * time.Millisecond, Idle: time.Millisecond, GCDelay: 300 * time.Millisecond})
	}()
	defer func() { ccancel(); <-done }()
	var sl []*metapb.BlockWrite
	waitFor(t, "the block compacted", 10*time.Second, func() bool {
		r := srv.fsm.Read(&metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: &metapb.SlicesReq{Ino: ino, Blocks: []uint64{0}}}})
		sl = r.Blocks[0].Slices
		return len(sl) == 1
	})
	s := sl[0]
	if s.Off != 0 || s.Len != 2000 || s.ObjOff != 0 {
		t.Fatalf("compacted slice %+v", s)
	}
	mem.mu.Lock()
	got := mem.data[s.Object]
	mem.mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatalf("compacted object holds %q...", got[:min(len(got), 40)])
	}
	// The old objects: not yet in the GC queue, not heal work; then queued.
	if n := len(srv.fsm.gcBatch(100)); n != 0 {
		t.Fatalf("%d old objects queued for GC at once", n)
	}
	waitFor(t, "the old objects queued for GC after the delay", 10*time.Second, func() bool {
		return len(srv.fsm.gcBatch(100)) == 21
	})
	if h := srv.fsm.ObjectHealth(); h.Total != 1 {
		t.Fatalf("object health %+v", h)
	}
}
