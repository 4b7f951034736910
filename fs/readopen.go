package fs

import (
	"context"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// until is when the copies stop being trusted: the session could expire
// at the service SessionTTL after its last renewal was sent; a quarter of
// that is kept for clocks and the time the kernel takes.
func (r *readLeases) until() time.Time {
	ttl := r.cfg.SessionTTL
	return time.Unix(0, r.renewed.Load()).Add(ttl - ttl/4)
}

// fresh reports whether the copies are trusted now.
func (r *readLeases) fresh() bool { return time.Now().Before(r.until()) }

// Opens under a read lease.
//
// A read-only open of a file in a directory the mount read-leases costs no
// Raft write: the file cannot lose its last name meanwhile without the
// lease being revoked first (an unlink touches the directory; one through
// another of its names touches the file, which the lease covers too), so
// the open is registered with the service (OpenOp) only when the lease is
// about to go: before it is released, and before a change of the mount's
// own that drops it. A handle closed before that was never registered and
// needs no CloseOp.

// lazyOpen is a read-only handle not registered with the service yet.
type lazyOpen struct {
	dir         uint64 // the read-leased directory that covers it
	registering bool   // its OpenOp is on its way
	closed      bool   // released meanwhile: close it once registered
}

// openLazy opens h without registering it, if a copy covers its file;
// it returns the file's attributes (the copy's: current, close-to-open).
func (r *readLeases) openLazy(h *Handle) (*metapb.Attr, bool) {
	if !r.fresh() {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.byIno[h.Ino]
	if d == nil || d.dir == h.Ino {
		return nil, false
	}
	e := &d.ents[d.byIno[h.Ino]]
	if namespace.FileType(e.a.typ) != namespace.TypeFile {
		return nil, false
	}
	d.used.Store(time.Now().UnixNano())
	e.a.served = true
	r.lazy[h] = &lazyOpen{dir: d.dir}
	return e.a.pb(), true
}

// closeLazy releases h if it was never registered (nothing to tell the
// service, or the registration on its way sends the close: true).
func (r *readLeases) closeLazy(h *Handle) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	lo := r.lazy[h]
	if lo == nil {
		return false
	}
	if lo.registering {
		lo.closed = true
	} else {
		delete(r.lazy, h)
	}
	return true
}

// register registers the handles opened under dir's lease.
func (r *readLeases) register(dir uint64) {
	r.mu.Lock()
	var hs []*Handle
	for h, lo := range r.lazy {
		if lo.dir == dir && !lo.registering {
			lo.registering = true
			hs = append(hs, h)
		}
	}
	r.mu.Unlock()
	for _, h := range hs {
		ctx, cancel := r.ctx(context.Background())
		_, errno := r.pipe.apply(ctx, &metapb.Command{Op: &metapb.Command_Open{Open: &metapb.OpenOp{
			Session: h.id >> 40, Ino: h.Ino, Handle: h.id}}})
		cancel()
		if errno != 0 {
			r.log.Error("registering a file open here failed: if another mount removes it, its reads fail", "ino", h.Ino, "errno", errno.Error())
		}
		r.mu.Lock()
		// Gone from lazy if the session was replaced meanwhile (dropAll):
		// then its release closes it the ordinary way.
		lo := r.lazy[h]
		closed := lo != nil && lo.closed
		delete(r.lazy, h)
		r.mu.Unlock()
		if closed && errno == 0 {
			r.handles.closer.add(h.id)
		}
	}
}
