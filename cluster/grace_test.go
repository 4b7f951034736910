package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// TestSessionGraceAfterElection: a new leader expires no session before it
// could hear that session's renewals for a whole TTL. Renewals cannot get
// through while there is no leader (an election, a frozen leader), so a
// mount whose deadline passed meanwhile renewed in time as far as it could:
// expiring it would end its session and give its locks to another mount
// although it never stopped renewing (fencing then turns its writes into
// EIO for nothing). Once the grace has passed, a session that still does
// not renew expires.
func TestSessionGraceAfterElection(t *testing.T) {
	g := newTestGroup(t, 3)
	l := g.leader(t)
	srvs := g.servers(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, len(g.nodes))
	for i := range g.nodes {
		go func() { srvs[i].RunExpiry(ctx, 20*time.Millisecond); done <- struct{}{} }()
	}
	t.Cleanup(func() { // before the servers close (cleanups run last first)
		cancel()
		for range g.nodes {
			<-done
		}
	})
	const ttl = 2 * time.Second
	r, err := srvs[l].Apply(ctx, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: int64(ttl)}}})
	if err != nil || r.Errno != 0 {
		t.Fatalf("open a session: %v %v", r, err)
	}
	id, deadline := r.SessionId, time.Unix(0, r.Expires)

	// Leadership moves shortly before the deadline, and the session cannot
	// renew until after it.
	time.Sleep(time.Until(deadline.Add(-ttl / 4))) // the clock is the subject here
	next := (l + 1) % 3
	transferLeadership(t, g, l, next)
	elected := time.Now()
	time.Sleep(time.Until(deadline.Add(ttl / 4)))
	if time.Since(elected) >= ttl {
		t.Fatalf("the election took %v, longer than the TTL: the test tests nothing", time.Since(elected))
	}
	r, err = srvs[next].Apply(ctx, &metapb.Command{Op: &metapb.Command_Renew{Renew: &metapb.RenewOp{Session: id}}})
	if err != nil || r.Errno != 0 {
		t.Fatalf("a renewal %v after the deadline, %v after the election: %v %v (the new leader expired a session that could not renew)",
			time.Since(deadline).Round(time.Millisecond), time.Since(elected).Round(time.Millisecond), r, err)
	}
	// Without renewals it expires once its TTL has passed again.
	waitFor(t, "the session to expire without renewals", 3*ttl, func() bool {
		f := g.fsms[next]
		f.mu.RLock()
		defer f.mu.RUnlock()
		return f.mounts[id] == nil
	})
}
