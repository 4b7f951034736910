package cluster

import (
	"context"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HealthConfig says when a silent store becomes suspect and then down.
type HealthConfig struct {
	SuspectAfter time.Duration // default 10s
	DownAfter    time.Duration // default 60s
	Every        time.Duration // how often the leader checks; default 1s
}

func (h *HealthConfig) defaults() {
	if h.SuspectAfter <= 0 {
		h.SuspectAfter = 10 * time.Second
	}
	if h.DownAfter <= 0 {
		h.DownAfter = 60 * time.Second
	}
	if h.DownAfter < h.SuspectAfter {
		h.DownAfter = h.SuspectAfter
	}
	if h.Every <= 0 {
		h.Every = time.Second
	}
}

// RunHealth marks stores suspect, then down, when their heartbeats stop. It
// acts only while this member leads, proposing each verdict as a log entry
// (the state machine never reads a clock). It returns when ctx ends.
func (s *Server) RunHealth(ctx context.Context, h HealthConfig) {
	h.defaults()
	s.whileLeader(ctx, h.Every, func() {
		now := time.Now().UnixNano()
		for _, st := range s.fsm.Stores() {
			age := time.Duration(now - st.LastHeartbeat)
			next := ""
			switch {
			case st.State == StoreDraining:
			case age > h.DownAfter && st.State != StoreDown:
				next = StoreDown
			case age > h.SuspectAfter && age <= h.DownAfter && st.State == StoreUp:
				next = StoreSuspect
			}
			if next == "" {
				continue
			}
			_, err := s.commit.propose(ctx, &metapb.Command{Now: now, Op: &metapb.Command_StoreState{
				StoreState: &metapb.StoreStateOp{Id: st.Id, State: next}}})
			if err != nil {
				s.limited.warn("could not record a store's health", "store", st.Id, "state", next, "err", err)
				continue
			}
			s.log.Warn("store is "+next, "store", st.Id, "addr", st.Addr, "silent_for", age.Round(time.Second))
		}
	})
}

// whileLeader calls f every interval while this member leads, until ctx
// ends.
func (s *Server) whileLeader(ctx context.Context, every time.Duration, f func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Only once this leader has applied every entry of earlier terms
		// (its barrier): the healer, GC and expiry plan from the FSM.
		if s.node.IsLeader() && s.barrier.ready() {
			f()
		}
	}
}

// Init records the filesystem's scheme if none is set yet (bootstrap).
func (s *Server) Init(ctx context.Context, scheme string, k, m int) error {
	return s.InitWith(ctx, &metapb.InitOp{Scheme: scheme, K: uint32(k), M: uint32(m)})
}

// InitWith is Init with every setting of a new filesystem (the inline
// threshold too).
func (s *Server) InitWith(ctx context.Context, op *metapb.InitOp) error {
	for ctx.Err() == nil {
		if s.fsm.Scheme() != nil {
			return nil
		}
		if s.node.IsLeader() {
			_, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Init{Init: op}})
			if err == nil {
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // poll for leadership
		}
	}
	return ctx.Err()
}

// Place allocates object ids and chooses each object's stores.
func (s *Server) Place(ctx context.Context, req *metapb.PlaceReq) (*metapb.PlaceResp, error) {
	if resp, fwd, err := viaLeader(s, ctx, req, metapb.MetaClient.Place); fwd {
		return resp, err
	}
	sc := s.fsm.Scheme()
	if sc == nil {
		return nil, status.Error(codes.FailedPrecondition, "the filesystem has no scheme yet (bootstrap has not finished)")
	}
	n := max(req.Count, 1)
	if n > 1024 {
		return nil, status.Error(codes.InvalidArgument, "at most 1024 objects at a time")
	}
	res, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Alloc{Alloc: &metapb.AllocOp{Count: n}}})
	if err != nil {
		return nil, toStatus(err)
	}
	stores := s.fsm.Stores()
	resp := &metapb.PlaceResp{Scheme: sc.Scheme, InlineMax: uint32(s.fsm.InlineMax()), Packs: s.votersHave(FeaturePacks)}
	for i := range uint64(n) {
		id := res.FirstId + i
		chosen, err := place(stores, id, int(sc.K+sc.M), int(sc.K+1))
		if err != nil {
			return nil, status.Error(codes.ResourceExhausted, err.Error())
		}
		p := &metapb.Placement{Object: id}
		for _, st := range chosen {
			if st == nil {
				p.StoreIds, p.Addrs = append(p.StoreIds, ""), append(p.Addrs, "")
			} else {
				p.StoreIds, p.Addrs = append(p.StoreIds, st.Id), append(p.Addrs, st.Addr)
			}
		}
		resp.Placements = append(resp.Placements, p)
	}
	return resp, nil
}
