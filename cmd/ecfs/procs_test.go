package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestProcsFollowTheLoad(t *testing.T) {
	const w = procsWindow
	bulk := int64(procsBulk*w.Seconds()) + 1 // the marks, rounded up
	busy := time.Duration(procsBusy*float64(w)) + time.Microsecond
	g := &procsGovernor{max: 8, cur: 1}
	step := func(what string, bytes int64, user time.Duration, want int) {
		t.Helper()
		if got := g.next(bytes, user, w); got != want {
			t.Fatalf("%s: %d procs, want %d", what, got, want)
		}
	}
	step("idle", 0, 0, 1)
	step("small requests", bulk/10, busy/3, 1)
	step("bulk data", bulk, 0, 8)
	// Back to one only after procsHold of quiet; a busy window in between
	// starts the wait again.
	quiet := int(procsHold / w)
	for i := range quiet - 1 {
		step("quiet "+time.Duration(i).String(), bulk/4, busy/4, 8)
	}
	step("data again, under the bulk mark but over half of it", bulk*3/4, 0, 8)
	for range quiet - 1 {
		step("quiet again", 0, 0, 8)
	}
	step("quiet for procsHold", 0, 0, 1)
	step("its one P busy", 0, busy, 8)
	step("still busy at 8 Ps", 0, 2*busy, 8)

	one := &procsGovernor{max: 1, cur: 1}
	if got := one.next(bulk*10, busy*10, w); got != 1 {
		t.Fatalf("one CPU: %d procs", got)
	}
	if got := g.next(bulk, busy, 0); got != g.cur {
		t.Fatalf("an empty window changed the procs to %d", got)
	}
}

func TestFollowLoadGivesBackEveryP(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	if before < 2 {
		t.Logf("one CPU: followLoad leaves GOMAXPROCS at %d", before)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var moved atomic.Int64
	go func() { followLoad(ctx, &moved, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	if before >= 2 {
		waitProcs(t, 1)
		// Bulk data: every P, within a window or two.
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
					moved.Add(procsBulk / 10)
				}
			}
		}()
		waitProcs(t, before)
		close(stop)
	}
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS %d after followLoad, was %d", got, before)
	}
}

func waitProcs(t *testing.T, want int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); runtime.GOMAXPROCS(0) != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS %d, want %d", runtime.GOMAXPROCS(0), want)
		}
	}
}

func TestProcsOption(t *testing.T) {
	var cfg mountConfig
	if err := applyMountOpts(&cfg, "attr_timeout=2s,procs=3", io.Discard, nil); err != nil || cfg.Procs != 3 {
		t.Fatalf("-o procs=3: procs %d, err %v", cfg.Procs, err)
	}
	if err := applyMountOpts(&cfg, "procs=many", io.Discard, nil); err == nil {
		t.Fatal("-o procs=many accepted")
	}
	err := runMount([]string{"--meta", "127.0.0.1:1", "--secret-file", "/nonexistent", "--procs", "-1", t.TempDir()}, io.Discard, io.Discard)
	if _, ok := err.(*usageError); !ok || !strings.Contains(err.Error(), "--procs") {
		t.Fatalf("--procs -1: %v, want a usage error naming --procs", err)
	}
}
