package fs

import (
	"context"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// behind says how the stale answers of behindMeta differ from the leader's.
type behind int

const (
	upToDate     behind = iota
	noRecords           // the member has not applied the commit yet
	oldPlacement        // the member still has the shards' old stores
)

// behindMeta is a metadata client whose stale object-record answers come
// from a member that is behind; linearizable ones are the leader's.
type behindMeta struct {
	Meta
	how          behind
	stale, fresh atomic.Int64 // object-record queries of each kind
}

func (m *behindMeta) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	if q.GetObjects() == nil {
		return m.Meta.Read(ctx, q)
	}
	if !q.Stale {
		m.fresh.Add(1)
		return m.Meta.Read(ctx, q)
	}
	m.stale.Add(1)
	r, err := m.Meta.Read(ctx, q)
	if err != nil {
		return nil, err
	}
	switch m.how {
	case noRecords:
		r.Objects = nil
	case oldPlacement:
		// Every shard asked of a store that holds another one.
		for _, rec := range r.Objects {
			rec.Stores = append(slices.Clone(rec.Stores[1:]), rec.Stores[0])
		}
	}
	return r, nil
}

// TestReadWithObjectRecordsFromAMemberBehind: a file another mount closed
// reads whole though the member answering stale object-record queries is
// behind: the records it lacks, or whose placement fails, are asked of the
// leader. A member up to date costs no linearizable query.
func TestReadWithObjectRecordsFromAMemberBehind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.mount("writer", nil, nil)
	ctx := testCtx(t)
	a := mustCreate(t, w, RootIno, "f")
	want := pattern(3<<20, 11) // objects, not inline
	h, _, errno := w.Open(ctx, a.Ino, syscall.O_RDWR)
	mustErrno(t, "open", errno, 0)
	mustWrite(t, w, a.Ino, want, 0)
	mustErrno(t, "release", w.Release(ctx, h), 0)

	for _, tc := range []struct {
		name      string
		how       behind
		wantFresh bool
	}{
		{"up to date", upToDate, false},
		{"records missing", noRecords, true},
		{"old placement", oldPlacement, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &behindMeta{Meta: e.client(), how: tc.how}
			r := e.mount("reader "+tc.name, func(c *Config) { c.Meta = m }, nil)
			openRead(t, r, a.Ino, want)
			if m.stale.Load() == 0 {
				t.Error("no stale object-record query: the fast path was not tried")
			}
			if got := m.fresh.Load() > 0; got != tc.wantFresh {
				t.Errorf("linearizable object-record queries: %d, want them: %v", m.fresh.Load(), tc.wantFresh)
			}
		})
	}
}
