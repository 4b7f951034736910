package fs

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// countingMeta counts the calls a mount makes about the namespace: every
// Apply but the session's renewals, every Read but the long poll for
// revocations.
type countingMeta struct {
	Meta
	n       atomic.Int64
	applies atomic.Int64 // changes only

	mu           sync.Mutex
	leases       []uint32     // the modes of the LeaseOps sent alone
	batched      []uint32     // and in batches
	grantBatches atomic.Int64 // batches with write leases (mode 4) in them

	slices, objects atomic.Int64 // slices and object-record queries
	readdirs        atomic.Int64
	listings        atomic.Int64   // queries listing several directories
	reads           map[uint64]int // read leases asked for (mode 5), by directory; under mu
	refused         atomic.Int64   // answers refused for another mount's lease
}

func (m *countingMeta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	m.n.Add(1)
	m.applies.Add(1)
	if l := cmd.GetLease(); l != nil {
		m.mu.Lock()
		m.leases = append(m.leases, l.Mode)
		m.noteRead(l)
		m.mu.Unlock()
	}
	if mo := cmd.GetMulti(); mo != nil { // the leases in a batch too
		m.mu.Lock()
		grants := false
		for _, c := range mo.Commands {
			if l := c.GetLease(); l != nil {
				m.batched = append(m.batched, l.Mode)
				m.noteRead(l)
				grants = grants || l.Mode == 4
			}
		}
		m.mu.Unlock()
		if grants {
			m.grantBatches.Add(1)
		}
	}
	r, err := m.Meta.Apply(ctx, cmd)
	if err == nil && r.Leased {
		m.refused.Add(1)
	}
	return r, err
}

// noteRead counts a read lease asked for. m.mu is held.
func (m *countingMeta) noteRead(l *metapb.LeaseOp) {
	if l.Mode != 5 {
		return
	}
	if m.reads == nil {
		m.reads = map[uint64]int{}
	}
	m.reads[l.Dir]++
}

// readsOf is how many times a read lease of dir was asked for.
func (m *countingMeta) readsOf(dir uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads[dir]
}

// leaseModes returns the modes of the LeaseOps sent, and forgets them.
func (m *countingMeta) leaseModes() []uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.leases
	m.leases = nil
	return out
}

// allLeaseModes returns the modes of the LeaseOps sent, alone or in
// batches, and forgets them.
func (m *countingMeta) allLeaseModes() []uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append(m.leases, m.batched...)
	m.leases, m.batched = nil, nil
	return out
}

func (m *countingMeta) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	if q.GetRevokes() == nil {
		m.n.Add(1)
	}
	if q.GetSlices() != nil {
		m.slices.Add(1)
	}
	if q.GetObjects() != nil {
		m.objects.Add(1)
	}
	if q.GetReaddirs() != nil {
		m.listings.Add(1)
	}
	if q.GetReaddir() != nil {
		m.readdirs.Add(1)
	}
	r, err := m.Meta.Read(ctx, q)
	if err == nil && r.Leased {
		m.refused.Add(1)
	}
	return r, err
}

// countedMount mounts name with its calls to the service counted.
func (e *env) countedMount(name string) (*FS, *countingMeta) {
	e.t.Helper()
	cm := &countingMeta{}
	return e.mount(name, func(c *Config) { cm.Meta = c.Meta; c.Meta = cm }, nil), cm
}
