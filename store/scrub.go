package store

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Defaults of the background scrub.
const (
	DefaultScrubInterval = 24 * time.Hour
	DefaultScrubRate     = 64 << 20 // bytes per second
)

// corruptSet remembers the shards found corrupt (by a read, a verify or the
// scrub) until they are rewritten or deleted, for the healer to ask about.
type corruptSet struct {
	mu   sync.Mutex
	keys map[ShardKey]time.Time
}

func (c *corruptSet) add(k ShardKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[ShardKey]time.Time{}
	}
	if _, ok := c.keys[k]; !ok {
		c.keys[k] = time.Now().UTC()
	}
}

func (c *corruptSet) remove(k ShardKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.keys, k)
}

// CorruptShard is one entry of GET /v1/corrupt.
type CorruptShard struct {
	Key   string    `json:"key"`
	Found time.Time `json:"found"`
}

func (c *corruptSet) list() []CorruptShard {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CorruptShard, 0, len(c.keys))
	for k, t := range c.keys {
		out = append(out, CorruptShard{Key: k.String(), Found: t})
	}
	slices.SortFunc(out, func(a, b CorruptShard) int {
		if a.Key < b.Key {
			return -1
		}
		if a.Key > b.Key {
			return 1
		}
		return 0
	})
	return out
}

// Scrub verifies every shard, at most cfg.ScrubRate bytes per second, once
// every cfg.ScrubInterval, until ctx is done. Corrupt shards are counted,
// logged and listed by GET /v1/corrupt.
func (s *Server) Scrub(ctx context.Context) {
	if s.cfg.ScrubInterval < 0 {
		return
	}
	for {
		start := time.Now()
		n, bad, err := s.scrubPass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Error("scrub pass failed", "err", err)
		} else {
			s.log.Info("scrub pass done", "shards", n, "corrupt", bad, "took", time.Since(start).Round(time.Second))
		}
		t := time.NewTimer(s.cfg.ScrubInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// scrubPass verifies every shard once and returns how many it checked and
// how many were corrupt.
func (s *Server) scrubPass(ctx context.Context) (n, bad int, err error) {
	after := ""
	for {
		page, next, err := s.disks.list(after, DefaultListLimit)
		if err != nil {
			return n, bad, err
		}
		for _, info := range page {
			k, err := ParseShardKey(info.Key)
			if err != nil {
				continue
			}
			start := time.Now()
			res, err := s.disks.verify(k)
			if err != nil {
				continue // deleted meanwhile
			}
			n++
			if !res.OK {
				bad++
				s.corrupt.add(k)
				s.m.corruptChunks.Add(float64(max(len(res.BadChunks), 1)))
				s.log.Error("scrub found a corrupt shard", "shard", k, "bad_chunks", res.BadChunks, "err", res.Error)
			}
			// Pace the pass: sleeping here keeps the scrub at ScrubRate.
			pause := time.Duration(float64(info.Size)/float64(s.cfg.ScrubRate)*float64(time.Second)) - time.Since(start)
			if pause > 0 {
				t := time.NewTimer(pause)
				select {
				case <-ctx.Done():
					t.Stop()
					return n, bad, ctx.Err()
				case <-t.C:
				}
			}
			if ctx.Err() != nil {
				return n, bad, ctx.Err()
			}
		}
		if next == "" {
			return n, bad, nil
		}
		after = next
	}
}

// CorruptShards returns up to n of the shards known corrupt (what GET
// /v1/corrupt lists), for the store's heartbeat to report to the healer.
func (s *Server) CorruptShards(n int) []ShardKey {
	s.corrupt.mu.Lock()
	defer s.corrupt.mu.Unlock()
	out := make([]ShardKey, 0, min(len(s.corrupt.keys), n))
	for k := range s.corrupt.keys {
		if len(out) == n {
			break
		}
		out = append(out, k)
	}
	return out
}
