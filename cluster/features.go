package cluster

import (
	"context"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/hashicorp/raft"
)

// Features a build of the metadata service supports, announced by each
// member in its MemberOp (MemberOp.features). A feature whose commands
// every replica must apply alike is offered to clients only once every
// voter has announced it: a group upgraded one member at a time runs old
// and new builds side by side, and an old member would apply such a
// command otherwise (its state would differ, and its GC, once it leads,
// would act on it).
const (
	// FeaturePacks: CommitOp.pack (objects several files share; pack.go).
	FeaturePacks uint32 = 1 << 0

	// Features is this build's.
	Features = FeaturePacks
)

// FeatureNames names the features in bits, as ecfs status shows them.
func FeatureNames(bits uint32) []string {
	var names []string
	if bits&FeaturePacks != 0 {
		names = append(names, "packs")
	}
	return names
}

// MemberFeatures is the features member id announced (0 if none).
func (f *FSM) MemberFeatures(id string) uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if m := f.members[id]; m != nil {
		return m.Features
	}
	return 0
}

// votersHave reports whether every voter of the current configuration
// announced feature.
func (s *Server) votersHave(feature uint32) bool {
	cf := s.node.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	voters := 0
	for _, m := range cf.Configuration().Servers {
		if m.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.fsm.MemberFeatures(string(m.ID))&feature == 0 {
			return false
		}
	}
	return voters > 0
}

// voterAddr is this member's address in the configuration ("" if it is not
// a voter there).
func (s *Server) voterAddr() string {
	cf := s.node.raft.GetConfiguration()
	if cf.Error() != nil {
		return ""
	}
	for _, m := range cf.Configuration().Servers {
		if string(m.ID) == s.node.cfg.ID && m.Suffrage == raft.Voter {
			return string(m.Address)
		}
	}
	return ""
}

// announced reports whether the member's record holds this build's API
// address and features.
func (s *Server) announced() bool {
	id := s.node.cfg.ID
	return s.fsm.MemberAPI(id) == s.apiAddr && s.fsm.MemberFeatures(id) == s.features
}

// AnnounceSelf records this member's API address and features: the
// leader proposes its own record (the bootstrap node has nobody to join
// through); a follower whose record is out of date (a new build restarted
// in place) joins again through the leader, which records it. It retries
// until ctx ends.
func (s *Server) AnnounceSelf(ctx context.Context) {
	for ctx.Err() == nil {
		if !s.announced() {
			var err error
			if s.node.IsLeader() {
				_, err = s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Member{
					Member: &metapb.MemberOp{Id: s.node.cfg.ID, RaftAddr: string(s.node.trans.LocalAddr()), ApiAddr: s.apiAddr, Features: s.features},
				}})
			} else if addr := s.voterAddr(); addr != "" && s.apiAddr != "" {
				// As a voter at the address it has: Join adds nothing then.
				_, err = s.Join(ctx, &metapb.JoinReq{Id: s.node.cfg.ID, RaftAddr: addr, ApiAddr: s.apiAddr, Features: s.features})
			}
			if err == nil && s.announced() {
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-s.node.raft.LeaderCh():
		case <-time.After(time.Second): // re-check: leadership, or the record applied here
		}
	}
}
