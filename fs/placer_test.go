package fs

import (
	"context"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// placeMeta answers Place with placements over the same six stores.
type placeMeta struct {
	Meta
	calls int
}

func (m *placeMeta) Place(ctx context.Context, n int) (*metapb.PlaceResp, error) {
	m.calls++
	r := &metapb.PlaceResp{}
	for range n {
		r.Placements = append(r.Placements, &metapb.Placement{Object: uint64(m.calls), Addrs: []string{"s0", "s1", "s2", "s3", "s4", "s5"}})
	}
	return r, nil
}

// TestPlacerRetriesStoresMarkedFailing: with two of six stores marked as
// just failed and a write quorum of 5, the placer does not give up while
// the service keeps placing on them (they came back: rolling restarts).
func TestPlacerRetriesStoresMarkedFailing(t *testing.T) {
	m := &placeMeta{}
	p := &placer{meta: m}
	p.mu.Init(levelPlacer, "placer.mu")
	p.bad("s1")
	pl, err := p.get(context.Background(), 5)
	if err != nil || pl == nil {
		t.Fatalf("one store marked failing: %v", err)
	}
	p.bad("s2") // now two
	if _, err := p.get(context.Background(), 5); err != nil {
		t.Fatalf("two stores marked failing, the service placing on them: %v", err)
	}
	if time.Now().Before(p.down["s1"]) || time.Now().Before(p.down["s2"]) {
		t.Error("the stores stay marked failing after the placer had to use them")
	}
}
