package cluster

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

// records keeps what is logged through it.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// TestRaftLogRateLimited: raft's repeating warning (a dead member's
// failed heartbeats) is logged once per raftLogEvery with the count left
// out; a new group's first election is info, a later one a warning; the
// level and message are hclog's, not its whole line.
func TestRaftLogRateLimited(t *testing.T) {
	h := &records{}
	w := newSlogWriter(slog.New(h))
	for i := range 100 {
		w.Write([]byte(`2026-11-29T05:45:31.540Z [ERROR] raft: failed to heartbeat to: peer=127.0.0.23:9101 backoff time=` + string(rune('0'+i%10)) + "ms error=\"dial tcp: connection refused\"\n"))
	}
	w.Write([]byte("2026-11-29T05:45:31.540Z [WARN]  raft: heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=\n"))
	w.Write([]byte("2026-11-29T05:45:40.000Z [WARN]  raft: heartbeat timeout reached, starting election: last-leader-addr=127.0.0.21:9101 last-leader-id=m0\n"))
	if len(h.recs) != 2 {
		for _, r := range h.recs {
			t.Logf("%v %s", r.Level, r.Message)
		}
		t.Fatalf("%d records, want 2: one heartbeat failure, one election", len(h.recs))
	}
	if r := h.recs[0]; r.Level != slog.LevelError || r.Message != `failed to heartbeat to: peer=127.0.0.23:9101 backoff time=0ms error="dial tcp: connection refused"` {
		t.Errorf("first record: %v %q", r.Level, r.Message)
	}
	if r := h.recs[1]; r.Level != slog.LevelInfo {
		t.Errorf("a new group's first election logged at %v", r.Level)
	}
	// The later election has the same message up to its keys: it waits its
	// turn too. A new writer logs it as the warning it is.
	h2 := &records{}
	w2 := newSlogWriter(slog.New(h2))
	w2.Write([]byte("2026-11-29T05:45:40.000Z [WARN]  raft: heartbeat timeout reached, starting election: last-leader-addr=127.0.0.21:9101 last-leader-id=m0\n"))
	if len(h2.recs) != 1 || h2.recs[0].Level != slog.LevelWarn {
		t.Errorf("an election after a leader was lost: %+v", h2.recs)
	}
	// Once raftLogEvery has passed, the next one is logged with the count.
	w.limit.mu.Lock()
	for _, s := range w.limit.seen {
		s.at = s.at.Add(-raftLogEvery)
	}
	w.limit.mu.Unlock()
	w.Write([]byte("2026-11-29T05:46:31.540Z [ERROR] raft: failed to heartbeat to: peer=127.0.0.23:9101 backoff time=1ms\n"))
	if len(h.recs) != 3 {
		t.Fatalf("%d records after the interval, want 3", len(h.recs))
	}
	var dropped int64
	h.recs[2].Attrs(func(a slog.Attr) bool {
		if a.Key == "similar_since_last" {
			dropped = a.Value.Int64()
		}
		return true
	})
	if dropped != 99 {
		t.Errorf("similar_since_last = %d, want 99", dropped)
	}
}
