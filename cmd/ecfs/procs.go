package main

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// The mount's Go processors (GOMAXPROCS) follow what it is doing, unless
// --procs or the GOMAXPROCS variable fixes them.
//
// A FUSE request is a round trip: the caller sleeps in the kernel while one
// of go-fuse's reader threads, woken from its read(2) of /dev/fuse,
// answers. A request about names or attributes takes microseconds of Go
// code, and a tree command (rsync -a, rm -rf, a walk) sends one after
// another, so what it waits for is the scheduling around them: with
// several Ps, readers blocked in read(2) hold Ps that the runtime keeps
// handing to other threads, each handoff a thread woken on another CPU.
// Moving data in bulk is the other way round: encoding, checksums and many
// shard transfers at once want every CPU. Measured on this project's
// 2-CPU machine: rsync -a of Go's src into a mount took 8.2 s with 2 Ps and
// 6.8 s with 1 (the mount's CPU 5.4 s against 3.8 s), while a 1 GiB
// sequential read ran at 555 MB/s with 2 Ps and 430 MB/s with 1.
//
// So the mount runs on one P while it answers small requests, and on all of
// them (GOMAXPROCS at start: the CPUs, or a container's share) as soon as
// data moves through it at procsBulk or more, or its one P is busy
// (procsBusy of a CPU in Go code, as many callers at once on a large
// host); it goes back to one once both have stayed under half of that for
// procsHold.
const (
	procsWindow = 200 * time.Millisecond // how often the load is looked at
	procsBulk   = 64 << 20               // bytes a second read and written through the mount
	procsBusy   = 0.75                   // CPUs of user time
	procsHold   = 2 * time.Second        // quiet this long before going back to one P
)

// procsGovernor decides how many Ps the mount runs on from its load.
type procsGovernor struct {
	max   int           // the most Ps (GOMAXPROCS at start)
	cur   int           // the Ps now
	quiet time.Duration // how long the load has stayed low at cur > 1
}

// next is the number of Ps for the window that just ended, in which
// bytes were read and written through the mount and user CPU time was
// spent, given its length.
func (g *procsGovernor) next(bytes int64, user, window time.Duration) int {
	if window <= 0 {
		return g.cur
	}
	rate := float64(bytes) / window.Seconds()
	cpus := user.Seconds() / window.Seconds()
	switch {
	case rate >= procsBulk || cpus >= procsBusy:
		g.cur, g.quiet = g.max, 0
	case g.cur > 1 && rate < procsBulk/2 && cpus < procsBusy/2:
		g.quiet += window
		if g.quiet >= procsHold {
			g.cur, g.quiet = 1, 0
		}
	default:
		g.quiet = 0
	}
	return g.cur
}

// followLoad runs the mount on as many Ps as its load asks for (see
// procsGovernor) until ctx ends, then gives it back every P. moved counts
// the bytes read and written through the mount.
func followLoad(ctx context.Context, moved *atomic.Int64, log *slog.Logger) {
	g := &procsGovernor{max: runtime.GOMAXPROCS(0), cur: 1}
	if g.max <= 1 {
		return
	}
	runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(g.max)
	lastBytes, lastUser, lastAt := moved.Load(), userTime(), time.Now()
	t := time.NewTicker(procsWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			bytes, user := moved.Load(), userTime()
			was := g.cur
			if n := g.next(bytes-lastBytes, user-lastUser, now.Sub(lastAt)); n != was {
				runtime.GOMAXPROCS(n)
				log.Debug("processors", "procs", n, "was", was)
			}
			lastBytes, lastUser, lastAt = bytes, user, now
		}
	}
}

// userTime is the CPU time this process has spent in user mode.
func userTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano())
}
