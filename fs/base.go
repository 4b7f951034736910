package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/codec"
)

// base is what every component of the core shares, read-only once the
// filesystem is made: the configuration, the logger and the scheme.
type base struct {
	cfg     Config
	log     *slog.Logger
	debugOn bool // the logger takes Debug records (per-change logs)
	scheme  codec.Scheme
	packs   bool // the service kept objects several files share when the mount began (PlaceResp.packs)
}

// ctx bounds one metadata call by MetaTimeout.
func (b *base) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.MetaTimeout)
}

// ioErr logs err and returns EIO, or EINTR if the caller gave up.
func (b *base) ioErr(what string, err error) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	b.log.Error(what+" call failed", "err", err)
	return syscall.EIO
}

// sleepCtx waits d, or returns EIO when ctx ends first (EINTR if it was
// canceled).
func sleepCtx(ctx context.Context, d time.Duration) syscall.Errno {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return syscall.EINTR
		}
		return syscall.EIO
	}
}

// signal wakes whoever waits on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// failures logs a background task's failures without flooding the log
// while the service stays away: a warning once failures reach after in a
// row, then at most one per failureEvery (saying how many in all), and an
// info line once it works again. One goroutine uses it (a loop's local);
// the zero value warns at the first failure.
type failures struct {
	after  int // failures in a row before the first warning (0: 1)
	n      int // failures in a row
	warned time.Time
}

// failureEvery is how often a failing task warns again.
const failureEvery = time.Minute

func (f *failures) fail(log *slog.Logger, msg string, args ...any) {
	f.n++
	if f.n >= max(f.after, 1) && (f.warned.IsZero() || time.Since(f.warned) >= failureEvery) {
		f.warned = time.Now()
		log.Warn(msg, append(args, "failures_in_a_row", f.n)...)
		return
	}
	log.Debug(msg, args...)
}

func (f *failures) ok(log *slog.Logger, msg string) {
	if !f.warned.IsZero() {
		log.Info(msg, "after_failures", f.n)
	}
	f.n, f.warned = 0, time.Time{}
}
