package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Client calls the metadata service. It takes several member addresses,
// moves to another when one fails or has no leader, and retries with
// backoff until the call's context ends. Mutations carry (session, seq), so
// a retry after a leader change is applied once and answered with the first
// result.
type Client struct {
	addrs   []string
	conns   []*grpc.ClientConn
	cur     atomic.Int32
	session uint64
	seq     atomic.Uint64
	attempt time.Duration

	closeOnce sync.Once
}

// ErrUnauthenticated is a wrong or missing cluster secret.
var ErrUnauthenticated = errors.New("wrong cluster secret")

// NewClient returns a client of the members at addrs. It does not connect
// until the first call.
func NewClient(addrs []string, secret string, opts ...Option) (*Client, error) {
	o := applyOptions(opts)
	if len(addrs) == 0 {
		return nil, errors.New("cluster: no metadata service address")
	}
	var sid [8]byte
	if _, err := rand.Read(sid[:]); err != nil {
		return nil, err
	}
	c := &Client{addrs: addrs, session: binary.LittleEndian.Uint64(sid[:]) | 1, attempt: 5 * time.Second}
	for _, a := range addrs {
		conn, err := grpc.NewClient(a, o.dialCreds(), grpc.WithPerRPCCredentials(bearer(secret)))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("cluster: %s: %w", a, err)
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

// Close drops the connections.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		for _, conn := range c.conns {
			conn.Close()
		}
	})
}

// retryable reports whether another member (or a later try) may succeed.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// call runs f against members in turn until it succeeds, fails for good, or
// ctx ends.
func (c *Client) call(ctx context.Context, f func(context.Context, metapb.MetaClient) error) error {
	return c.callWait(ctx, 0, f)
}

// callWait is call for a request the member may hold for up to wait (a
// long poll). One attempt gets at most half of what is left of ctx (but
// more than wait): a member cut off by a partition does not refuse, it
// hangs, and a caller with a short deadline (a session renewal) must still
// get to try another member.
func (c *Client) callWait(ctx context.Context, wait time.Duration, f func(context.Context, metapb.MetaClient) error) error {
	backoff := 10 * time.Millisecond
	for {
		i := int(c.cur.Load()) % len(c.conns)
		attempt := c.attempt + wait
		if dl, ok := ctx.Deadline(); ok {
			if share := time.Until(dl) / 2; share > wait+500*time.Millisecond && share < attempt {
				attempt = share
			}
		}
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := f(actx, metapb.NewMetaClient(c.conns[i]))
		cancel()
		if err == nil {
			return nil
		}
		if status.Code(err) == codes.Unauthenticated {
			return fmt.Errorf("%w: %v", ErrUnauthenticated, err)
		}
		if retryable(err) {
			// The next call starts with the next member too.
			c.cur.CompareAndSwap(int32(i), int32((i+1)%len(c.conns)))
		}
		if !retryable(err) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("cluster: metadata service: %w (last error: %v)", ctx.Err(), err)
			}
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cluster: metadata service: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// Apply commits a mutation exactly once. A command that already carries
// this client's session and a sequence number is the same command sent
// again (its earlier call's outcome was unknown): it is applied at most
// once, and the service answers what it answered the first time. To send
// a new command, clear Seq.
func (c *Client) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	if cmd.Session != c.session || cmd.Seq == 0 {
		cmd.Session, cmd.Seq = c.session, c.seq.Add(1)
	}
	var res *metapb.Result
	err := c.call(ctx, func(ctx context.Context, m metapb.MetaClient) error {
		var err error
		res, err = m.Apply(ctx, cmd)
		return err
	})
	return res, err
}

// Read answers a query.
func (c *Client) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	var res *metapb.ReadResp
	wait := time.Duration(q.GetRevokes().GetWaitMs()) * time.Millisecond
	err := c.callWait(ctx, wait, func(ctx context.Context, m metapb.MetaClient) error {
		var err error
		res, err = m.Read(ctx, q)
		return err
	})
	return res, err
}

// Join adds a voter through any member.
func (c *Client) Join(ctx context.Context, req *metapb.JoinReq) error {
	return c.call(ctx, func(ctx context.Context, m metapb.MetaClient) error {
		_, err := m.Join(ctx, req)
		return err
	})
}

// StatusOf asks the member at index i (of the addresses given) for its
// status, without retrying elsewhere.
func (c *Client) StatusOf(ctx context.Context, i int) (*metapb.StatusResp, error) {
	return metapb.NewMetaClient(c.conns[i]).Status(ctx, &metapb.StatusReq{})
}

// DigestOf asks member i for the digest of its state and the index of the
// last log entry that state holds (read together: see StatusResp).
func (c *Client) DigestOf(ctx context.Context, i int) (applied uint64, digest string, err error) {
	st, err := metapb.NewMetaClient(c.conns[i]).Status(ctx, &metapb.StatusReq{Digest: true})
	if err != nil {
		return 0, "", err
	}
	return st.AppliedIndex, st.Digest, nil
}

// Addrs returns the member addresses the client was given.
func (c *Client) Addrs() []string { return c.addrs }

// Heartbeat registers a store or records that it is alive, with its
// capacity. It is idempotent, so it carries no session.
func (c *Client) Heartbeat(ctx context.Context, info *metapb.StoreInfo) error {
	cmd := &metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: info}}}
	return c.call(ctx, func(ctx context.Context, m metapb.MetaClient) error {
		r, err := m.Apply(ctx, cmd)
		if err == nil && r.Errno != 0 {
			return fmt.Errorf("cluster: store registration refused: errno %d", r.Errno)
		}
		return err
	})
}

// Place allocates n object ids and their stores.
func (c *Client) Place(ctx context.Context, n int) (*metapb.PlaceResp, error) {
	var res *metapb.PlaceResp
	err := c.call(ctx, func(ctx context.Context, m metapb.MetaClient) error {
		var err error
		res, err = m.Place(ctx, &metapb.PlaceReq{Count: uint32(n)})
		return err
	})
	return res, err
}

// OpenSession opens a mount's session with the given lease; its id is also
// its fencing token.
func (c *Client) OpenSession(ctx context.Context, name string, ttl time.Duration) (id uint64, expires time.Time, err error) {
	r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: int64(ttl), Name: name}}})
	if err != nil {
		return 0, time.Time{}, err
	}
	if r.Errno != 0 {
		return 0, time.Time{}, fmt.Errorf("cluster: opening a session: %w", syscall.Errno(r.Errno))
	}
	return r.SessionId, time.Unix(0, r.Expires), nil
}

// Renew extends a session's lease; a session that already expired gives
// ESTALE (its locks are gone: the mount must start over).
func (c *Client) Renew(ctx context.Context, id uint64) (time.Time, error) {
	r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Renew{Renew: &metapb.RenewOp{Session: id}}})
	if err != nil {
		return time.Time{}, err
	}
	if r.Errno != 0 {
		return time.Time{}, syscall.Errno(r.Errno)
	}
	return time.Unix(0, r.Expires), nil
}

// RemoveMember removes a voter from the group through any member.
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	return c.call(ctx, func(ctx context.Context, m metapb.MetaClient) error {
		_, err := m.Remove(ctx, &metapb.RemoveReq{Id: id})
		return err
	})
}

// Admin sends an operator's request to the leader (see metapb.AdminReq).
func (c *Client) Admin(ctx context.Context, req *metapb.AdminReq) (*metapb.AdminResp, error) {
	var res *metapb.AdminResp
	err := c.call(ctx, func(ctx context.Context, m metapb.MetaClient) error {
		var err error
		res, err = m.Admin(ctx, req)
		return err
	})
	return res, err
}
