package fs

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// levels counts the records logged through it by level.
type levels struct {
	mu sync.Mutex
	n  map[slog.Level]int
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Level]++
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

// TestFailuresLogOncePerMinute: a task failing every second while the
// service is away warns once (after two in a row, if so set), not at each
// failure; once it works again an info line says so; a lone failure
// between successes is not a warning.
func TestFailuresLogOncePerMinute(t *testing.T) {
	h := &levels{n: map[slog.Level]int{}}
	log := slog.New(h)
	f := failures{after: 2}
	f.fail(log, "poll")
	f.ok(log, "again")
	if h.n[slog.LevelWarn] != 0 || h.n[slog.LevelInfo] != 0 {
		t.Errorf("a lone failure: %v", h.n)
	}
	for range 100 {
		f.fail(log, "poll")
	}
	if h.n[slog.LevelWarn] != 1 {
		t.Errorf("100 failures in a row gave %d warnings, want 1", h.n[slog.LevelWarn])
	}
	f.warned = f.warned.Add(-failureEvery) // a minute later
	f.fail(log, "poll")
	if h.n[slog.LevelWarn] != 2 {
		t.Errorf("a failure a minute after the warning: %d warnings, want 2", h.n[slog.LevelWarn])
	}
	f.ok(log, "again")
	if h.n[slog.LevelInfo] != 1 {
		t.Errorf("recovery logged %d info lines, want 1", h.n[slog.LevelInfo])
	}
	if f.n != 0 || !f.warned.Equal(time.Time{}) {
		t.Error("ok did not reset the streak")
	}
}
