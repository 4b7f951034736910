package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Server serves the metadata API of one member. Any member accepts any
// request: it proposes mutations when it leads and forwards them otherwise.
type Server struct {
	metapb.UnimplementedMetaServer
	node    *Node
	fsm     *FSM
	apiAddr string
	secret  string
	commit  *committer
	barrier *termBarrier
	check   *leaderCheck
	log     *slog.Logger
	healer  atomic.Pointer[healer] // while RunHealer runs
	// features is what this member announces (Features; tests change it).
	features uint32
	fsck     func(context.Context, *metapb.FsckReq) (*metapb.FsckResp, error)

	opts    options
	refused APIRefusals
	limited *limitedLog // repeating warnings: calls without the secret, the workers'

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by API address, for forwarding
}

// NewServer wires the API to a running node.
func NewServer(node *Node, fsm *FSM, apiAddr, secret string, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "meta-api")
	return &Server{
		node: node, fsm: fsm, apiAddr: apiAddr, secret: secret, opts: applyOptions(opts), features: Features,
		limited: newRateLimitedLog(log, 30*time.Second),
		commit:  newCommitter(node.raft, 10*time.Second),
		barrier: newTermBarrier(node.raft),
		check:   &leaderCheck{raft: node.raft},
		log:     log,
		conns:   map[string]*grpc.ClientConn{},
	}
}

// Close stops the group commit and the leadership watch, and drops
// forwarding connections.
func (s *Server) Close() {
	s.commit.close()
	s.barrier.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = map[string]*grpc.ClientConn{}
}

// ObserveCommits calls f with the latency of each batch of commands this
// member commits as leader: from handing it to Raft until its results
// (replicated to a quorum, applied here).
func (s *Server) ObserveCommits(f func(time.Duration)) { s.commit.observe.Store(&f) }

// Refusals counts the API's refused connections and calls.
func (s *Server) Refusals() *APIRefusals { return &s.refused }

// GRPCServer returns a gRPC server with this API and the secret check.
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer(append(s.opts.serverCreds(&s.refused, s.log), grpc.UnaryInterceptor(s.authenticate))...)
	metapb.RegisterMetaServer(g, s)
	return g
}

func (s *Server) authenticate(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if v := md.Get("authorization"); len(v) == 1 {
		tok, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.secret)) != 1 {
		s.refused.Secret.Add(1)
		s.limited.warn("rejected request: wrong or missing cluster secret", "method", info.FullMethod)
		return nil, status.Error(codes.Unauthenticated, "wrong or missing cluster secret")
	}
	return h(ctx, req)
}

// leaderAPI returns the API address of the current leader ("" if unknown).
func (s *Server) leaderAPI() string {
	_, id := s.node.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	return s.fsm.MemberAPI(string(id))
}

func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, s.opts.dialCreds(), grpc.WithPerRPCCredentials(bearer(s.secret)))
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// viaLeader runs call on the leader when this member does not lead: it
// reports forwarded=true with the leader's answer. A request already
// forwarded once is not forwarded again (Unavailable: the client retries).
func viaLeader[Req, Resp any](s *Server, ctx context.Context, req Req,
	call func(metapb.MetaClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (resp Resp, forwarded bool, err error) {
	if s.node.IsLeader() {
		return resp, false, nil
	}
	if isForwarded(ctx) {
		return resp, true, status.Error(codes.Unavailable, ErrNotLeader.Error())
	}
	c, err := s.forward(ctx)
	if err != nil {
		return resp, true, err
	}
	resp, err = call(c, markForwarded(ctx), req)
	return resp, true, err
}

// forward sends a request to the leader, or says there is none.
func (s *Server) forward(ctx context.Context) (metapb.MetaClient, error) {
	addr := s.leaderAPI()
	if addr == "" || addr == s.apiAddr {
		return nil, status.Error(codes.Unavailable, ErrNotLeader.Error()+": no leader known yet")
	}
	c, err := s.conn(addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connecting to the leader %s: %v", addr, err)
	}
	return metapb.NewMetaClient(c), nil
}

// Apply proposes a mutation (forwarding it to the leader when needed).
func (s *Server) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if resp, fwd, err := viaLeader(s, ctx, cmd, metapb.MetaClient.Apply); fwd {
		return resp, err
	}
	cmd.Now = time.Now().UnixNano()
	res, err := s.commit.propose(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	return res, nil
}

// Read answers a query; unless it may be stale, only the leader answers
// (a follower forwards it), once it may answer linearizably.
func (s *Server) Read(ctx context.Context, req *metapb.ReadReq) (*metapb.ReadResp, error) {
	if !req.Stale {
		if resp, fwd, err := viaLeader(s, ctx, req, metapb.MetaClient.Read); fwd {
			return resp, err
		}
		if err := s.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	if rv := req.GetRevokes(); rv != nil && rv.WaitMs > 0 {
		return s.waitRevokes(ctx, req, time.Duration(min(rv.WaitMs, 30000))*time.Millisecond)
	}
	return s.fsm.Read(req), nil
}

// linearizable returns nil when this member's state machine holds every
// write acknowledged before the call: it has applied all entries of earlier
// terms (its barrier of this term completed; a new leader may still be
// applying the previous leader's) and it still leads (a round of
// VerifyLeader begun after the call). The barrier is checked again after
// the round, so both hold for one term. Otherwise the error is one the
// client retries (Unavailable), or ctx's.
func (s *Server) linearizable(ctx context.Context) error {
	if err := s.barrier.wait(ctx); err != nil {
		return toStatus(err)
	}
	if err := s.check.verify(ctx); err != nil {
		return toStatus(fmt.Errorf("%w: %v", ErrNotLeader, err))
	}
	if !s.barrier.ready() {
		return toStatus(fmt.Errorf("%w: leadership changed while it was confirmed", ErrNotLeader))
	}
	return nil
}

// waitRevokes answers a RevokesReq once the session has a revoked lease,
// or after wait with none.
func (s *Server) waitRevokes(ctx context.Context, req *metapb.ReadReq, wait time.Duration) (*metapb.ReadResp, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		ch := s.fsm.RevokeWatch() // before reading: a revocation in between is not missed
		r := s.fsm.Read(req)
		if len(r.Dirs) > 0 || len(r.ReadDirs) > 0 || r.Errno != 0 {
			return r, nil
		}
		select {
		case <-ch:
		case <-t.C:
			return r, nil
		case <-ctx.Done():
			return nil, toStatus(ctx.Err())
		}
	}
}

// Join adds a voter and records its API address; idempotent.
func (s *Server) Join(ctx context.Context, req *metapb.JoinReq) (*metapb.JoinResp, error) {
	if req.Id == "" || req.RaftAddr == "" || req.ApiAddr == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs an id, a raft address and an API address")
	}
	if resp, fwd, err := viaLeader(s, ctx, req, metapb.MetaClient.Join); fwd {
		return resp, err
	}
	if err := s.node.AddVoter(req.Id, req.RaftAddr); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Member{
		Member: &metapb.MemberOp{Id: req.Id, RaftAddr: req.RaftAddr, ApiAddr: req.ApiAddr, Features: req.Features},
	}}); err != nil {
		return nil, toStatus(err)
	}
	return &metapb.JoinResp{}, nil
}

// Remove removes a voter.
func (s *Server) Remove(ctx context.Context, req *metapb.RemoveReq) (*metapb.RemoveResp, error) {
	if resp, fwd, err := viaLeader(s, ctx, req, metapb.MetaClient.Remove); fwd {
		return resp, err
	}
	if err := s.node.RemoveServer(req.Id); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Member{
		Member: &metapb.MemberOp{Id: req.Id, Remove: true},
	}}); err != nil {
		return nil, toStatus(err)
	}
	return &metapb.RemoveResp{}, nil
}

// Status reports what this member knows: its own state, the leader and the
// members (each member's state is as this member sees it).
func (s *Server) Status(ctx context.Context, req *metapb.StatusReq) (*metapb.StatusResp, error) {
	r := s.node.raft
	resp := &metapb.StatusResp{
		Id:           s.node.cfg.ID,
		State:        strings.ToLower(r.State().String()),
		LeaderApi:    s.leaderAPI(),
		AppliedIndex: r.AppliedIndex(),
		Inodes:       s.fsm.Inodes(),
		Stores:       s.fsm.Stores(),
		Heal:         s.HealStatus(),
		Packs:        s.votersHave(FeaturePacks),
	}
	on := s.fsm.ShardsOn()
	for _, st := range resp.Stores {
		st.Shards = uint64(on[st.Id])
	}
	if sc := s.fsm.Scheme(); sc != nil {
		resp.Scheme = sc.Scheme
	}
	oh := s.fsm.ObjectHealth()
	resp.Objects, resp.GcPending = uint64(oh.Total), uint64(oh.GCPending)
	resp.ObjectsDegraded, resp.ObjectsUnreadable = uint64(oh.Degraded), uint64(oh.Unreadable)
	resp.ObjectsHealPending = uint64(oh.HealPending)
	if req.Digest {
		at, d, err := s.fsm.AppliedDigest()
		if err != nil {
			return nil, toStatus(err)
		}
		// The index of the state digested (0: not known yet), not raft's,
		// read above: it counts entries handed to the state machine and
		// not yet applied, and more may have been applied since.
		resp.Digest, resp.AppliedIndex = hex.EncodeToString(d[:]), at
	}
	cf := r.GetConfiguration()
	if err := cf.Error(); err == nil {
		_, leader := r.LeaderWithID()
		for _, m := range cf.Configuration().Servers {
			st := "follower"
			if m.ID == leader {
				st = "leader"
			}
			resp.Members = append(resp.Members, &metapb.Member{
				Id: string(m.ID), RaftAddr: string(m.Address), ApiAddr: s.fsm.MemberAPI(string(m.ID)), State: st,
				Features: s.fsm.MemberFeatures(string(m.ID)),
			})
		}
	}
	return resp, nil
}

const forwardedKey = "ecfs-forwarded"

func markForwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

func isForwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

func toStatus(err error) error {
	switch {
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrNotLeader), errors.Is(err, ErrStopped):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// bearer is per-RPC credentials carrying the cluster secret.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
