package namespace

// EachFileObjects calls fn for every regular file, linked or unlinked but
// still open, with the objects its slices reference, each once and in no
// particular order (none for an empty or inline file). objects is reused
// between calls: fn must copy what it keeps, and must not change the
// namespace. It is for checks (fsck) that walk every file once.
func (n *Namespace) EachFileObjects(fn func(ino Ino, objects []uint64)) {
	var buf []uint64
	for ino, i := range n.inodes {
		if i.typ != TypeFile {
			continue
		}
		buf = buf[:0]
		if f := i.file(); f != nil {
			for o := range f.refs {
				buf = append(buf, o)
			}
		}
		fn(ino, buf)
	}
}

// ObjectRefs returns the number of files (regular files, linked or unlinked
// but still open) whose slices reference object id: 0 if none does.
func (n *Namespace) ObjectRefs(id uint64) uint32 { return n.objRefs[id] }

// ref counts one more file referencing object id (the file's refs gained it).
func (n *Namespace) ref(id uint64) { n.objRefs[id]++ }

// deref counts one file fewer referencing object id (the file's refs lost
// it) and reports whether no file references it any more.
func (n *Namespace) deref(id uint64) bool {
	c := n.objRefs[id]
	if c <= 1 {
		delete(n.objRefs, id)
		return true
	}
	n.objRefs[id] = c - 1
	return false
}
