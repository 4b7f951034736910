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
