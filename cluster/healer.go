package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Errors a ShardRebuilder wraps its failures in, so the healer can tell a
// store that refuses (back off from it) from an object it cannot read.
var (
	// ErrStoreFull: the target store refused for lack of space.
	ErrStoreFull = errors.New("store full")
	// ErrStoreUnreachable: the target store did not answer.
	ErrStoreUnreachable = errors.New("store unreachable")
	// ErrSourceUnreadable: too few shards of the object could be read.
	ErrSourceUnreadable = errors.New("too few shards readable")
)

// ShardVerifier has a store read and check one shard (false: corrupt). A
// healer whose ShardStore also implements it checks a shard reported bad
// before rewriting it in place: a report may be stale (the shard was
// rewritten since) or wrong (the damage was on the wire).
type ShardVerifier interface {
	VerifyShard(ctx context.Context, addr string, object uint64, index int) (bool, error)
}

// HealConfig bounds the healer.
type HealConfig struct {
	Every    time.Duration // how often it looks at the queue; default 1 s
	Rate     int64         // bytes per second it reads to rebuild; 0: no limit
	Parallel int           // objects rebuilt at once; default 4
}

// DefaultHealRate is the healer's default rate: a fraction of what one
// store's disk and network move, so healing never starves the mounts.
const DefaultHealRate = 64 << 20

// Backoff bounds for stores that refuse and objects that fail.
const (
	healBackoffMin = 5 * time.Second
	healBackoffMax = 2 * time.Minute
)

type backoff struct {
	until  time.Time
	next   time.Duration
	reason string
}

func (b *backoff) fail(now time.Time, reason string) {
	if b.next == 0 {
		b.next = healBackoffMin
	}
	b.until, b.reason = now.Add(b.next), reason
	b.next = min(2*b.next, healBackoffMax)
}

// healer is the leader's worker that empties the heal queue: the objects
// with the fewest healthy shards first, at most Parallel at a time, at most
// Rate bytes read per second. A store that refuses a shard gets none for a
// while (doubling up to 2 min); an object that fails waits likewise.
type healer struct {
	s    *Server
	r    ShardRebuilder
	d    ShardStore
	cfg  HealConfig
	log  *slog.Logger
	wake chan struct{}
	pace pacer

	mu        sync.Mutex
	stores    map[string]*backoff // by store id
	objects   map[uint64]*backoff
	shards    uint64 // rebuilt (moved included)
	moved     uint64
	written   uint64 // shard bytes written
	read      uint64 // object bytes read to rebuild
	failures  map[string]uint64
	lastErr   string
	samples   []sample // recent reads, for the rate
	busySince time.Time
}

type sample struct {
	at    time.Time
	bytes int64
}

// pacer spaces transfers so that they average at most rate bytes/s.
type pacer struct {
	mu   sync.Mutex
	rate int64
	next time.Time
}

func (p *pacer) wait(ctx context.Context, n int64) error {
	if p.rate <= 0 {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(float64(n) / float64(p.rate) * float64(time.Second)))
	p.mu.Unlock()
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RunHealer rebuilds shards that are missing, bad or on down stores, and
// moves shards off draining stores, while this member leads, until ctx
// ends. d deletes a shard left behind once its replacement is recorded.
func (s *Server) RunHealer(ctx context.Context, r ShardRebuilder, d ShardStore, cfg HealConfig) {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	h := &healer{s: s, r: r, d: d, cfg: cfg, log: s.log.With("component", "healer"),
		wake: make(chan struct{}, 1), pace: pacer{rate: cfg.Rate},
		stores: map[string]*backoff{}, objects: map[uint64]*backoff{}, failures: map[string]uint64{}}
	s.healer.Store(h)
	defer s.healer.Store(nil)
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wake:
		}
		if s.node.IsLeader() && s.barrier.ready() {
			for h.round(ctx) && ctx.Err() == nil && s.node.IsLeader() {
				// A round that did work is followed by the next at once.
			}
		}
	}
}

// HealNow wakes the healer (if this member runs one).
func (s *Server) HealNow() {
	if h := s.healer.Load(); h != nil {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

func (h *healer) skipObject(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.objects[id]
	return b != nil && time.Now().Before(b.until)
}

// targets returns the stores new shards may go to now: placeable and not
// backing off.
func (h *healer) targets(stores []*metapb.StoreInfo) []*metapb.StoreInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	var out []*metapb.StoreInfo
	for _, st := range stores {
		if b := h.stores[st.Id]; b != nil && now.Before(b.until) {
			continue
		}
		if placeable(st) {
			out = append(out, st)
		}
	}
	return out
}

// task is one object's rebuild: shards[i] goes to to[i] (store toID[i]).
type task struct {
	job   healJob
	shard []int
	to    []string
	toID  []string
}

// plan chooses where each shard of j goes: a bad shard back onto its own
// store when that store takes shards, anything else to a store the object
// does not use, by the placement ranking.
func plan(j healJob, targets []*metapb.StoreInfo) task {
	t := task{job: j}
	ok := map[string]*metapb.StoreInfo{}
	for _, st := range targets {
		ok[st.Id] = st
	}
	used := map[string]bool{}
	for i, n := range j.needs {
		if n != shardRebuild {
			used[j.fromID[i]] = true
		}
	}
	ranked, _ := place(targets, j.object, len(targets), 1)
	next := func() *metapb.StoreInfo {
		for _, st := range ranked {
			if st != nil && !used[st.Id] {
				used[st.Id] = true
				return st
			}
		}
		return nil
	}
	for i, n := range j.needs {
		var st *metapb.StoreInfo
		switch n {
		case shardRewrite:
			if st = ok[j.fromID[i]]; st == nil {
				st = next()
			}
		case shardRebuild, shardMove:
			st = next()
		}
		if st != nil {
			t.shard, t.to, t.toID = append(t.shard, i), append(t.to, st.Addr), append(t.toID, st.Id)
		}
	}
	return t
}

// round works on the riskiest objects of the queue, and reports whether it
// did anything (so the next round can start at once).
func (h *healer) round(ctx context.Context) bool {
	sc := h.s.fsm.Scheme()
	if sc == nil {
		return false
	}
	jobs, _ := h.s.fsm.healCandidates(4*h.cfg.Parallel, h.skipObject)
	if len(jobs) == 0 {
		h.mu.Lock()
		h.busySince = time.Time{}
		h.mu.Unlock()
		return false
	}
	h.mu.Lock()
	if h.busySince.IsZero() {
		h.busySince = time.Now()
	}
	h.mu.Unlock()
	targets := h.targets(h.s.fsm.Stores())
	var tasks []task
	for _, j := range jobs {
		if t := plan(j, targets); len(t.shard) > 0 {
			tasks = append(tasks, t)
		}
	}
	if len(tasks) == 0 {
		return false
	}
	var (
		wg      sync.WaitGroup
		sem     = make(chan struct{}, h.cfg.Parallel)
		mu      sync.Mutex
		sum     healResult
		didWork bool
	)
	for _, t := range tasks {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := h.run(ctx, sc, t)
			mu.Lock()
			sum.add(r)
			didWork = didWork || r.shards > 0
			mu.Unlock()
		}()
	}
	wg.Wait()
	sum.log(h.log, h.s.fsm)
	return didWork
}

// healResult is what one task did.
type healResult struct {
	objects, shards, moved int
	verified               int // reported bad, found whole: only the record changed
	written, read          int64
	failed                 map[string]int
	firstErr               error
}

func (s *healResult) add(r healResult) {
	s.objects += r.objects
	s.shards += r.shards
	s.moved += r.moved
	s.verified += r.verified
	s.written += r.written
	s.read += r.read
	for k, v := range r.failed {
		if s.failed == nil {
			s.failed = map[string]int{}
		}
		s.failed[k] += v
	}
	if s.firstErr == nil {
		s.firstErr = r.firstErr
	}
}

func (s *healResult) log(log *slog.Logger, f *FSM) {
	if s.shards == 0 && len(s.failed) == 0 && s.verified == 0 {
		return
	}
	oh := f.ObjectHealth()
	attrs := []any{"objects", s.objects, "shards", s.shards, "moved", s.moved, "found_whole", s.verified, "bytes_read", s.read,
		"bytes_written", s.written, "pending", oh.HealPending, "corrupt", oh.Corrupt}
	if len(s.failed) > 0 {
		keys := make([]string, 0, len(s.failed))
		for k := range s.failed {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var fs string
		for _, k := range keys {
			fs += fmt.Sprintf("%s=%d ", k, s.failed[k])
		}
		attrs = append(attrs, "failed", fs[:len(fs)-1], "first_error", s.firstErr)
	}
	if s.shards == 0 && s.verified == 0 {
		log.Warn("healer could not rebuild shards; backing off", attrs...)
		return
	}
	log.Info("healer rebuilt shards", attrs...)
}

// reason names the class of a rebuild failure.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrStoreFull):
		return "full"
	case errors.Is(err, ErrStoreUnreachable):
		return "unreachable"
	case errors.Is(err, ErrSourceUnreadable):
		return "source"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "other"
}

// run rebuilds one object's shards and records each in the log.
func (h *healer) run(ctx context.Context, sc *metapb.InitOp, t task) healResult {
	j := t.job
	var r healResult
	fail := func(store, why string, err error) {
		if r.failed == nil {
			r.failed = map[string]int{}
		}
		r.failed[why]++
		if r.firstErr == nil {
			r.firstErr = err
		}
		now := time.Now()
		h.mu.Lock()
		defer h.mu.Unlock()
		h.failures[why]++
		h.lastErr = fmt.Sprintf("%s: object %016x: %v", now.UTC().Format(time.RFC3339), j.object, err)
		if store != "" {
			b := h.stores[store]
			if b == nil {
				b = &backoff{}
				h.stores[store] = b
			}
			b.fail(now, why)
			return
		}
		b := h.objects[j.object]
		if b == nil {
			b = &backoff{}
			h.objects[j.object] = b
		}
		b.fail(now, why)
	}
	// A target that refused another object since this round was planned
	// gets nothing more now.
	t = h.dropBackedOff(t)
	t, r.verified = h.verifyInPlace(ctx, t)
	if len(t.shard) == 0 {
		return r
	}
	if err := h.pace.wait(ctx, j.length); err != nil {
		return r
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	errs := h.r.RebuildShards(rctx, sc.Scheme, j.object, j.length, j.from, t.shard, t.to)
	cancel()
	r.objects = 1
	r.read = j.length
	shardLen := (j.length + int64(sc.K) - 1) / int64(sc.K)
	for i, idx := range t.shard {
		if errs[i] != nil {
			// A failure to write is the target store's (it backs off);
			// a failure to read is the object's.
			why := reason(errs[i])
			store := t.toID[i]
			if why == "source" {
				store = ""
			}
			fail(store, why, fmt.Errorf("shard %d to %s: %w", idx, t.to[i], errs[i]))
			continue
		}
		_, err := h.s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{
			Object: j.object, Index: uint32(idx), Store: t.toID[i], From: j.fromID[idx]}}})
		if err != nil {
			fail("", "commit", fmt.Errorf("recording shard %d: %w", idx, err))
			continue
		}
		r.shards++
		r.written += shardLen
		if j.needs[idx] == shardMove {
			r.moved++
		}
		// The shard it replaces, on a store still up: now nothing points at
		// it. (Rewritten in place, the new file already replaced it.)
		if old := j.fromID[idx]; old != t.toID[i] && old != "" && j.needs[idx] != shardRebuild && h.d != nil {
			if addr := j.addrs[idx]; addr != "" {
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				if err := h.d.DeleteShard(dctx, addr, j.object, idx); err != nil {
					h.log.Debug("could not delete a replaced shard; orphan GC will", "object", j.object, "shard", idx, "store", old, "err", err)
				}
				cancel()
			}
		}
	}
	h.mu.Lock()
	h.shards += uint64(r.shards)
	h.moved += uint64(r.moved)
	h.written += uint64(r.written)
	h.read += uint64(r.read)
	h.samples = append(h.samples, sample{time.Now(), r.read})
	if r.shards == len(t.shard) {
		delete(h.objects, j.object)
		for _, id := range t.toID {
			delete(h.stores, id)
		}
	}
	h.mu.Unlock()
	return r
}

// verifyInPlace checks the shards of t to be rewritten in place: one its
// store finds whole is recorded good again instead of rebuilt.
func (h *healer) verifyInPlace(ctx context.Context, t task) (task, int) {
	v, ok := h.d.(ShardVerifier)
	if !ok {
		return t, 0
	}
	j := t.job
	out := task{job: j}
	whole := 0
	for i, idx := range t.shard {
		if j.needs[idx] == shardRewrite && t.toID[i] == j.fromID[idx] {
			vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			good, err := v.VerifyShard(vctx, t.to[i], j.object, idx)
			cancel()
			if err == nil && good {
				_, err := h.s.commit.propose(ctx, &metapb.Command{Now: time.Now().UnixNano(), Op: &metapb.Command_Relocate{Relocate: &metapb.RelocateOp{
					Object: j.object, Index: uint32(idx), Store: t.toID[i], From: j.fromID[idx]}}})
				if err == nil {
					whole++
					continue
				}
			}
		}
		out.shard, out.to, out.toID = append(out.shard, idx), append(out.to, t.to[i]), append(out.toID, t.toID[i])
	}
	return out, whole
}

func (h *healer) dropBackedOff(t task) task {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	out := task{job: t.job}
	for i := range t.shard {
		if b := h.stores[t.toID[i]]; b != nil && now.Before(b.until) {
			continue
		}
		out.shard, out.to, out.toID = append(out.shard, t.shard[i]), append(out.to, t.to[i]), append(out.toID, t.toID[i])
	}
	return out
}

// rateWindow is how far back the healer's rate looks.
const rateWindow = 10 * time.Second

// status fills in the healer's figures.
func (h *healer) status(hs *metapb.HealStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	cut := 0
	var sum int64
	for i, s := range h.samples {
		if now.Sub(s.at) > rateWindow {
			cut = i + 1
			continue
		}
		sum += s.bytes
	}
	h.samples = h.samples[cut:]
	if !h.busySince.IsZero() {
		span := min(max(now.Sub(h.busySince), time.Second), rateWindow)
		hs.Rate = float64(sum) / span.Seconds()
	}
	hs.Leader = true
	hs.LastError = h.lastErr
	hs.RebuiltShards, hs.RebuiltBytes, hs.ReadBytes, hs.MovedShards = h.shards, h.written, h.read, h.moved
	hs.Failures = map[string]uint64{}
	for k, v := range h.failures {
		hs.Failures[k] = v
	}
	// Forget backoffs that ended long ago.
	for id, b := range h.objects {
		if now.Sub(b.until) > healBackoffMax {
			delete(h.objects, id)
		}
	}
}

// HealStatus is the heal queue as this member's state has it, and, on the
// leader, the healer's figures.
func (s *Server) HealStatus() *metapb.HealStatus {
	_, qs := s.fsm.healCandidates(0, nil)
	hs := &metapb.HealStatus{Pending: qs.pending, PendingBytes: qs.pendingBytes, Corrupt: qs.corrupt,
		PendingByRisk: qs.byRisk, Unreadable: qs.unreadable}
	if h := s.healer.Load(); h != nil && s.node.IsLeader() {
		h.status(hs)
		if hs.Rate > 0 && hs.PendingBytes > 0 {
			hs.EtaS = int64(float64(hs.PendingBytes)/hs.Rate) + 1
		}
	}
	return hs
}
