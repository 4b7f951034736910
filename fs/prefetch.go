package fs

import (
	"context"
	"slices"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Reading a directory's files one after another (diff -r, tar, cp -r of a
// tree another mount wrote) asked the service for each file's slices. The
// first read of a file in a read-leased directory asks as well for the
// block 0 of the next files of the directory's copy (SlicesReq.prefetch),
// and of the copies of the directories a walk reaches next (nextFiles:
// those a walk took ahead), with the records of their objects; their
// reads then ask nothing, and the read of the middle one of them asks for
// the ones after (prefetchAfter).
//
// The files of a directory this mount write-leases are its own (made or
// adopted under the lease, in that order: l.inodes), and prefetched alike.
//
// A prefetched block 0 is used only while it is current:
//   - a file whose attributes the mount takes from the service: at the
//     attribute version it was prefetched at. A change of the file since
//     (by another mount: its open then brought the new version; by this
//     mount: its commit did) makes it stale, and it is asked again.
//   - a file of the mount's own (their versions do not compare with the
//     service's): prefetched only when no change of it waited in the
//     journal, and used only if the mount changed nothing of its content
//     since (its read caches' version, cacheVer, is the same), as a
//     query's answer is cached (blockSlices).

// prefetchFiles is how many files one slices query prefetches.
const prefetchFiles = 32

// prefetched holds prefetched block 0s until their file is read, at most
// maxPrefetched (the oldest go first). Its lock is a leaf.
type prefetched struct {
	mu    lockorder.Mutex
	m     map[uint64]ahead
	order []uint64
}

// ahead is a prefetched block 0, and the version it is current at: the
// service's attribute version, or for a file of the mount's own its
// cacheVer when it was asked for. then: its read asks for the files read
// after it (prefetchAfter); the middle one of those its query asked for.
type ahead struct {
	f    *metapb.FileSlices
	own  bool
	ver  uint64
	then bool
}

const maxPrefetched = 1024

func (p *prefetched) init() {
	p.m = map[uint64]ahead{}
	p.mu.Init(levelPrefetch, "prefetched.mu")
}

// put keeps fs; own: the files of the mount's own among them, with
// their cacheVer when they were asked for; then: the file whose read asks
// for the next ones.
func (p *prefetched) put(fs []*metapb.FileSlices, own map[uint64]uint64, then uint64) {
	if len(fs) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range fs {
		if _, ok := p.m[f.Ino]; !ok {
			p.order = append(p.order, f.Ino)
		}
		a := ahead{f: f, ver: f.Version, then: f.Ino == then}
		if v, ok := own[f.Ino]; ok {
			a.own, a.ver = true, v
		}
		p.m[f.Ino] = a
	}
	for len(p.m) > maxPrefetched {
		delete(p.m, p.order[0])
		p.order = p.order[1:]
	}
	if len(p.order) > 2*maxPrefetched { // taken ones leave holes
		p.order = append([]uint64(nil), p.order[len(p.order)-maxPrefetched:]...)
	}
}

// take removes and returns ino's prefetched block 0, if any.
func (p *prefetched) take(ino uint64) (ahead, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.m[ino]
	delete(p.m, ino)
	return a, ok
}

// held says which of fs are held.
func (p *prefetched) held(fs []ownFile) map[uint64]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[uint64]bool{}
	for _, f := range fs {
		if _, ok := p.m[f.in.ino]; ok {
			out[f.in.ino] = true
		}
	}
	return out
}

// absent lists those of inos not held.
func (p *prefetched) absent(inos []uint64) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := inos[:0]
	for _, ino := range inos {
		if _, ok := p.m[ino]; !ok {
			out = append(out, ino)
		}
	}
	return out
}

// fromAhead answers in's block 0 from a prefetch, if one is current (see
// above), and caches it on the inode as a query's answer would be. ver is
// in.cacheVer when the caller found the caches empty.
func (d *dataPlane) fromAhead(in *inode, ver uint64) ([]*metapb.BlockWrite, []byte, bool) {
	a, ok := d.ahead.take(in.ino)
	if !ok {
		return nil, nil, false
	}
	if a.then {
		d.prefetchAfter(in)
	}
	f := a.f
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.attr == nil || in.cacheVer != ver || ver != a.ver || len(in.dirty) > 0 || len(in.pending) > 0 {
		return nil, nil, false
	}
	if own := in.wb != nil; own != a.own || !own && in.attr.Version != f.Version {
		return nil, nil, false
	}
	if in.slices == nil {
		in.slices = map[uint64][]*metapb.BlockWrite{}
	}
	in.slices[0] = f.Slices
	in.inline, in.haveInline = f.Inline, true
	return f.Slices, f.Inline, true
}

// then is the file of a prefetch of inos whose read asks for the next
// ones: the middle one, while the walk still has the other half to read.
func then(inos []uint64) uint64 {
	if len(inos) == 0 {
		return 0
	}
	return inos[len(inos)/2]
}

// prefetchAfter asks, in the background, for the block 0s of the files
// read after in (next), once in, the middle one of the files a prefetch
// asked for, is read: a walk then finds the next files' answers there when
// it comes to them, a query ahead of it, rather than asking at the first
// file of each directory. One such query runs at a time; a walk that outruns it
// asks as before.
func (d *dataPlane) prefetchAfter(in *inode) {
	select {
	case d.asking <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-d.asking }()
		inos, own := d.next(in)
		if len(inos) == 0 {
			return
		}
		q := &metapb.SlicesReq{Ino: in.ino, Blocks: []uint64{0}, Prefetch: inos, Records: true}
		r, errno := d.pipe.query(context.Background(), &metapb.ReadReq{Op: &metapb.ReadReq_Slices{Slices: q}})
		if errno != 0 {
			return
		}
		d.objCache.add(r.Objects)
		d.ahead.put(r.Files, own, then(inos))
	}()
}

// next lists the files to prefetch with in's block 0: those that follow
// it in its read-leased directory's copy, or in its write-leased
// directory (own: with their cacheVer) and then in the directories a walk
// reaches next (walkAfter); none already prefetched.
func (d *dataPlane) next(in *inode) (inos []uint64, own map[uint64]uint64) {
	in.mu.Lock()
	l := in.wb
	in.mu.Unlock()
	if l == nil {
		inos = d.ahead.absent(d.view.reads.nextFiles(in.ino, 2*prefetchFiles, BlockSize))
		return inos[:min(len(inos), prefetchFiles)], nil
	}
	l.emu.Lock()
	var after []ownFile
	if i := l.find(in); i >= 0 {
		for _, c := range l.inodes[i+1 : min(len(l.inodes), i+1+2*prefetchFiles)] {
			after = append(after, ownFile{c, l})
		}
	}
	l.emu.Unlock()
	if len(after) < 2*prefetchFiles {
		after = append(after, d.walkAfter(l, 2*prefetchFiles-len(after))...)
	}
	own = map[uint64]uint64{}
	held := d.ahead.held(after)
	for _, cl := range after {
		c := cl.in
		if len(inos) == prefetchFiles {
			break
		}
		if held[c.ino] {
			continue
		}
		// Its journal lock keeps a change decided (cacheVer moved) and not
		// yet queued from passing for none; one held now is left be.
		if !c.jmu.TryLock() {
			continue
		}
		c.mu.Lock()
		_, cached := c.slices[0]
		ok := c.wb == cl.l && c.attr != nil && c.attr.Type == uint32(namespace.TypeFile) && c.attr.Size > 0 &&
			c.attr.Size <= BlockSize && len(c.dirty) == 0 && len(c.pending) == 0 && !(cached && c.haveInline)
		ver := c.cacheVer
		c.mu.Unlock()
		// Nothing of it may wait in the journal: the answer would not have it.
		if ok && !d.pipe.pendingFor(c.ino) {
			inos = append(inos, c.ino)
			own[c.ino] = ver
		}
		c.jmu.Unlock()
	}
	return inos, own // those held were left out above (held)
}

// ownFile is an inode of the mount's own and the lease it is under.
type ownFile struct {
	in *inode
	l  *dirLease
}

// Walks (diff -r, tar, cp -r) read a directory's files, then go down into
// its subdirectories and on to the directories after it in its parent,
// names in order (the mount lists a leased directory sorted). walkAfter
// lists the files, up to max, of the directories such a walk reaches after
// l's own files, of those the mount write-leases: l's subdirectories depth
// first, then each of l's next siblings with its subdirectories; it looks
// into walkDirs directories at most, of up to walkEnts entries each.
const (
	walkDirs = 32
	walkEnts = 4096
)

func (d *dataPlane) walkAfter(l *dirLease, max int) []ownFile {
	var out []ownFile
	looked := 0
	var down func(dirs []uint64)
	down = func(dirs []uint64) {
		for _, dir := range dirs {
			if len(out) >= max || looked >= walkDirs {
				return
			}
			looked++
			s := d.view.leases.get(dir)
			if s == nil || !s.held.Load() {
				continue
			}
			s.emu.Lock()
			for _, c := range s.inodes[:min(len(s.inodes), max-len(out))] {
				out = append(out, ownFile{c, s})
			}
			subs := s.subdirs("")
			s.emu.Unlock()
			down(subs)
		}
	}
	l.emu.Lock()
	subs := l.subdirs("")
	l.emu.Unlock()
	down(subs)
	if l.parent == 0 || len(out) >= max {
		return out
	}
	if p := d.view.leases.get(l.parent); p != nil && p.held.Load() {
		p.emu.Lock()
		name := ""
		if len(p.ents) <= walkEnts {
			for n, e := range p.ents {
				if e.ino == l.dir {
					name = n
					break
				}
			}
		}
		var next []uint64
		if name != "" {
			next = p.subdirs(name)
		}
		p.emu.Unlock()
		down(next)
	}
	return out
}

// subdirs lists the subdirectories whose names sort after after ("": all),
// in name order; none if the directory has more than walkEnts entries.
// l.emu is held.
func (l *dirLease) subdirs(after string) []uint64 {
	if len(l.ents) > walkEnts {
		return nil
	}
	var names []string
	for n, e := range l.ents {
		if e.typ == namespace.TypeDir && n > after {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	dirs := make([]uint64, len(names))
	for i, n := range names {
		dirs[i] = l.ents[n].ino
	}
	return dirs
}

// find returns in's index in l.inodes, or -1, looking from where the last
// search ended (a reader goes through them in order). l.emu is held.
func (l *dirLease) find(in *inode) int {
	n := len(l.inodes)
	for k := range n {
		i := (l.scan + k) % n
		if l.inodes[i] == in {
			l.scan = i
			return i
		}
	}
	return -1
}
