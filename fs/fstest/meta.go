// Package fstest has in-memory fakes of what the filesystem core (package
// fs) is built on, for unit tests that start no process and open no
// socket: Service and Meta, a metadata service driving the real state
// machine (cluster.FSM) without Raft or gRPC, and Objects, an object layer
// that keeps each object's bytes in memory. Both can be told to fail.
//
// The package does not import fs (the tests of fs import it); *Meta
// implements fs.Meta and *Objects implements fs.Objects.
package fstest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// ErrInjected is the error of a call failed by a Fault that names none.
var ErrInjected = errors.New("fstest: injected failure")

// Service is one metadata service: a cluster.FSM that commands are
// applied to one at a time, in order, as Raft would apply its log, each
// stamped with the time as the leader stamps it. Mounts reach it through
// clients (Client), each with its own exactly-once identity. It is safe
// for concurrent use.
type Service struct {
	t       testing.TB
	fsm     *cluster.FSM
	started time.Time // when it began to "lead": the expiry grace starts here

	mu       sync.Mutex        // orders the log
	index    uint64            // last log index applied
	sessions map[uint64]uint64 // mount sessions opened (id -> TTL in ns), for ExpireSessions

	// WithoutPacks answers Place as a service that does not keep objects
	// several files share (no PlaceResp.packs), set before mounting.
	WithoutPacks bool
}

// NewMeta returns a service whose filesystem has the erasure-coding scheme
// scheme ("4+2") and stores fake stores registered (as their heartbeats
// would: up, with plenty of free space). Store i has id "id-i", address
// "store-i" and host "host-i".
func NewMeta(t testing.TB, scheme string, stores int) *Service {
	t.Helper()
	sc, err := codec.ParseScheme(scheme)
	if err != nil {
		t.Fatalf("fstest: scheme %q: %v", scheme, err)
	}
	s := &Service{t: t, fsm: cluster.NewFSM(), started: time.Now(), sessions: map[uint64]uint64{}}
	// As Server.Init: the scheme, once, at bootstrap.
	if r := s.Propose(&metapb.Command{Op: &metapb.Command_Init{Init: &metapb.InitOp{
		Scheme: scheme, K: uint32(sc.K), M: uint32(sc.M)}}}); r.Errno != 0 || s.fsm.Scheme() == nil {
		t.Fatalf("fstest: init with scheme %q: errno %d", scheme, r.Errno)
	}
	for i := range stores {
		info := &metapb.StoreInfo{Id: fmt.Sprint("id-", i), Addr: fmt.Sprint("store-", i), Host: fmt.Sprint("host-", i),
			TotalBytes: 1 << 50, FreeBytes: 1 << 49}
		if r := s.Propose(&metapb.Command{Op: &metapb.Command_Store{Store: &metapb.StoreOp{Info: info}}}); r.Errno != 0 {
			t.Fatalf("fstest: registering store %d: errno %d", i, r.Errno)
		}
	}
	return s
}

// FSM is the state machine, for tests that look at the state directly.
func (s *Service) FSM() *cluster.FSM { return s.fsm }

// Propose applies cmd as the leader applies its own commands (a store's
// state, a session's expiry): with no client identity unless cmd has one.
// It returns the state machine's result.
func (s *Service) Propose(cmd *metapb.Command) *metapb.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd.Now = time.Now().UnixNano()
	data, err := proto.Marshal(&metapb.Batch{Commands: []*metapb.Command{cmd}})
	if err != nil {
		panic(fmt.Sprintf("fstest: encoding a command: %v", err))
	}
	s.index++
	out, ok := s.fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: data, Index: s.index, AppendedAt: time.Now()}).([]*metapb.Result)
	if !ok || len(out) != 1 {
		panic(fmt.Sprintf("fstest: the state machine answered %v for one command", out))
	}
	r := out[0]
	if op := cmd.GetSessionOpen(); op != nil && r.Errno == 0 {
		s.sessions[r.SessionId] = uint64(op.TtlNs)
	}
	// The caller gets its own copy, as from the wire: the state machine
	// keeps r for resends.
	return proto.Clone(r).(*metapb.Result)
}

// ExpireSessions does what the leader's expiry loop (cluster.Server's
// RunExpiry) does at one tick, now: it proposes the expiry of each mount
// session whose lease ran out, once the service has been up for that
// session's TTL (the grace a new leader gives). The state machine decides:
// a session renewed in time is not ended. It returns the sessions ended.
func (s *Service) ExpireSessions() []uint64 {
	s.mu.Lock()
	var cand []uint64
	now := time.Now()
	for id, ttl := range s.sessions {
		if s.started.Add(time.Duration(ttl)).Before(now) {
			cand = append(cand, id)
		}
	}
	s.mu.Unlock()
	var ended []uint64
	for _, id := range cand {
		r := s.Propose(&metapb.Command{Op: &metapb.Command_Expire{Expire: &metapb.ExpireOp{Session: id}}})
		switch syscall.Errno(r.Errno) {
		case 0:
			ended = append(ended, id)
			fallthrough
		case syscall.ESTALE: // ended meanwhile (EndOp, or expired already)
			s.mu.Lock()
			delete(s.sessions, id)
			s.mu.Unlock()
		}
	}
	return ended
}

// RunExpiry calls ExpireSessions every interval until the test ends, as
// the leader's expiry loop does (cluster uses 250 ms). Without it,
// sessions end only when a test ends them (EndOp, ExpireSessions).
func (s *Service) RunExpiry(every time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.ExpireSessions()
			}
		}
	}()
	s.t.Cleanup(func() { close(stop); <-done })
}

// Client returns a new client of the service with its own identity: a
// mount's, as a cluster.Client gives it.
func (s *Service) Client() *Meta {
	var sid [8]byte
	if _, err := rand.Read(sid[:]); err != nil {
		panic(err)
	}
	return &Meta{svc: s, session: binary.LittleEndian.Uint64(sid[:]) | 1}
}

// Fault is what an injected hook makes of one call.
type Fault struct {
	// Delay holds the call this long first (less if its context ends:
	// then the call fails with the context's error, applying nothing).
	Delay time.Duration
	// Err, if not nil, fails the call with it, as a lost request or a
	// lost connection does: the command is not applied, unless
	// AnswerLost is set.
	Err error
	// AnswerLost: the command is applied and then its answer is lost (Err,
	// or ErrInjected if Err is nil): the caller does not know whether it
	// was, and a resend with the same (Session, Seq) gets the first answer.
	AnswerLost bool
}

// Meta is one client of a Service; it implements fs.Meta as
// cluster.Client does, without the network. It is safe for concurrent use.
type Meta struct {
	svc     *Service
	session uint64 // exactly-once identity (not a mount session)
	seq     atomic.Uint64

	applyHook atomic.Pointer[func(*metapb.Command) Fault]
	readHook  atomic.Pointer[func(*metapb.ReadReq) Fault]
	applies   atomic.Int64
	reads     atomic.Int64
}

// Service is the service the client talks to.
func (m *Meta) Service() *Service { return m.svc }

// FSM is the service's state machine.
func (m *Meta) FSM() *cluster.FSM { return m.svc.fsm }

// FailApply installs h, which decides the fate of each later Apply call
// (OpenSession and Renew included: they are Apply calls); nil removes it.
// h sees the command with its Session and Seq assigned, and may be called
// from many goroutines at once.
func (m *Meta) FailApply(h func(cmd *metapb.Command) Fault) {
	if h == nil {
		m.applyHook.Store(nil)
		return
	}
	m.applyHook.Store(&h)
}

// FailRead is FailApply for Read calls (AnswerLost does not matter there).
func (m *Meta) FailRead(h func(q *metapb.ReadReq) Fault) {
	if h == nil {
		m.readHook.Store(nil)
		return
	}
	m.readHook.Store(&h)
}

// Applies counts the Apply calls made (OpenSession and Renew included),
// failed ones too.
func (m *Meta) Applies() int64 { return m.applies.Load() }

// Reads counts the Read calls made, failed ones too.
func (m *Meta) Reads() int64 { return m.reads.Load() }

// wait sleeps d, or returns ctx's error if it ends first.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctxErr(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	}
}

// ctxErr is ctx's error as a client reports it (nil while ctx is live).
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fstest: metadata service: %w", err)
	}
	return nil
}

// Apply commits a mutation exactly once, as cluster.Client.Apply: a
// command that carries this client's identity and a sequence number is the
// same command sent again, applied at most once and answered with the
// first answer. To send a new command, clear Seq.
func (m *Meta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	m.applies.Add(1)
	if cmd.Session != m.session || cmd.Seq == 0 {
		cmd.Session, cmd.Seq = m.session, m.seq.Add(1)
	}
	var f Fault
	if h := m.applyHook.Load(); h != nil {
		f = (*h)(cmd)
	}
	if err := wait(ctx, f.Delay); err != nil {
		return nil, err
	}
	if f.Err != nil && !f.AnswerLost {
		return nil, f.Err
	}
	// What the server receives is a copy (it stamps Now on its own).
	r := m.svc.Propose(proto.Clone(cmd).(*metapb.Command))
	if f.AnswerLost {
		if f.Err == nil {
			return nil, fmt.Errorf("%w: the answer was lost", ErrInjected)
		}
		return nil, f.Err
	}
	return r, nil
}

// Read answers a query from the state machine, as the leader does. A
// RevokesReq with WaitMs > 0 waits (at most 30 s) for a revocation for
// its session when there is none yet, as cluster.Server does.
func (m *Meta) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	m.reads.Add(1)
	var f Fault
	if h := m.readHook.Load(); h != nil {
		f = (*h)(q)
	}
	if err := wait(ctx, f.Delay); err != nil {
		return nil, err
	}
	if f.Err != nil {
		return nil, f.Err
	}
	if rv := q.GetRevokes(); rv != nil && rv.WaitMs > 0 {
		return m.waitRevokes(ctx, q, time.Duration(min(rv.WaitMs, 30000))*time.Millisecond)
	}
	return proto.Clone(m.svc.fsm.Read(q)).(*metapb.ReadResp), nil
}

// waitRevokes is cluster.Server's: it answers once the session has a
// revoked lease, or after wait with none.
func (m *Meta) waitRevokes(ctx context.Context, q *metapb.ReadReq, wait time.Duration) (*metapb.ReadResp, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		ch := m.svc.fsm.RevokeWatch() // before reading: a revocation in between is not missed
		r := m.svc.fsm.Read(q)
		if len(r.Dirs) > 0 || len(r.ReadDirs) > 0 || r.Errno != 0 {
			return proto.Clone(r).(*metapb.ReadResp), nil
		}
		select {
		case <-ch:
		case <-t.C:
			return proto.Clone(r).(*metapb.ReadResp), nil
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		}
	}
}

// Place allocates max(n, 1) object ids (an AllocOp, as cluster.Server's
// Place) and places each object's k+m shards on distinct stores that are
// up and have room, the first at the store after the id's rotation (id
// modulo the stores, in id order). With fewer such stores than k+m, the
// last shards are unplaced (""); with fewer than k+1, it fails (where the
// real client would keep retrying until its context ends).
func (m *Meta) Place(ctx context.Context, n int) (*metapb.PlaceResp, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	sc := m.svc.fsm.Scheme()
	if sc == nil {
		return nil, errors.New("fstest: the filesystem has no scheme")
	}
	count := uint32(max(n, 1))
	if count > 1024 {
		return nil, errors.New("fstest: at most 1024 objects at a time")
	}
	r := m.svc.Propose(&metapb.Command{Op: &metapb.Command_Alloc{Alloc: &metapb.AllocOp{Count: count}}})
	var up []*metapb.StoreInfo
	for _, st := range m.svc.fsm.Stores() {
		if st.State == cluster.StoreUp && (st.TotalBytes <= 0 || st.FreeBytes >= cluster.MinFreeBytes) {
			up = append(up, st)
		}
	}
	shards := int(sc.K + sc.M)
	if len(up) < int(sc.K)+1 {
		return nil, fmt.Errorf("fstest: %w: %d up, a write needs %d", cluster.ErrNoQuorum, len(up), sc.K+1)
	}
	resp := &metapb.PlaceResp{Scheme: sc.Scheme, InlineMax: uint32(m.svc.fsm.InlineMax()), Packs: !m.svc.WithoutPacks}
	for i := range uint64(count) {
		id := r.FirstId + i
		p := &metapb.Placement{Object: id}
		for j := range shards {
			if j >= len(up) {
				p.StoreIds, p.Addrs = append(p.StoreIds, ""), append(p.Addrs, "")
				continue
			}
			st := up[(id+uint64(j))%uint64(len(up))]
			p.StoreIds, p.Addrs = append(p.StoreIds, st.Id), append(p.Addrs, st.Addr)
		}
		resp.Placements = append(resp.Placements, p)
	}
	return resp, nil
}

// OpenSession opens a mount's session, as cluster.Client.OpenSession.
func (m *Meta) OpenSession(ctx context.Context, name string, ttl time.Duration) (uint64, time.Time, error) {
	r, err := m.Apply(ctx, &metapb.Command{Op: &metapb.Command_SessionOpen{SessionOpen: &metapb.SessionOp{TtlNs: int64(ttl), Name: name}}})
	if err != nil {
		return 0, time.Time{}, err
	}
	if r.Errno != 0 {
		return 0, time.Time{}, fmt.Errorf("fstest: opening a session: %w", syscall.Errno(r.Errno))
	}
	return r.SessionId, time.Unix(0, r.Expires), nil
}

// Renew extends a session's lease, as cluster.Client.Renew: ESTALE once
// it has ended.
func (m *Meta) Renew(ctx context.Context, id uint64) (time.Time, error) {
	r, err := m.Apply(ctx, &metapb.Command{Op: &metapb.Command_Renew{Renew: &metapb.RenewOp{Session: id}}})
	if err != nil {
		return time.Time{}, err
	}
	if r.Errno != 0 {
		return time.Time{}, syscall.Errno(r.Errno)
	}
	return time.Unix(0, r.Expires), nil
}
