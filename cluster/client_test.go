package cluster

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// TestClientTriesAnotherMemberWithinAShortDeadline: a member cut off by a
// partition does not refuse a connection, it hangs. A call whose deadline
// is shorter than one attempt (a session renewal has one TTL, 4 s in the
// fault harness, and an attempt was 5 s) must still reach another member,
// and the next call must not start with the hanging one again.
func TestClientTriesAnotherMemberWithinAShortDeadline(t *testing.T) {
	g := newTestGroup(t, 1)
	g.leader(t)
	srv := NewServer(g.nodes[0], g.fsms[0], "", "secret", slog.New(slog.DiscardHandler))
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.GRPCServer()
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	// A black hole: it accepts connections and never answers.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		hole.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})

	c, err := NewClient([]string{hole.Addr().String(), ln.Addr().String()}, "secret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	id, _, err := c.OpenSession(ctx, "m", 4*time.Second)
	if err != nil {
		t.Fatalf("a call with a 4 s deadline and one hanging member of two: %v", err)
	}
	t.Logf("answered after %v", time.Since(start).Round(time.Millisecond))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel2()
	start = time.Now()
	if _, err := c.Renew(ctx2, id); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the next call took %v: it started with the hanging member again", d)
	}
}
