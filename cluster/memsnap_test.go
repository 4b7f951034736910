package cluster

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// TestMemSnapshotsReadWhileTaking: a snapshot being sent (read) while the
// next one is taken (written) reads the bytes it was published with; the
// next one replaces it only when closed. Under -race this is what raft's
// InmemSnapshotStore fails.
func TestMemSnapshotsReadWhileTaking(t *testing.T) {
	s := &memSnapshots{}
	take := func(index uint64, data []byte) string {
		sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		return sink.ID()
	}
	first := bytes.Repeat([]byte{1}, 1<<16)
	id := take(10, first)
	meta, rc, err := s.Open(id)
	if err != nil || meta.Index != 10 || meta.Size != int64(len(first)) {
		t.Fatalf("open: %+v %v", meta, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sink, _ := s.Create(raft.SnapshotVersionMax, 20, 1, raft.Configuration{}, 1, nil)
		for range 64 {
			sink.Write(bytes.Repeat([]byte{2}, 4096))
		}
		// Not closed yet: the first is still the latest.
		if l, _ := s.List(); len(l) != 1 || l[0].ID != id {
			t.Errorf("an unfinished snapshot was listed: %+v", l)
		}
		sink.Close()
	}()
	got, err := io.ReadAll(rc)
	wg.Wait()
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("read %d bytes (%v), want the first snapshot's %d", len(got), err, len(first))
	}
	if l, _ := s.List(); len(l) != 1 || l[0].Index != 20 {
		t.Fatalf("latest after the second: %+v", l)
	}
	if _, _, err := s.Open(id); err == nil {
		t.Fatal("the replaced snapshot still opens")
	}
}
