package fuse

import (
	"testing"
	"time"
)

// TestBusyDirsWaitForIdle: a directory with a request in progress is not
// idle until its last request ends; waitIdle gives up at its deadline,
// and other directories are idle meanwhile.
func TestBusyDirsWaitForIdle(t *testing.T) {
	b := newBusyDirs()
	if !b.waitIdle(7, time.Now()) {
		t.Fatal("a directory with no request is not idle")
	}
	b.enter(7)
	b.enter(7)
	b.enter(8)
	b.leave(8)
	if !b.waitIdle(8, time.Now()) {
		t.Fatal("a directory whose request ended is not idle")
	}
	start := time.Now()
	if b.waitIdle(7, start.Add(50*time.Millisecond)) {
		t.Fatal("idle with two requests in progress")
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before its deadline", took)
	}
	b.leave(7)
	if b.waitIdle(7, time.Now().Add(10*time.Millisecond)) {
		t.Fatal("idle with a request still in progress")
	}
	done := make(chan bool)
	go func() { done <- b.waitIdle(7, time.Now().Add(time.Minute)) }()
	select {
	case <-done:
		t.Fatal("waitIdle returned while the request was in progress")
	case <-time.After(20 * time.Millisecond):
	}
	b.leave(7)
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("waitIdle gave up although the directory went idle")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitIdle did not return when the directory went idle")
	}
	if len(b.n) != 0 || len(b.idle) != 0 {
		t.Fatalf("left behind: counts %v, waiters %v", b.n, b.idle)
	}
}
