package namespace

import "syscall"

// SetAttr changes the attributes of ino that in.Valid selects, as
// setattr(2) family calls do (permissions are not checked):
//   - SetMode replaces the permission bits (PermMask) and keeps the type;
//   - SetUid/SetGid change the owner; without SetMode this clears the
//     setuid bit of a non-directory, and its setgid bit when group execute
//     is set, as chown(2) does;
//   - SetSize truncates or extends a regular file (EISDIR for a directory,
//     EINVAL for other types, EFBIG past 2^63-1) and sets mtime; shrinking
//     drops or trims the slices and inline data past the new size, and the
//     objects no file references any more are returned (sorted);
//   - SetAtime/SetMtime set explicit times, SetAtimeNow/SetMtimeNow set now
//     (and win over the explicit ones);
//   - ctime becomes now, or in.Ctime with SetCtime.
//
// Valid == 0 changes nothing. ENOENT, EINVAL for an unknown Valid bit.
func (n *Namespace) SetAttr(ino Ino, in SetAttrIn, now int64) (Attr, []uint64, syscall.Errno) {
	i := n.inodes[ino]
	if i == nil {
		return Attr{}, nil, syscall.ENOENT
	}
	v := in.Valid
	if v&^setAttrAll != 0 {
		return Attr{}, nil, syscall.EINVAL
	}
	if v&SetSize != 0 {
		switch {
		case i.typ == TypeDir:
			return Attr{}, nil, syscall.EISDIR
		case i.typ != TypeFile:
			return Attr{}, nil, syscall.EINVAL
		case in.Size > maxFileSize:
			return Attr{}, nil, syscall.EFBIG
		}
	}
	if v == 0 {
		return i.attr(ino), nil, 0
	}
	if v&SetMode != 0 {
		i.mode = uint16(in.Mode & PermMask)
	}
	if v&(SetUid|SetGid) != 0 {
		if v&SetUid != 0 {
			i.uid = in.Uid
		}
		if v&SetGid != 0 {
			i.gid = in.Gid
		}
		if v&SetMode == 0 && i.typ != TypeDir {
			i.mode &^= syscall.S_ISUID
			if i.mode&syscall.S_IXGRP != 0 {
				i.mode &^= syscall.S_ISGID
			}
		}
	}
	var freed []uint64
	if v&SetSize != 0 {
		freed = n.truncate(i, in.Size)
		i.size = in.Size
		i.mtime = now
	}
	switch {
	case v&SetAtimeNow != 0:
		i.atime = now
	case v&SetAtime != 0:
		i.atime = in.Atime
	}
	switch {
	case v&SetMtimeNow != 0:
		i.mtime = now
	case v&SetMtime != 0:
		i.mtime = in.Mtime
	}
	i.changed(now)
	if v&SetCtime != 0 {
		i.ctime = in.Ctime
	}
	return i.attr(ino), freed, 0
}
