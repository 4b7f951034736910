package namespace

import (
	"math"
	"syscall"
)

// Rename moves oldName in oldParent to newName in newParent with the
// semantics of renameat2(2):
//   - an existing target is replaced: a file loses a link (and is freed, as
//     by Unlink, when that was its last one and it is not open, which the
//     result reports); a directory must be empty (ENOTEMPTY);
//   - a directory over a non-directory is ENOTDIR, a non-directory over a
//     directory EISDIR;
//   - moving a directory into itself or its own subtree is EINVAL, and
//     replacing an ancestor of the source ENOTEMPTY;
//   - two names of the same inode: nothing happens and 0 is returned;
//   - RenameNoReplace: EEXIST if the target exists;
//   - RenameExchange: swaps the two names' inodes (ENOENT if the target does
//     not exist), of any types;
//   - both flags or an unknown one: EINVAL;
//   - "." or ".." as either name: EBUSY (EEXIST for the target with
//     RenameNoReplace).
//
// Also ENOENT, ENOTDIR (a parent is missing or not a directory), EINVAL,
// ENAMETOOLONG (bad names), EMLINK. The moved inode's ctime and both
// parents' mtime and ctime are set to now; parents' nlinks follow the
// directories that move.
func (n *Namespace) Rename(oldParent Ino, oldName string, newParent Ino, newName string, flags uint32, now int64) (RenameResult, syscall.Errno) {
	exchange := flags&RenameExchange != 0
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return RenameResult{}, syscall.EINVAL
	}
	op, od, e := n.dirInode(oldParent)
	if e != 0 {
		return RenameResult{}, e
	}
	np, nd, e := n.dirInode(newParent)
	if e != 0 {
		return RenameResult{}, e
	}
	if isDots(oldName) {
		return RenameResult{}, syscall.EBUSY
	}
	if isDots(newName) {
		if flags&RenameNoReplace != 0 {
			return RenameResult{}, syscall.EEXIST
		}
		return RenameResult{}, syscall.EBUSY
	}
	if e := n.checkName(oldName); e != 0 {
		return RenameResult{}, e
	}
	if e := n.checkName(newName); e != 0 {
		return RenameResult{}, e
	}
	sino := od.lookup(oldName)
	if sino == 0 {
		return RenameResult{}, syscall.ENOENT
	}
	tino := nd.lookup(newName)
	switch {
	case tino != 0 && flags&RenameNoReplace != 0:
		return RenameResult{}, syscall.EEXIST
	case tino == 0 && exchange:
		return RenameResult{}, syscall.ENOENT
	case np.nlink == 0: // removed, hence empty, target directory
		return RenameResult{}, syscall.ENOENT
	}
	s := n.inodes[sino]
	var t *inode
	if tino != 0 {
		t = n.inodes[tino]
	}
	// Neither name may be an ancestor of the other's parent.
	if s.typ == TypeDir && n.isAncestor(sino, newParent) {
		return RenameResult{}, syscall.EINVAL
	}
	if t != nil && t.typ == TypeDir && n.isAncestor(tino, oldParent) {
		if exchange {
			return RenameResult{}, syscall.EINVAL
		}
		return RenameResult{}, syscall.ENOTEMPTY
	}
	if sino == tino {
		return RenameResult{}, 0
	}
	if exchange {
		return RenameResult{}, n.exchange(op, od, oldParent, oldName, sino, s, np, nd, newParent, newName, tino, t, now)
	}
	if t != nil {
		switch {
		case s.typ == TypeDir && t.typ != TypeDir:
			return RenameResult{}, syscall.ENOTDIR
		case s.typ != TypeDir && t.typ == TypeDir:
			return RenameResult{}, syscall.EISDIR
		case t.typ == TypeDir && t.ext.dir.live() > 0:
			return RenameResult{}, syscall.ENOTEMPTY
		}
	}
	movesDir := s.typ == TypeDir && oldParent != newParent
	if movesDir && (t == nil || t.typ != TypeDir) && np.nlink == math.MaxUint32 {
		return RenameResult{}, syscall.EMLINK
	}

	var res RenameResult
	if t != nil {
		res.Replaced = tino
		nd.remove(newName)
		if t.typ == TypeDir {
			np.nlink-- // the replaced directory's ".."
			n.unlinkDir(tino, t, now)
			res.Freed = n.inodes[tino] == nil
		} else {
			t.nlink--
			t.changed(now)
			res.Freed, res.Objects = n.maybeFree(tino, t)
		}
	}
	od.remove(oldName)
	nd.add(newName, sino)
	if movesDir {
		op.nlink--
		np.nlink++
		s.ext.dir.parent = newParent
	}
	s.changed(now)
	op.modified(now)
	if newParent != oldParent {
		np.modified(now)
	}
	return res, 0
}

// exchange swaps the inodes of two existing, different entries.
func (n *Namespace) exchange(op *inode, od *dirData, oldParent Ino, oldName string, sino Ino, s *inode,
	np *inode, nd *dirData, newParent Ino, newName string, tino Ino, t *inode, now int64) syscall.Errno {
	if oldParent != newParent {
		sDir, tDir := s.typ == TypeDir, t.typ == TypeDir
		switch {
		case sDir && !tDir:
			if np.nlink == math.MaxUint32 {
				return syscall.EMLINK
			}
			op.nlink--
			np.nlink++
		case tDir && !sDir:
			if op.nlink == math.MaxUint32 {
				return syscall.EMLINK
			}
			np.nlink--
			op.nlink++
		}
		if sDir {
			s.ext.dir.parent = newParent
		}
		if tDir {
			t.ext.dir.parent = oldParent
		}
	}
	od.setIno(oldName, tino)
	nd.setIno(newName, sino)
	s.changed(now)
	t.changed(now)
	op.modified(now)
	if newParent != oldParent {
		np.modified(now)
	}
	return 0
}
