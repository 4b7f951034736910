package namespace

import (
	"slices"
	"syscall"
)

// Open records that handle (chosen by the caller, unique) of session has ino
// open. While any handle has it open, an inode whose last link is removed
// stays as an orphan: GetAttr and the data calls still work, Lookup does
// not find it. ENOENT, EINVAL if handle is already in use.
func (n *Namespace) Open(ino Ino, handle uint64, session uint64) syscall.Errno {
	if n.inodes[ino] == nil {
		return syscall.ENOENT
	}
	if _, ok := n.handles[handle]; ok {
		return syscall.EINVAL
	}
	n.addHandle(handle, ino, session)
	return 0
}

func (n *Namespace) addHandle(h uint64, ino Ino, session uint64) {
	n.handles[h] = handle{ino: ino, session: session}
	s := n.sessions[session]
	if s == nil {
		s = make(map[uint64]struct{})
		n.sessions[session] = s
	}
	s[h] = struct{}{}
	n.opens[ino]++
}

// Close releases handle, freeing its inode if that was an orphan's last
// handle. EBADF for an unknown handle.
func (n *Namespace) Close(h uint64) (CloseResult, syscall.Errno) {
	if _, ok := n.handles[h]; !ok {
		return CloseResult{}, syscall.EBADF
	}
	var res CloseResult
	n.close(h, &res)
	return res, 0
}

// CloseSession closes every handle of session (a mount whose session
// ended), in handle order, and reports the orphans that freed.
func (n *Namespace) CloseSession(session uint64) CloseResult {
	var res CloseResult
	hs := make([]uint64, 0, len(n.sessions[session]))
	for h := range n.sessions[session] {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	for _, h := range hs {
		n.close(h, &res)
	}
	slices.Sort(res.Inos)
	slices.Sort(res.Objects)
	return res
}

func (n *Namespace) close(h uint64, res *CloseResult) {
	hd := n.handles[h]
	delete(n.handles, h)
	if s := n.sessions[hd.session]; s != nil {
		delete(s, h)
		if len(s) == 0 {
			delete(n.sessions, hd.session)
		}
	}
	if n.opens[hd.ino]--; n.opens[hd.ino] > 0 {
		return
	}
	delete(n.opens, hd.ino)
	if i := n.inodes[hd.ino]; i != nil {
		if freed, objs := n.maybeFree(hd.ino, i); freed {
			res.Freed = true
			res.Inos = append(res.Inos, hd.ino)
			res.Objects = append(res.Objects, objs...)
		}
	}
}
