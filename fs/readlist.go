package fs

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// How a read lease's copy is taken: the grant, and the listing of the
// directory with its entries' attributes, one directory at a time or
// several in one query.

// copier takes read leases and their copies from the service.
type copier struct {
	*base
	pipe *pipeline
	// noDirs: until when the service is not asked to list several
	// directories in one query (unix ns): it did not know the query.
	noDirs atomic.Int64
}

// grant asks for the read leases of dirs for sess, in one call. refused:
// the service refused one for another mount's lease.
func (r *copier) grant(sess uint64, dirs []uint64) (granted, refused []bool) {
	ctx, cancel := r.ctx(context.Background())
	defer cancel()
	granted, refused = make([]bool, len(dirs)), make([]bool, len(dirs))
	cmds := make([]*metapb.Command, len(dirs))
	for i, dir := range dirs {
		cmds[i] = &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{Session: sess, Dir: dir, Mode: 5}}}
	}
	cmd := cmds[0]
	if len(cmds) > 1 {
		cmd = &metapb.Command{LeaseSession: sess, Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds, ErrorsOnly: true}}}
	}
	res, err := r.pipe.meta.Apply(ctx, cmd)
	if err != nil {
		return granted, refused
	}
	results := []*metapb.Result{res}
	if len(cmds) > 1 {
		results = res.Results
	}
	for i, res := range results[:min(len(results), len(dirs))] {
		granted[i], refused[i] = res.Errno == 0, res.Leased
	}
	return granted, refused
}

// list reads the copy of dir, read-leased to sess: its entries with their
// attributes (nil if that fails).
func (r *copier) list(dir, sess uint64) *readDir {
	return r.listOn(&readDir{dir: dir, sess: sess, byName: map[string]int32{}, byIno: map[uint64]int32{}}, 0)
}

// listOn reads the rest of d's copy, after cookie (nil if that fails).
func (r *copier) listOn(d *readDir, cookie uint64) *readDir {
	ctx, cancel := r.ctx(context.Background())
	defer cancel()
	for {
		q, errno := r.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{
			Ino: d.dir, Cookie: cookie, Max: 4096, Plus: true}}})
		if errno != 0 {
			return nil
		}
		var eof bool
		if cookie, eof = d.add(q.Attr, q.Entries, q.Eof); cookie == 0 {
			return nil
		}
		if eof {
			break
		}
	}
	d.used.Store(time.Now().UnixNano())
	return d
}

// listAll reads the copies of dirs, read-leased to sess, in queries of
// several (ReadDirsReq), the rest of one cut short as list does: nil for
// one that fails. A service that does not know the query is asked dir by
// dir, and not asked it again for readDirsOff.
func (r *copier) listAll(dirs []uint64, sess uint64) []*readDir {
	out := make([]*readDir, len(dirs))
	i := 0
	for len(dirs)-i > 1 && time.Now().UnixNano() > r.noDirs.Load() {
		ctx, cancel := r.ctx(context.Background())
		q, errno := r.pipe.read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readdirs{Readdirs: &metapb.ReadDirsReq{Inos: dirs[i:], Max: 4096}}})
		cancel()
		if errno == syscall.ENOSYS {
			r.noDirs.Store(time.Now().Add(readDirsOff).UnixNano())
		}
		if errno != 0 || len(q.Listings) == 0 {
			break
		}
		for _, l := range q.Listings[:min(len(q.Listings), len(dirs)-i)] {
			if l.Ino == dirs[i] && l.Errno == 0 {
				out[i] = r.listRest(&readDir{dir: dirs[i], sess: sess, byName: map[string]int32{}, byIno: map[uint64]int32{}}, l)
			}
			i++
		}
	}
	for ; i < len(dirs); i++ {
		out[i] = r.list(dirs[i], sess)
	}
	return out
}

// listRest makes d the copy l lists, reading the rest of it if l does not
// end it (nil if that fails).
func (r *copier) listRest(d *readDir, l *metapb.Listing) *readDir {
	switch cookie, eof := d.add(l.Attr, l.Entries, l.Eof); {
	case cookie == 0:
		return nil
	case eof:
		d.used.Store(time.Now().UnixNano())
		return d
	default:
		return r.listOn(d, cookie)
	}
}

// add adds a page of the listing of d's directory, with the directory's
// attributes: it returns the cookie to go on after (0: the page is not
// one of a copy), and whether the listing ends with it.
func (d *readDir) add(self *metapb.Attr, ents []*metapb.DirEntry, eof bool) (cookie uint64, end bool) {
	if self == nil || len(d.ents)+len(ents) > readMaxDir {
		return 0, false
	}
	d.self = flatten(self)
	cookie = 1 // (no entry: the listing ends)
	for _, e := range ents {
		if e.Attr == nil {
			return 0, false // gone meanwhile: not while leased
		}
		i := int32(len(d.ents))
		d.ents = append(d.ents, readEnt{name: e.Name, cookie: e.Cookie, a: flatten(e.Attr)})
		d.byName[e.Name] = i
		d.byIno[e.Ino] = i
		cookie = e.Cookie
	}
	return cookie, eof || len(ents) == 0
}
