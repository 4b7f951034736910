package cluster

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// memSnapshots is an in-memory raft.SnapshotStore for nodes without a data
// directory (tests). raft's InmemSnapshotStore hands out readers of the
// buffer a snapshot being taken still writes to (a data race the race
// detector reports when a follower is sent a snapshot while the next one is
// taken); here a snapshot is published, immutable, only once its sink is
// closed.
type memSnapshots struct {
	mu     sync.Mutex
	latest *memSnapshot
	nextID int
}

type memSnapshot struct {
	meta raft.SnapshotMeta
	data []byte
}

func (s *memSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprintf("mem-%d-%d-%d", term, index, s.nextID)
	s.mu.Unlock()
	return &memSnapSink{store: s, meta: raft.SnapshotMeta{Version: version, ID: id, Index: index, Term: term,
		Configuration: configuration, ConfigurationIndex: configurationIndex}}, nil
}

func (s *memSnapshots) List() ([]*raft.SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil {
		return nil, nil
	}
	m := s.latest.meta
	return []*raft.SnapshotMeta{&m}, nil
}

func (s *memSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil || s.latest.meta.ID != id {
		return nil, nil, fmt.Errorf("cluster: snapshot %s not found", id)
	}
	m := s.latest.meta
	return &m, io.NopCloser(bytes.NewReader(s.latest.data)), nil
}

// memSnapSink collects one snapshot; Close publishes it.
type memSnapSink struct {
	store *memSnapshots
	meta  raft.SnapshotMeta
	buf   bytes.Buffer
	done  bool
}

func (k *memSnapSink) Write(p []byte) (int, error) { return k.buf.Write(p) }

func (k *memSnapSink) Close() error {
	if k.done {
		return nil
	}
	k.done = true
	k.meta.Size = int64(k.buf.Len())
	k.store.mu.Lock()
	k.store.latest = &memSnapshot{meta: k.meta, data: k.buf.Bytes()}
	k.store.mu.Unlock()
	return nil
}

func (k *memSnapSink) ID() string { return k.meta.ID }

func (k *memSnapSink) Cancel() error {
	k.done = true
	return nil
}
