package namespace

import (
	"strings"
)

// check verifies the invariants every operation relies on, for a namespace
// decoded from a snapshot, the counts derived from the slices included (see
// checkRefs). A namespace built by operations always passes.
func (n *Namespace) check() error {
	root := n.inodes[RootIno]
	if root == nil || root.typ != TypeDir || root.ext.dir.parent != RootIno {
		return corrupt("bad root")
	}
	links := make(map[Ino]uint32)   // entries naming each inode
	subdirs := make(map[Ino]uint32) // subdirectory entries of each directory
	for ino, i := range n.inodes {
		if err := n.checkInode(ino, i); err != nil {
			return err
		}
		d := i.dir()
		if d == nil {
			continue
		}
		for _, de := range d.ents {
			c := n.inodes[de.ino]
			if c == nil || de.ino == RootIno {
				return corrupt("entry %q of %d names inode %d", de.name, ino, de.ino)
			}
			if links[de.ino]++; links[de.ino] == 0 {
				return corrupt("too many links to %d", de.ino)
			}
			if c.typ == TypeDir {
				if c.ext.dir.parent != ino {
					return corrupt("directory %d is in %d but its parent is %d", de.ino, ino, c.ext.dir.parent)
				}
				subdirs[ino]++
			}
		}
	}
	for ino, i := range n.inodes {
		switch {
		case i.nlink == 0 && n.opens[ino] == 0:
			return corrupt("inode %d has neither a link nor a handle", ino)
		case ino == RootIno:
			if links[ino] != 0 || i.nlink != 2+subdirs[ino] {
				return corrupt("root nlink %d, %d subdirectories", i.nlink, subdirs[ino])
			}
		case i.typ == TypeDir && i.nlink == 0:
			if links[ino] != 0 || i.ext.dir.parent != 0 || len(i.ext.dir.ents) != 0 {
				return corrupt("removed directory %d is linked or not empty", ino)
			}
		case i.typ == TypeDir:
			if links[ino] != 1 || i.nlink != 2+subdirs[ino] {
				return corrupt("directory %d: %d entries, nlink %d, %d subdirectories", ino, links[ino], i.nlink, subdirs[ino])
			}
		case i.nlink != links[ino]:
			return corrupt("inode %d: nlink %d, %d entries", ino, i.nlink, links[ino])
		}
	}
	// Every linked directory must hang from the root: walk the tree.
	reached, todo := 1, []Ino{RootIno}
	for len(todo) > 0 {
		d := n.inodes[todo[len(todo)-1]].ext.dir
		todo = todo[:len(todo)-1]
		for _, de := range d.ents {
			if n.inodes[de.ino].typ == TypeDir {
				reached++
				todo = append(todo, de.ino)
			}
		}
	}
	var linkedDirs int
	for _, i := range n.inodes {
		if i.typ == TypeDir && i.nlink > 0 {
			linkedDirs++
		}
	}
	if reached != linkedDirs {
		return corrupt("%d directories, %d reachable from the root", linkedDirs, reached)
	}
	return n.checkRefs()
}

// checkRefs verifies the counts derived from the slices: each file's refs
// (the slices naming each object) and objRefs (the files whose refs name
// each object). Tests run it on namespaces built by operations too, which
// keep these counts as they go.
func (n *Namespace) checkRefs() error {
	files := make(map[uint64]uint32, len(n.objRefs)) // files naming each object
	slicesOf := map[uint64]uint32{}                  // slices of one file naming each object
	for ino, i := range n.inodes {
		f := i.file()
		if f == nil {
			continue
		}
		if len(slicesOf) > 1024 {
			slicesOf = map[uint64]uint32{} // clearing a big map for every file costs
		}
		clear(slicesOf)
		for _, ss := range f.blocks {
			for _, s := range ss {
				slicesOf[s.Object]++
			}
		}
		if len(slicesOf) != len(f.refs) {
			return corrupt("file %d: slices name %d objects, refs %d", ino, len(slicesOf), len(f.refs))
		}
		for o, c := range slicesOf {
			if f.refs[o] != c {
				return corrupt("file %d: %d slices name object %d, refs %d", ino, c, o, f.refs[o])
			}
			files[o]++
		}
	}
	if len(files) != len(n.objRefs) {
		return corrupt("%d objects referenced by files, %d counted", len(files), len(n.objRefs))
	}
	for o, c := range files {
		if n.objRefs[o] != c {
			return corrupt("object %d: referenced by %d files, counted %d", o, c, n.objRefs[o])
		}
	}
	return nil
}

func (n *Namespace) checkInode(ino Ino, i *inode) error {
	e := i.ext
	if ino == 0 {
		return corrupt("inode 0")
	}
	if e != nil && e.rdev != 0 && i.typ != TypeChar && i.typ != TypeBlock {
		return corrupt("rdev on %v %d", i.typ, ino)
	}
	if f := i.file(); f != nil && i.typ != TypeFile {
		return corrupt("content on %v %d", i.typ, ino)
	}
	var prev string
	for k, x := range i.xattrs() {
		if x.name == "" || k > 0 && x.name <= prev {
			return corrupt("xattrs of %d not sorted", ino)
		}
		prev = x.name
	}
	switch i.typ {
	case TypeSymlink:
		if e == nil || e.target == "" || strings.IndexByte(e.target, 0) >= 0 || i.size != uint64(len(e.target)) {
			return corrupt("bad symlink %d", ino)
		}
	case TypeDir:
		return n.checkDir(ino, i.ext.dir)
	case TypeFile:
		if f := i.file(); f != nil {
			return n.checkFile(ino, i.size, f)
		}
	}
	return nil
}

func (n *Namespace) checkDir(ino Ino, d *dirData) error {
	if d.next < FirstCookie {
		return corrupt("directory %d: next cookie %d", ino, d.next)
	}
	if ino != RootIno && d.parent != 0 && d.parent == ino {
		return corrupt("directory %d is its own parent", ino)
	}
	if d.parent != 0 {
		if p := n.inodes[d.parent]; p == nil || p.typ != TypeDir {
			return corrupt("directory %d: bad parent %d", ino, d.parent)
		}
	}
	for k, de := range d.ents {
		if isDots(de.name) || n.checkName(de.name) != 0 {
			return corrupt("directory %d: bad name %q", ino, de.name)
		}
		if de.cookie < FirstCookie || de.cookie >= d.next {
			return corrupt("directory %d: cookie %d out of range", ino, de.cookie)
		}
		if p, _ := d.find(de.name); p != k {
			return corrupt("directory %d: name %q twice", ino, de.name)
		}
	}
	return nil
}

func (n *Namespace) checkFile(ino Ino, size uint64, f *fileData) error {
	bs := uint64(n.lim.BlockSize)
	if uint64(len(f.inline)) > size {
		return corrupt("file %d: inline data past the size", ino)
	}
	for b, ss := range f.blocks {
		if len(ss) == 0 {
			return corrupt("file %d: empty block %d", ino, b)
		}
		for _, s := range ss {
			end := uint64(s.Off) + uint64(s.Len)
			if s.Len == 0 || end > bs || end > size || b > (size-end)/bs {
				return corrupt("file %d: bad slice %+v in block %d", ino, s, b)
			}
		}
	}
	return nil
}
