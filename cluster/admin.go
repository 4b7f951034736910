package cluster

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Admin serves an operator's request on the leader: wake the healer, start
// or stop a drain, or check the filesystem (fsck).
func (s *Server) Admin(ctx context.Context, req *metapb.AdminReq) (*metapb.AdminResp, error) {
	if resp, fwd, err := viaLeader(s, ctx, req, metapb.MetaClient.Admin); fwd {
		return resp, err
	}
	switch op := req.Op.(type) {
	case *metapb.AdminReq_HealNow:
		s.HealNow()
		return &metapb.AdminResp{}, nil
	case *metapb.AdminReq_Drain:
		return s.drain(ctx, op.Drain)
	case *metapb.AdminReq_Fsck:
		if s.fsck == nil {
			return nil, status.Error(codes.Unimplemented, "this member cannot reach the stores (no fsck wiring)")
		}
		r, err := s.fsck(ctx, op.Fsck)
		if err != nil {
			return nil, toStatus(err)
		}
		return &metapb.AdminResp{Fsck: r}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "unknown admin request")
}

// storeByName finds a store by id or address.
func (s *Server) storeByName(name string) *metapb.StoreInfo {
	for _, st := range s.fsm.Stores() {
		if st.Id == name || st.Addr == name {
			return st
		}
	}
	return nil
}

// storeRemoveQuiet is how long a store must have been silent to be removed.
const storeRemoveQuiet = 10 * time.Second

// drain marks a store draining (no new shards; the healer moves its shards
// off), with cancel takes it back as up, or with remove forgets a store
// that holds no shard and has stopped reporting.
func (s *Server) drain(ctx context.Context, req *metapb.DrainReq) (*metapb.AdminResp, error) {
	st := s.storeByName(req.Store)
	if st == nil {
		return nil, status.Errorf(codes.NotFound, "no store %q (give its id or address, as ecfs status shows them)", req.Store)
	}
	next := StoreDraining
	if req.Remove {
		if n := s.fsm.ShardsOn()[st.Id]; n > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "store %s still holds %d shards: drain it first (ecfs drain --wait)", st.Id, n)
		}
		if age := time.Duration(time.Now().UnixNano() - st.LastHeartbeat); age < storeRemoveQuiet {
			return nil, status.Errorf(codes.FailedPrecondition, "store %s reported %s ago: stop its daemon first (it would come back)", st.Id, age.Round(time.Second))
		}
		next = storeRemoved
	} else if req.Cancel {
		if st.State != StoreDraining {
			return nil, status.Errorf(codes.FailedPrecondition, "store %s is %s, not draining", st.Id, st.State)
		}
		next = StoreUp
	} else if st.State == StoreDraining {
		return &metapb.AdminResp{Store: st.Id}, nil
	}
	r, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_StoreState{
		StoreState: &metapb.StoreStateOp{Id: st.Id, State: next}}})
	if err != nil {
		return nil, toStatus(fmt.Errorf("recording the drain: %w", err))
	}
	if r.Errno != 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "store %s: %v (shards were recorded on it meanwhile?)", st.Id, syscall.Errno(r.Errno))
	}
	s.log.Info("store "+next, "store", st.Id, "addr", st.Addr, "was", st.State)
	s.HealNow()
	return &metapb.AdminResp{Store: st.Id}, nil
}
