package fs

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// renewer keeps the mount's session alive, and replaces it when it was
// lost. It holds no lock.
type renewer struct {
	*base
	meta    Meta
	pipe    *pipeline
	handles *handleTable
	leases  *leaseTable
	reads   *readLeases
	done    chan struct{} // closed when run returns
}

// run renews the session every third of its TTL. A session that
// expired anyway (the mount was cut off longer than its lease) is replaced
// by a new one: its locks and directory leases are lost, and the files open
// here are registered again under it (one freed meanwhile, unlinked
// elsewhere, is said in the log; its reads fail). What was written under
// the old session is committed under it or not at all (the service refuses
// it: EIO at fsync and close), and if a lock was held then, every
// descriptor open, and every one opened until those that held locks are
// closed, is fenced (fence).
func (r *renewer) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.SessionTTL / 3)
	defer t.Stop()
	var fails failures
	guarded := make(chan struct{})
	go func() {
		defer close(guarded)
		r.guard(ctx)
	}()
	defer func() { <-guarded }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, r.cfg.SessionTTL)
		sent := time.Now()
		_, err := r.meta.Renew(cctx, r.pipe.session())
		cancel()
		if err == nil {
			r.reads.renewed.Store(sent.UnixNano())
		}
		if errors.Is(err, syscall.ESTALE) {
			r.log.Error("the mount's session expired: its locks are lost; opening a new one")
			cctx, cancel := context.WithTimeout(ctx, r.cfg.MetaTimeout)
			opened := time.Now()
			id, _, err := r.meta.OpenSession(cctx, r.cfg.Name, r.cfg.SessionTTL)
			cancel()
			if err != nil {
				r.log.Error("opening a new session", "err", err)
				continue
			}
			r.handles.fence()
			r.reads.dropAll()
			r.pipe.sess.Store(id)
			r.reads.renewed.Store(opened.UnixNano())
			r.leases.dropAll(false)
			r.handles.reopen(ctx, id)
		} else if err != nil && ctx.Err() == nil {
			fails.fail(r.log, "renewing the session", "err", err)
		} else if err == nil {
			fails.ok(r.log, "the session is renewed again")
		}
	}
}

// guard gives the write leases back while the session is in doubt: not
// renewed within three quarters of its TTL (a renewal that hangs counts as
// failed). The session, and so the leases, may end at the service any time
// then, and another mount change what they hold: everything is asked of
// the service until a renewal succeeds (read leases stop answering by
// themselves, and no write lease is taken meanwhile).
func (r *renewer) guard(ctx context.Context) {
	t := time.NewTicker(r.cfg.SessionTTL / 8)
	defer t.Stop()
	inDoubt := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.reads.fresh() {
			inDoubt = false
			continue
		}
		if r.leases.count() == 0 {
			continue
		}
		if !inDoubt {
			r.log.Warn("the session may be lost: giving back the directory leases")
		}
		inDoubt = true
		r.leases.dropAll(true)
	}
}
