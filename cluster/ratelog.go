package cluster

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// limitedLog logs each message (by its text, or the key given) at most
// once per interval, adding to the next one how many were left out: a
// warning that repeats while a peer stays dead or a scanner knocks
// should not bury the rest of the log.
type limitedLog struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	seen     map[string]*seenMsg // bounded: cleared past maxLimitedKeys
}

type seenMsg struct {
	at      time.Time
	dropped int
}

const maxLimitedKeys = 1024

func newRateLimitedLog(log *slog.Logger, interval time.Duration) *limitedLog {
	return &limitedLog{log: log, interval: interval, seen: map[string]*seenMsg{}}
}

// warn logs a warning, unless msg was logged less than interval ago.
func (l *limitedLog) warn(msg string, args ...any) { l.logKey(slog.LevelWarn, msg, msg, args...) }

// logKey logs msg at level unless a message with key was logged less
// than interval ago.
func (l *limitedLog) logKey(level slog.Level, key, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	s := l.seen[key]
	if s != nil && now.Sub(s.at) < l.interval {
		s.dropped++
		l.mu.Unlock()
		return
	}
	if len(l.seen) >= maxLimitedKeys {
		clear(l.seen)
	}
	dropped := 0
	if s != nil {
		dropped = s.dropped
	}
	l.seen[key] = &seenMsg{at: now}
	l.mu.Unlock()
	if dropped > 0 {
		args = append(args, "similar_since_last", dropped)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
