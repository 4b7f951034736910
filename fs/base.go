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
