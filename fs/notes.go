package fs

import (
	"context"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// Changes made through the service, recorded in the view of the
// directories the mount leases (and of the attributes it keeps there).

// noteEnt records in dir's lease an entry made through the service (mknod,
// link, ...), and the change in dir's attributes when they are the mount's.
// An entry the lease already has was seen by loading it (acquire): so were
// dir's attributes.
func (v *view) noteEnt(dir uint64, name string, ino uint64, typ namespace.FileType) {
	l := v.leases.get(dir)
	if l == nil {
		return
	}
	l.emu.Lock()
	seen := false
	if l.ents != nil {
		seen = l.ents[name] == dirEnt{ino, typ}
		l.ents[name] = dirEnt{ino, typ}
	}
	l.emu.Unlock()
	if !seen {
		v.touchDir(dir, time.Now().UnixNano(), dirLinks(typ))
	}
}

// dirLinks is what an entry of type typ adds to its directory's nlink.
func dirLinks(typ namespace.FileType) int {
	if typ == namespace.TypeDir {
		return 1
	}
	return 0
}

// noteGone records in dir's lease an entry removed through the service,
// and the change in the attributes the mount keeps of dir and of the
// inode.
func (v *view) noteGone(dir uint64, name string) {
	l := v.leases.get(dir)
	if l == nil {
		return
	}
	l.emu.Lock()
	e, ok := l.ents[name]
	delete(l.ents, name)
	l.emu.Unlock()
	if ok {
		now := time.Now().UnixNano()
		v.unlinked(e.ino, now)
		v.touchDir(dir, now, -dirLinks(e.typ))
	}
}

// noteRename records a rename made through the service in the leases of
// the directories, and the change in the attributes the mount keeps of
// them (a directory moved to another parent moves a link) and of the
// inodes.
func (v *view) noteRename(parent uint64, name string, newParent uint64, newName string, flags uint32) {
	l1, l2 := v.leases.get(parent), v.leases.get(newParent)
	// What the names lead to now, asked of the service (this mount holds
	// the leases, so it may ask).
	ent := func(dir uint64, name string) (dirEnt, bool) {
		r, errno := v.pipe.read(context.Background(), &metapb.ReadReq{Op: &metapb.ReadReq_Lookup{Lookup: &metapb.LookupReq{Parent: dir, Name: name}}})
		if errno != 0 {
			return dirEnt{}, false
		}
		return dirEnt{r.Attr.Ino, namespace.FileType(r.Attr.Type)}, true
	}
	// set records what name leads to now and returns what it led to.
	set := func(l *dirLease, e dirEnt, ok bool, name string) (dirEnt, bool) {
		l.emu.Lock()
		defer l.emu.Unlock()
		old, had := l.ents[name]
		if l.ents != nil {
			if ok {
				l.ents[name] = e
			} else {
				delete(l.ents, name)
			}
		}
		return old, had
	}
	// moved is what was at name, other what was at newName (it is at name
	// now after an exchange, else gone): from the leases before, or from the
	// service after.
	var moved, other, back dirEnt
	var okMoved, okOther, okBack bool
	if l1 != nil {
		back, okBack = ent(parent, name)
		moved, okMoved = set(l1, back, okBack, name)
	}
	if l2 != nil {
		now, ok := ent(newParent, newName)
		other, okOther = set(l2, now, ok, newName)
		moved, okMoved = now, ok
	}
	exchange := flags&namespace.RenameExchange != 0
	if exchange && l1 != nil {
		other, okOther = back, okBack
	}
	links := func(e dirEnt, ok bool) int {
		if !ok {
			return 0
		}
		return dirLinks(e.typ)
	}
	if v.debugOn {
		v.log.Debug("noted a rename", "dir", parent, "name", name, "to", newParent, "new", newName,
			"moved", moved.ino, "ok", okMoved, "other", other.ino, "okOther", okOther, "leased", l1 != nil, "newLeased", l2 != nil)
	}
	dm, do := links(moved, okMoved), links(other, okOther)
	now := time.Now().UnixNano()
	if exchange {
		v.touchDir(parent, now, do-dm)
		v.touchDir(newParent, now, dm-do)
	} else {
		v.touchDir(parent, now, -dm)
		v.touchDir(newParent, now, dm-do)
		if okOther && other.ino != moved.ino {
			v.unlinked(other.ino, now) // replaced
		}
	}
	for _, e := range []dirEnt{moved, other} {
		if e.ino == 0 || (e == other && !exchange) {
			continue
		}
		if in := v.inodes.lookup(e.ino); in != nil { // renamed: its ctime
			in.mu.Lock()
			if in.wb != nil && in.attr != nil {
				in.changeLocal(func(a *metapb.Attr) { a.Ctime = now })
			}
			in.mu.Unlock()
		}
	}
	if parent != newParent {
		if okMoved && moved.typ != namespace.TypeDir {
			v.rehome(moved.ino, l2)
		}
		if exchange && okOther && other.typ != namespace.TypeDir {
			v.rehome(other.ino, l1)
		}
	}
}

// rehome makes a file moved through the service into a directory live
// under that directory's lease (to; nil: not leased here), as a rename
// written behind does, or makes it ordinary: its attributes stay the
// mount's only under the lease of the directory that holds its name, so
// that a change of the name (an unlink through the service locks that
// lease) and a change of its attributes written behind (under in.wb) are
// ordered by the same lock.
func (v *view) rehome(ino uint64, to *dirLease) {
	in := v.inodes.lookup(ino)
	if in == nil {
		return
	}
	in.mu.Lock()
	wb := in.wb
	in.mu.Unlock()
	if wb == nil || wb == to {
		return
	}
	if to != nil && to.held.Load() && to.sess == wb.sess {
		to.emu.Lock()
		in.mu.Lock()
		if in.wb == wb {
			in.wb = to
			to.inodes = append(to.inodes, in)
		}
		in.mu.Unlock()
		to.emu.Unlock()
		return
	}
	in.mu.Lock()
	if in.wb == wb {
		in.wb, in.attr = nil, nil
	}
	in.mu.Unlock()
	v.inodes.settled(in)
}
