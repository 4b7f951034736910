package namespace

import (
	"sort"
	"strings"
	"syscall"
)

// dirData holds a directory's entries in cookie order. Removing an entry
// leaves a tombstone (ino 0) so that positions, and so the cookie order, do
// not move; tombstones are compacted away once they are more than half of
// the slice. Cookies come from a per-directory counter that only grows, so a
// cookie handed out by ReadDir stays a valid resume point whatever happens
// to the directory in between.
type dirData struct {
	parent Ino // ".."; 0 once the directory is removed
	next   uint64
	ents   []dentry
	dead   int              // tombstones in ents
	index  map[string]int32 // name -> position in ents; nil for small dirs
}

type dentry struct {
	name   string
	ino    Ino // 0: tombstone
	cookie uint64
}

const (
	// smallDir is the number of live entries up to which a directory is
	// searched linearly instead of through an index map.
	smallDir = 8
	// minDead is the number of tombstones below which a directory is never
	// compacted.
	minDead = 8
)

func (d *dirData) live() int { return len(d.ents) - d.dead }

// find returns the position of name in ents.
func (d *dirData) find(name string) (int, bool) {
	if d.index != nil {
		p, ok := d.index[name]
		return int(p), ok
	}
	for p := range d.ents {
		if d.ents[p].ino != 0 && d.ents[p].name == name {
			return p, true
		}
	}
	return 0, false
}

// lookup returns the inode name refers to, 0 if none.
func (d *dirData) lookup(name string) Ino {
	if p, ok := d.find(name); ok {
		return d.ents[p].ino
	}
	return 0
}

// add appends an entry for name, which must not exist, with a new cookie.
func (d *dirData) add(name string, ino Ino) {
	name = strings.Clone(name) // do not pin the caller's buffer
	d.ents = append(d.ents, dentry{name: name, ino: ino, cookie: d.next})
	d.next++
	if d.index != nil {
		d.index[name] = int32(len(d.ents) - 1)
	} else if d.live() > smallDir {
		d.reindex()
	}
}

// remove removes the entry for name, which must exist.
func (d *dirData) remove(name string) {
	p, _ := d.find(name)
	if d.index != nil {
		delete(d.index, name)
	}
	d.ents[p] = dentry{cookie: d.ents[p].cookie}
	d.dead++
	// Trailing tombstones can go at once: nothing after them moves.
	for len(d.ents) > 0 && d.ents[len(d.ents)-1].ino == 0 {
		d.ents[len(d.ents)-1] = dentry{}
		d.ents = d.ents[:len(d.ents)-1]
		d.dead--
	}
	switch {
	case len(d.ents) == 0:
		d.ents, d.index, d.dead = nil, nil, 0
	case d.dead >= minDead && 2*d.dead > len(d.ents):
		d.compact()
	}
}

// setIno points the existing entry name at ino, keeping its cookie.
func (d *dirData) setIno(name string, ino Ino) {
	p, _ := d.find(name)
	d.ents[p].ino = ino
}

func (d *dirData) compact() {
	ents := make([]dentry, 0, d.live())
	for _, e := range d.ents {
		if e.ino != 0 {
			ents = append(ents, e)
		}
	}
	d.ents, d.dead = ents, 0
	d.index = nil
	if len(ents) > smallDir {
		d.reindex()
	}
}

func (d *dirData) reindex() {
	d.index = make(map[string]int32, d.live())
	for p, e := range d.ents {
		if e.ino != 0 {
			d.index[e.name] = int32(p)
		}
	}
}

// ReadDir returns up to max entries of directory dir whose cookie is greater
// than cookie, in cookie order (0 starts from the beginning; "." and ".."
// are not included). Paging with the Cookie of the last entry returned sees
// every entry that exists throughout exactly once, even while entries are
// created and removed between pages; entries created meanwhile may or may
// not be seen. ENOENT, ENOTDIR.
func (n *Namespace) ReadDir(dir Ino, cookie uint64, max int) ([]DirEntry, syscall.Errno) {
	_, d, e := n.dirInode(dir)
	if e != 0 {
		return nil, e
	}
	if max <= 0 {
		return nil, 0
	}
	p := sort.Search(len(d.ents), func(k int) bool { return d.ents[k].cookie > cookie })
	var out []DirEntry
	for ; p < len(d.ents) && len(out) < max; p++ {
		de := d.ents[p]
		if de.ino == 0 {
			continue
		}
		if out == nil {
			out = make([]DirEntry, 0, min(max, d.live()))
		}
		out = append(out, DirEntry{Name: de.name, Ino: de.ino, Type: n.inodes[de.ino].typ, Cookie: de.cookie})
	}
	return out, 0
}

// checkName validates a name to be looked up or created in a directory
// ("." and ".." are handled by each operation before): EINVAL for an empty
// name or one containing '/' or NUL, ENAMETOOLONG past MaxNameLen.
func (n *Namespace) checkName(name string) syscall.Errno {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return syscall.EINVAL
	}
	if len(name) > n.lim.MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	return 0
}

func isDots(name string) bool { return name == "." || name == ".." }

// isAncestor reports whether directory a is d or one of d's ancestors; d
// must be a directory that is not removed.
func (n *Namespace) isAncestor(a, d Ino) bool {
	for x := d; x != 0; {
		if x == a {
			return true
		}
		if x == RootIno {
			return false
		}
		i := n.inodes[x]
		if i == nil || i.dir() == nil {
			return false
		}
		x = i.ext.dir.parent
	}
	return false
}
