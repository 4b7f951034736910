package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// TestFeatureOfferedOnceEveryVoterHasIt: packed objects are offered to
// mounts (votersHave) only once every voter's record announces them: a
// member on an older build (no features) keeps them off; its record
// survives a snapshot; the leader announces its own.
func TestFeatureOfferedOnceEveryVoterHasIt(t *testing.T) {
	g := newTestGroup(t, 3)
	srvs := g.servers(t)
	l := g.leader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	member := func(i int, features uint32) {
		t.Helper()
		if _, err := g.comms[l].propose(ctx, &metapb.Command{Op: &metapb.Command_Member{Member: &metapb.MemberOp{
			Id: fmt.Sprint("n", i), RaftAddr: fmt.Sprint("n", i), ApiAddr: fmt.Sprint("api", i), Features: features}}}); err != nil {
			t.Fatal(err)
		}
	}
	offered := func() bool {
		for i, s := range srvs {
			waitFor(t, "the records applied everywhere", 10*time.Second, func() bool {
				a, _ := g.fsms[i].Digest()
				b, _ := g.fsms[l].Digest()
				return a == b
			})
			if s.votersHave(FeaturePacks) != srvs[l].votersHave(FeaturePacks) {
				t.Fatalf("members disagree on whether every voter has packs")
			}
		}
		return srvs[l].votersHave(FeaturePacks)
	}
	if offered() {
		t.Fatal("packs offered before any member announced them")
	}
	member(0, Features)
	member(1, Features)
	member(2, 0) // an older build
	if offered() {
		t.Fatal("packs offered while a voter's build does not have them")
	}
	status := func(wantPacks bool, want2 uint32) {
		t.Helper()
		st, err := srvs[l].Status(ctx, &metapb.StatusReq{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Packs != wantPacks {
			t.Fatalf("status says packs %v, want %v", st.Packs, wantPacks)
		}
		for _, m := range st.Members {
			if want := map[bool]uint32{true: want2, false: Features}[m.Id == "n2"]; m.Features != want {
				t.Fatalf("status shows member %s with features %d, want %d", m.Id, m.Features, want)
			}
		}
	}
	status(false, 0)
	if got := restored(t, g.fsms[l]).MemberFeatures("n1"); got != Features {
		t.Fatalf("a member's features after a snapshot: %d, want %d", got, Features)
	}
	member(2, Features)
	if !offered() {
		t.Fatal("packs not offered once every voter has them")
	}
	status(true, Features)

	// The leader announces its own record (its API address is "" here).
	member(l, 0)
	go srvs[l].AnnounceSelf(ctx)
	waitFor(t, "the leader's announcement", 10*time.Second, func() bool {
		return g.fsms[l].MemberFeatures(fmt.Sprint("n", l)) == Features
	})
}
