package fs

import (
	"slices"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// The mount's own changes and its read leases (readlease.go).

// changing is called before a change of the mount's own goes to the
// service: the copies it touches are dropped (and their leases given
// back), and a lease being taken that it touches is spoiled. The returned
// function is called once the service answered.
func (r *readLeases) changing(cmd *metapb.Command) (done func()) {
	targets := r.targets(cmd)
	if len(targets) == 0 {
		return func() {}
	}
	r.mu.Lock()
	var drop []*readDir
	for _, t := range targets {
		delete(r.hits, t) // looked up between changes of its own: not worth a lease
		r.inflight[t]++
		for _, d := range r.unpublishCovering(t) {
			r.backoff(d.dir, d.taken)
			drop = append(drop, d)
			if d.dir == t {
				// Its entries change here: write-lease it now
				// (wantWrite), not after leaseAfter changes.
				if len(r.writes) > 4096 {
					clear(r.writes)
				}
				r.writes[t] = true
			}
		}
	}
	for _, l := range r.loads {
		l.touched = append(l.touched, targets...)
	}
	for l := range r.tracks {
		l.touched = append(l.touched, targets...)
	}
	r.mu.Unlock()
	for _, d := range drop {
		r.register(d.dir) // before the change: it may remove a file open here
		r.giveBack(d, giveOwn)
	}
	return func() {
		r.mu.Lock()
		for _, t := range targets {
			if r.inflight[t]--; r.inflight[t] <= 0 {
				delete(r.inflight, t)
			}
		}
		for _, l := range r.loads {
			l.touched = append(l.touched, targets...)
		}
		for l := range r.tracks {
			l.touched = append(l.touched, targets...)
		}
		r.mu.Unlock()
	}
}

// track starts recording the inodes the mount's own changes touch, for a
// write lease's load: a file whose attributes changed after the load read
// them, or are changing, must not be adopted with them (untrack).
func (r *readLeases) track() *readLoad {
	l := &readLoad{}
	r.mu.Lock()
	r.tracks[l] = true
	r.mu.Unlock()
	return l
}

// untrack stops recording for l and returns the inodes touched since
// track, or being changed now.
func (r *readLeases) untrack(l *readLoad) map[uint64]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.tracks, l)
	out := make(map[uint64]bool, len(l.touched)+len(r.inflight))
	for _, ino := range l.touched {
		out[ino] = true
	}
	for ino := range r.inflight {
		out[ino] = true
	}
	return out
}

// targets lists the directories and inodes whose cached entries or
// attributes a change may alter (as the service's touchedDirs and
// touchedInodes; a name's inode is found in the copy of its directory).
func (r *readLeases) targets(cmd *metapb.Command) []uint64 {
	named := func(parent uint64, name string) uint64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		if d := r.dirs[parent]; d != nil {
			if i, ok := d.byName[name]; ok {
				return d.ents[i].a.ino
			}
		}
		return 0
	}
	var out []uint64
	switch op := cmd.Op.(type) {
	case *metapb.Command_Create:
		out = []uint64{op.Create.Parent}
	case *metapb.Command_Mkdir:
		out = []uint64{op.Mkdir.Parent}
	case *metapb.Command_Symlink:
		out = []uint64{op.Symlink.Parent}
	case *metapb.Command_Link:
		out = []uint64{op.Link.NewParent, op.Link.Ino}
	case *metapb.Command_Unlink:
		out = []uint64{op.Unlink.Parent, named(op.Unlink.Parent, op.Unlink.Name)}
	case *metapb.Command_Rmdir:
		out = []uint64{op.Rmdir.Parent, named(op.Rmdir.Parent, op.Rmdir.Name)}
	case *metapb.Command_Rename:
		o := op.Rename
		out = []uint64{o.OldParent, o.NewParent, named(o.OldParent, o.OldName), named(o.NewParent, o.NewName)}
	case *metapb.Command_Setattr:
		out = []uint64{op.Setattr.Ino}
	case *metapb.Command_Setxattr:
		out = []uint64{op.Setxattr.Ino}
	case *metapb.Command_Removexattr:
		out = []uint64{op.Removexattr.Ino}
	case *metapb.Command_Commit:
		out = []uint64{op.Commit.Ino}
	case *metapb.Command_Inline:
		out = []uint64{op.Inline.Ino}
	}
	return slices.DeleteFunc(out, func(t uint64) bool { return t == 0 })
}

// handOver gives back the copies holding dir's entries or attributes:
// the mount is about to write-lease dir and write behind in it. The opens
// under them are registered first: an unlink may be written behind next.
// Until leased is called, no copy of dir is taken (readLeases.leasing);
// one being loaded now is spoiled.
func (r *readLeases) handOver(dir uint64) {
	r.mu.Lock()
	r.leasing[dir] = &handing{done: make(chan struct{})}
	out := r.unpublishCovering(dir)
	r.mu.Unlock()
	for _, d := range out {
		r.register(d.dir)
		if d.dir == dir {
			r.giveBack(d, giveToWrite)
		} else {
			r.giveBack(d, giveOwn)
		}
	}
}

// handing is a directory being write-leased (handOver until leased), and
// what the kernel was given from its copy.
type handing struct {
	d     *readDir
	names []string
	kept  time.Time
	drop  []string      // the names the write lease does not cover (set before done)
	done  chan struct{} // closed by leased
	// revoked: the service asked for the read lease back meanwhile (its
	// release may be on its way): the copy is not the write lease's view.
	revoked bool
}

// leased ends handOver(dir): the write lease is published, listing names
// (listed), or refused (nil). The names the kernel was given from the
// copy that the listing holds for the same files are parked until the
// write lease ends: no other mount could change them since the copy was
// taken (the read lease is released after this, and a revocation of it
// meanwhile waits for that). The others are dropped (giveBack).
func (r *readLeases) leased(dir uint64, listed func(name string) (uint64, bool)) {
	r.mu.Lock()
	h := r.leasing[dir]
	delete(r.leasing, dir)
	r.mu.Unlock()
	if h == nil {
		return
	}
	defer close(h.done)
	if h.d == nil {
		return
	}
	var keep []string
	for _, name := range h.names {
		if listed != nil {
			i, ok := h.d.byName[name] // the copy is immutable but for its marks
			if ino, in := listed(name); ok && in && ino == h.d.ents[i].a.ino {
				keep = append(keep, name)
				continue
			}
		}
		h.drop = append(h.drop, name)
	}
	r.kernel.park(dir, keep, h.kept)
}

// handedCopy returns the copy of dir handed over to the write lease
// being taken for session sess, if it still holds what the service has:
// granted to sess, and not revoked since. Until leased, its read lease is
// not released (giveBack waits), so no other mount's change of dir or of
// its entries' attributes can be applied (it waits for the release), and
// the mount's own changes end a copy before they are sent.
func (r *readLeases) handedCopy(dir, sess uint64) *readDir {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.leasing[dir]
	if h == nil || h.d == nil || h.revoked || h.d.sess != sess {
		return nil
	}
	return h.d
}

// holds reports whether the mount answers from a copy of dir.
func (r *readLeases) holds(dir uint64) bool {
	if !r.fresh() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dirs[dir] != nil
}

// wantWrite reports (once) whether the mount changed the entries of dir
// while it read-leased it: a mount that lists a directory and then changes
// it (rm -rf, rsync --delete) goes on changing it, and is better off
// writing behind there at once.
func (r *readLeases) wantWrite(dir uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes[dir]
	delete(r.writes, dir)
	return w
}

// unpublishCovering unpublishes the copies that hold ino's entries or
// attributes, and returns them; a load of ino is spoiled. r.mu is held.
func (r *readLeases) unpublishCovering(ino uint64) []*readDir {
	var out []*readDir
	for _, d := range []*readDir{r.dirs[ino], r.byIno[ino]} {
		if d != nil && r.dirs[d.dir] == d {
			r.unpublish(d)
			out = append(out, d)
		}
	}
	if l := r.loads[ino]; l != nil {
		l.spoiled = true
	}
	return out
}
