package fs

import (
	"slices"
	"sort"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Shared read leases (cluster/readlease.go has the service's side).
//
// A mount that lists a directory (readdir from its start), or looks names
// up in it through the service often, takes a read lease of it and loads
// its entries with their attributes (readdir plus). While it holds the
// lease it answers lookups in the directory, and the attributes of the
// directory and of its children, from that copy with no service call.
//
// No other mount can change what the copy holds meanwhile: its change is
// refused by the service, which marks the lease revoked; this mount hears
// it (leaseTable.watch), stops answering from the copy, tells the kernel to
// drop every name and attribute it was given from it (kernelCache: the
// kernel may keep what a copy answered up to readKeep), and then releases
// the lease; the other mount's retry goes through after that. The mount's
// own changes drop its copy of what they touch before they are sent
// (changing), and give the lease back too: their request holds the
// directory's lock, so the names the kernel was given from the copy are
// dropped once it is answered, and the lease released after that (two
// mounts each changing a directory the other reads wait for each other's
// release: this wait is short, giveBack).
//
// The copy is trusted only while the session is: a mount cut off from the
// service stops answering from it before the service could let another
// mount change it (fresh).

// lookup answers a lookup in parent from its copy. ok: parent is
// read-leased and the answer is its (a, or ENOENT with a nil a), which
// the kernel may keep until kept.
func (r *readLeases) lookup(parent uint64, name string) (a *metapb.Attr, kept time.Time, ok bool) {
	if name == "." || name == ".." || !r.fresh() {
		return nil, kept, false // "." and "..": the kernel's to resolve; not in the copy
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dirs[parent]
	if d == nil {
		return nil, kept, false
	}
	r.use(d)
	i, ok := d.byName[name]
	if !ok {
		return nil, kept, true
	}
	e := &d.ents[i]
	e.served, e.a.served = true, true
	return e.a.pb(), d.keep(r.until()), true
}

// getAttr answers ino's attributes from a copy, if one holds them, and
// until when the kernel may keep them.
func (r *readLeases) getAttr(ino uint64) (*metapb.Attr, time.Time) {
	if !r.fresh() {
		return nil, time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.byIno[ino]
	if d == nil {
		return nil, time.Time{}
	}
	d.used.Store(time.Now().UnixNano())
	if ino == d.dir {
		d.self.served = true
		return d.self.pb(), d.keep(r.until())
	}
	e := &d.ents[d.byIno[ino]]
	e.a.served = true
	return e.a.pb(), d.keep(r.until())
}

// readDir answers a page of dir's entries after cookie from its copy.
func (r *readLeases) readDir(dir, cookie uint64, max int) ([]*metapb.DirEntry, bool) {
	if !r.fresh() {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock() // the served marks are written beside what is read
	d := r.dirs[dir]
	if d == nil {
		return nil, false
	}
	r.use(d)
	i := sort.Search(len(d.ents), func(i int) bool { return d.ents[i].cookie > cookie })
	out := make([]*metapb.DirEntry, 0, min(len(d.ents)-i, max))
	for _, e := range d.ents[i:min(len(d.ents), i+max)] {
		out = append(out, &metapb.DirEntry{Name: e.name, Ino: e.a.ino, Type: uint32(e.a.typ), Cookie: e.cookie})
	}
	return out, true
}

// count is how many read leases the mount holds.
func (r *readLeases) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dirs)
}

// noteLookup counts a lookup in dir that went to the service, and takes a
// read lease of dir when there were enough. The lookup that counts last
// waits for it: the next ones (a walk's, mostly sequential) are answered
// from the copy rather than by the service while the lease is taken.
func (r *readLeases) noteLookup(dir uint64) {
	if r.off {
		return
	}
	r.mu.Lock()
	if len(r.hits) > 4096 {
		clear(r.hits)
	}
	r.hits[dir]++
	n := r.hits[dir]
	if n >= readAfter {
		delete(r.hits, dir)
	}
	r.mu.Unlock()
	if n == readAfter {
		_, _ = r.take(dir)
	}
}

// take read-leases dir and loads its copy, unless the mount holds it
// already, or a mount (this one too) write-leases it, or another one of its
// children (the service refuses: the mount goes on asking). It reports
// whether the mount holds the lease now, and whether the service refused
// it for another mount's lease (which a query of the directory revokes).
func (r *readLeases) take(dir uint64) (held, leased bool) {
	if r.off || !r.fresh() {
		return false, false
	}
	r.mu.Lock()
	if r.dirs[dir] != nil {
		r.mu.Unlock()
		return true, false
	}
	load := r.reserve(dir)
	if l := r.loads[dir]; load == nil && l != nil {
		l.walked = true // (if taken ahead: the walk goes on from there once it is in)
	}
	r.mu.Unlock()
	if load == nil {
		return false, false
	}
	sess := r.pipe.session()
	granted, refused := r.copier.grant(sess, []uint64{dir})
	var d *readDir
	if granted[0] {
		d = r.copier.list(dir, sess)
	}
	return r.finish(dir, load, d, granted[0], false), refused[0]
}

// reserve marks dir as being loaded and returns its load, unless it is
// held or being loaded already, or may not be read-leased now (nil). r.mu
// is held.
func (r *readLeases) reserve(dir uint64) *readLoad {
	if r.dirs[dir] != nil || r.loads[dir] != nil || r.inflight[dir] > 0 || r.leasing[dir] != nil || r.releasing[dir] > 0 || time.Now().Before(r.cool[dir].until) {
		return nil
	}
	load := &readLoad{}
	r.loads[dir] = load
	return load
}

// finish ends dir's load: d, its copy (nil if the lease was not granted,
// or the listing failed), is published unless the load was spoiled
// meanwhile; a lease granted and not kept is released. It reports whether
// the mount holds the lease now.
func (r *readLeases) finish(dir uint64, load *readLoad, d *readDir, granted, ahead bool) bool {
	r.mu.Lock()
	delete(r.loads, dir)
	ok := d != nil && !load.spoiled && r.pipe.session() == d.sess
	if ok {
		for _, ino := range load.touched {
			if _, child := d.byIno[ino]; ino == dir || child || r.inflight[ino] > 0 {
				ok = false
			}
		}
		for ino := range d.byIno {
			if r.inflight[ino] > 0 {
				ok = false
			}
		}
	}
	var parent *readDir // the copy that lists dir, if one does
	if ok {
		if p := r.byIno[dir]; p != nil && p.dir != dir {
			parent = p
			d.parent = p.dir
		}
		d.taken, d.ahead = time.Now(), ahead && !load.walked
		r.dirs[dir] = d
		r.byIno[dir] = d
		for ino := range d.byIno {
			r.byIno[ino] = d
		}
		r.entries += len(d.ents)
		if last, n := d.heldKids(r.dirs); n > 0 {
			// A walk's first directories are read-leased before
			// their parent: they count as walked into.
			r.walks[dir] = n - 1
			r.aheadOf(d, d.ents[last].a.ino)
		}
	}
	if granted && !ok {
		// No lease of dir is taken until the service has this release
		// (releasing): it would grant the one the session still holds,
		// and the release end it under the new copy.
		r.releasing[dir]++
	}
	evict := r.overLimit()
	r.mu.Unlock()
	if granted && !ok {
		r.releaser.release(dir, r.pipe.session())
		r.released(dir)
	}
	for _, e := range evict {
		r.giveBack(e, giveRevoked)
	}
	if ok {
		signal(r.kick)
		if parent != nil && (!ahead || load.walked) {
			r.mu.Lock()
			r.aheadOf(parent, dir)
			r.mu.Unlock()
		}
	}
	if r.debugOn {
		r.log.Debug("read lease", "dir", dir, "granted", granted, "held", ok)
	}
	return ok
}

// overLimit unpublishes the least used leases while the copies hold more
// than readMaxEntries entries, and returns them. r.mu is held.
func (r *readLeases) overLimit() []*readDir {
	if r.entries <= readMaxEntries {
		return nil
	}
	all := make([]*readDir, 0, len(r.dirs))
	for _, d := range r.dirs {
		all = append(all, d)
	}
	slices.SortFunc(all, func(a, b *readDir) int { return int(a.used.Load() - b.used.Load()) })
	var out []*readDir
	for _, d := range all {
		if r.entries <= readMaxEntries*3/4 {
			break
		}
		r.unpublish(d)
		out = append(out, d)
	}
	return out
}

// unpublish stops answering from d. r.mu is held.
func (r *readLeases) unpublish(d *readDir) {
	if r.dirs[d.dir] != d {
		return
	}
	delete(r.dirs, d.dir)
	if r.byIno[d.dir] == d {
		delete(r.byIno, d.dir)
	}
	for ino := range d.byIno {
		if r.byIno[ino] == d {
			delete(r.byIno, ino)
		}
	}
	r.entries -= len(d.ents)
}

// Why a copy is given back (giveBack).
const (
	giveRevoked = iota // revoked (or idle, or evicted): another mount's change waits for the release
	giveOwn            // a change of the mount's own through the service
	giveToWrite        // the mount write-leases the directory (handOver)
)

// giveBack releases the lease of d's copy (d is unpublished), in the
// background, once the kernel dropped what it was given from the copy:
// attributes at once, names once the directory is idle (kernelCache),
// waiting readInvalWait for that at most, the rest later.
//   - giveRevoked: the opens under the copy are registered first.
//   - giveOwn (its caller registered the opens): the request making the
//     change holds the directory's lock, and may itself wait for another
//     mount's release, which may wait for a change of its own: the
//     release waits readOwnWait at most.
//   - giveToWrite: the release waits for the write lease (leased): the
//     names it covers are parked (from its grant on, no other mount can
//     change them), the others dropped as for giveOwn.
func (r *readLeases) giveBack(d *readDir, why int) {
	r.mu.Lock()
	names, inos := d.takeServed()
	kept := time.Unix(0, d.kept)
	r.releasing[d.dir]++
	var h *handing // giveToWrite: the write lease being taken
	if why == giveToWrite {
		if h = r.leasing[d.dir]; h != nil && h.d == nil {
			h.d, h.names, h.kept = d, names, kept
		} else {
			why, h = giveOwn, nil
		}
	}
	r.mu.Unlock()
	wait := readOwnWait
	if why == giveRevoked {
		wait = readInvalWait
	}
	r.releases.Add(1)
	go func() {
		defer r.releases.Done()
		r.kernel.attrs(inos)
		if h != nil {
			<-h.done
			names = h.drop
		}
		names = r.kernel.names(d.dir, names, time.Now().Add(wait))
		if why == giveRevoked {
			r.register(d.dir)
		}
		r.releaser.release(d.dir, d.sess)
		r.released(d.dir)
		r.kernel.later(d.dir, names, kept)
		if r.debugOn {
			r.log.Debug("read lease given back", "dir", d.dir, "why", why, "names left", len(names), "attrs", len(inos))
		}
	}()
}

// revoked gives back the read leases of dirs the service revoked or
// broke; one the mount no longer holds is released all the same (the
// service reports it until then).
func (r *readLeases) revoked(dirs []uint64) {
	if r.debugOn && len(dirs) > 0 {
		r.log.Debug("read leases revoked", "dirs", dirs)
	}
	for _, dir := range dirs {
		r.mu.Lock()
		d := r.dirs[dir]
		if d != nil {
			r.unpublish(d)
			r.backoff(dir, d.taken)
		}
		if l := r.loads[dir]; l != nil {
			l.spoiled = true
			r.backoff(dir, time.Now())
		}
		// Handed over to a write lease being taken: released after it
		// (giveBack), the kernel's names checked against its listing.
		// Its copy is not the write lease's view (handedCopy).
		handed := r.leasing[dir] != nil && r.leasing[dir].d != nil
		if h := r.leasing[dir]; h != nil {
			h.revoked = true
		}
		if d == nil && !handed {
			r.releasing[dir]++
		}
		r.mu.Unlock()
		if d != nil {
			r.giveBack(d, giveRevoked)
		} else if !handed {
			r.releases.Add(1)
			go func() {
				defer r.releases.Done()
				r.releaser.release(dir, r.pipe.session())
				r.released(dir)
			}()
		}
	}
}

// idle gives back the leases unused for readIdle.
func (r *readLeases) idle() {
	old := time.Now().Add(-readIdle).UnixNano()
	r.mu.Lock()
	var out []*readDir
	for _, d := range r.dirs {
		if d.used.Load() < old {
			out = append(out, d)
		}
	}
	for _, d := range out {
		r.unpublish(d)
	}
	r.mu.Unlock()
	for _, d := range out {
		r.giveBack(d, giveRevoked)
	}
}

// dropAll forgets every copy: the session was replaced (its leases ended
// with it); the kernel still drops what it was given.
func (r *readLeases) dropAll() {
	r.mu.Lock()
	var out []*readDir
	for _, d := range r.dirs {
		out = append(out, d)
	}
	for _, d := range out {
		r.unpublish(d)
	}
	for _, l := range r.loads {
		l.spoiled = true
	}
	clear(r.lazy) // registered under the new session with every open handle (handleTable.reopen)
	r.mu.Unlock()
	for _, d := range out {
		r.mu.Lock()
		names, inos := d.takeServed()
		kept := time.Unix(0, d.kept)
		r.mu.Unlock()
		r.kernel.attrs(inos)
		r.kernel.later(d.dir, names, kept)
	}
}

// wait waits for the releases in flight, and the kernel's invalidations
// (the mount is closing).
func (r *readLeases) wait() {
	r.releases.Wait()
	r.kernel.wait()
}

// Read leases taken ahead of a walk.
//
// A walk of a tree another mount wrote (find, a stat of each file,
// diff -r, du) goes into one directory after another, depth first. Once
// it went into walkAfter of one parent's child directories, the
// directories it reaches next are read-leased ahead of it, several in one
// call to the service (one Raft commit) and listed in one query
// (ReadDirsReq), so that the walk finds their copies ready rather than
// waiting for a lease and a listing at every directory, and asking the
// service name by name meanwhile; and the reads of their files find their
// slices prefetched (nextFiles goes on into them).
//
// Those it reaches next: the next walkLook directories in the order of a
// depth-first walk in name order from the one it went into last (its
// subdirectories, then its parent's next ones, and so on up), as far as
// the copies held let that order be seen: a copy taken ahead shows the
// directories under it, which are taken in turn once it is in, until
// walkLook directories after the walk's position are held or being
// taken. The walk's position paces it: a copy taken ahead counts as gone
// into when it is first used, and more are taken only when one of the
// walkLook/2 directories after the position is neither held nor being
// taken. A directory another mount write-leases is refused, not revoked.

// use notes that d answered; the first use of a copy taken ahead moves
// the walk on. r.mu is held.
func (r *readLeases) use(d *readDir) {
	d.used.Store(time.Now().UnixNano())
	if d.ahead {
		d.ahead = false
		if p := r.dirs[d.parent]; p != nil {
			r.aheadOf(p, d.dir)
		}
	}
}

// aheadOf counts a walk into dir, listed in p, and once the walk has gone
// far enough takes the directories after dir ahead (lookAhead). r.mu is
// held.
func (r *readLeases) aheadOf(p *readDir, dir uint64) {
	if _, listed := p.byIno[dir]; r.off || r.dirs[p.dir] != p || !listed {
		return
	}
	if len(r.walks) > 4096 {
		clear(r.walks)
	}
	r.walks[p.dir]++
	if r.walks[p.dir] < walkAfter {
		return
	}
	// Its first child directory gone into moves the walk on there.
	r.walks[dir] = max(r.walks[dir], walkAfter-1)
	r.walkAt = dir
	r.lookAhead()
}

// lookAhead takes ahead the directories of the next walkLook in walk
// order after the walk's position that are neither held nor being taken,
// if one of the first half is. r.mu is held.
func (r *readLeases) lookAhead() {
	c := r.dirs[r.walkAt]
	if c == nil {
		return
	}
	order := walkOrder(r.dirs, c, walkLook)
	var want []uint64
	near := false
	for i, d := range order {
		if r.dirs[d] == nil && r.loads[d] == nil && time.Since(r.refusedAhead[d]) > aheadCool {
			want = append(want, d)
			near = near || i < walkLook/2
		}
	}
	if near {
		r.takeAhead(want)
	}
}

// takeAhead read-leases dirs ahead of a walk, in the background
// (loadAhead). r.mu is held.
func (r *readLeases) takeAhead(want []uint64) {
	var dirs []uint64
	var loads []*readLoad
	for _, d := range want {
		if l := r.reserve(d); l != nil {
			dirs, loads = append(dirs, d), append(loads, l)
		}
	}
	if len(dirs) == 0 {
		return
	}
	r.releases.Add(1)
	go func() {
		defer r.releases.Done()
		r.loadAhead(dirs, loads)
	}()
}

// loadAhead takes the read leases of dirs, reserved by loads, in one
// call, their copies in one query, and publishes them. Those refused for
// another mount's write lease of a child directory are asked again a few
// times, aheadRetry at most: the refusal asked that mount to give it back
// (a walk that went into the parent's copy finds them free so: the
// parent's grant waited for its child directories).
func (r *readLeases) loadAhead(dirs []uint64, loads []*readLoad) {
	sess := r.pipe.session()
	published := false
	for wait := time.Duration(0); len(dirs) > 0; wait = max(2*wait, 2*time.Millisecond) {
		if wait > 0 {
			time.Sleep(wait)
		}
		granted, refused := r.copier.grant(sess, dirs)
		var listed []uint64
		for i, dir := range dirs {
			if granted[i] {
				listed = append(listed, dir)
			}
		}
		copies := r.copier.listAll(listed, sess)
		var again []uint64
		var againLoads []*readLoad
		for i, dir := range dirs {
			var d *readDir
			if granted[i] {
				d, copies = copies[0], copies[1:]
			} else if refused[i] {
				r.mu.Lock()
				retry := wait < aheadRetry && !loads[i].spoiled
				if !retry {
					if len(r.refusedAhead) > 4096 {
						clear(r.refusedAhead)
					}
					r.refusedAhead[dir] = time.Now()
				}
				r.mu.Unlock()
				if retry {
					again, againLoads = append(again, dir), append(againLoads, loads[i])
					continue
				}
			}
			published = r.finish(dir, loads[i], d, granted[i], true) || published
		}
		dirs, loads = again, againLoads
	}
	if published {
		// Their copies show what is under them: the walk's next
		// directories may be taken now.
		r.mu.Lock()
		r.lookAhead()
		r.mu.Unlock()
	}
}
