package fuse

import (
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Observer is told of every FUSE request the mount answered: its kind
// (lookup, getattr, read, …), how long the answer took, and its status (0
// for success; a lookup of a missing name is 0 too, a negative entry).
// Calls come from many goroutines at once.
type Observer func(op string, took time.Duration, status fuse.Status)

// observed passes each request to go-fuse's node file system, tells the
// observer, if any, about it, counts the requests in progress by the
// directory whose lock the kernel may hold for them (busyDirs), and the
// bytes read and written. Requests it does not time (init, ioctl, …) pass
// through untouched.
type observed struct {
	fuse.RawFileSystem
	obs   Observer
	busy  *busyDirs     // the requests in progress by directory
	moved *atomic.Int64 // bytes read and written (MountOptions.Moved), or nil
}

func (o observed) done(op string, t time.Time, st fuse.Status) {
	if o.obs != nil {
		o.obs(op, time.Since(t), st)
	}
}

func (o observed) count(n int) {
	if o.moved != nil && n > 0 {
		o.moved.Add(int64(n))
	}
}

func (o observed) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	r, st := o.RawFileSystem.Read(cancel, input, buf)
	o.done("read", t, st)
	if st == fuse.OK && r != nil {
		o.count(r.Size())
	}
	return r, st
}

// Writev is how go-fuse sends WRITE first (Write only after ENOSYS).
func (o observed) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := o.RawFileSystem.Writev(cancel, input, data)
	if st != fuse.ENOSYS {
		o.done("write", t, st)
		o.count(int(n))
	}
	return n, st
}

func (o observed) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := o.RawFileSystem.Write(cancel, input, data)
	o.done("write", t, st)
	o.count(int(n))
	return n, st
}

func (o observed) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	t := time.Now()
	b, st := o.RawFileSystem.Readlink(cancel, header)
	o.done("readlink", t, st)
	return b, st
}

func (o observed) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := o.RawFileSystem.GetXAttr(cancel, header, attr, dest)
	o.done("getxattr", t, st)
	return n, st
}

func (o observed) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := o.RawFileSystem.ListXAttr(cancel, header, dest)
	o.done("listxattr", t, st)
	return n, st
}

func (o observed) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	t := time.Now()
	o.RawFileSystem.Release(cancel, input)
	o.done("release", t, fuse.OK)
}

func (o observed) ReleaseDir(input *fuse.ReleaseIn) {
	t := time.Now()
	o.RawFileSystem.ReleaseDir(input)
	o.done("releasedir", t, fuse.OK)
}

func (o observed) Forget(nodeid, nlookup uint64) {
	t := time.Now()
	o.RawFileSystem.Forget(nodeid, nlookup)
	o.done("forget", t, fuse.OK)
}

// Lookup answers a missing name the node gave a timeout (node.Lookup) as
// a negative entry the kernel keeps that long: go-fuse does so only with
// its mount-wide NegativeTimeout.
func (o observed) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	o.busy.enter(header.NodeId)
	defer o.busy.leave(header.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Lookup(cancel, header, name, out)
	if st == fuse.ENOENT && out.EntryTimeout() > 0 {
		out.NodeId, out.Generation, out.Attr = 0, 0, fuse.Attr{}
		st = fuse.OK
	}
	o.done("lookup", t, st)
	return st
}

func (o observed) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.GetAttr(cancel, input, out)
	o.done("getattr", t, st)
	return st
}

func (o observed) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.SetAttr(cancel, input, out)
	o.done("setattr", t, st)
	return st
}

func (o observed) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Mknod(cancel, input, name, out)
	o.done("mknod", t, st)
	return st
}

func (o observed) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Mkdir(cancel, input, name, out)
	o.done("mkdir", t, st)
	return st
}

func (o observed) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	o.busy.enter(header.NodeId)
	defer o.busy.leave(header.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Unlink(cancel, header, name)
	o.done("unlink", t, st)
	return st
}

func (o observed) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	o.busy.enter(header.NodeId)
	defer o.busy.leave(header.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Rmdir(cancel, header, name)
	o.done("rmdir", t, st)
	return st
}

func (o observed) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	o.busy.enter(input.Newdir)
	defer o.busy.leave(input.Newdir)
	t := time.Now()
	st := o.RawFileSystem.Rename(cancel, input, oldName, newName)
	o.done("rename", t, st)
	return st
}

func (o observed) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Link(cancel, input, filename, out)
	o.done("link", t, st)
	return st
}

func (o observed) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	o.busy.enter(header.NodeId)
	defer o.busy.leave(header.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
	o.done("symlink", t, st)
	return st
}

func (o observed) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.Access(cancel, input)
	o.done("access", t, st)
	return st
}

func (o observed) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.Create(cancel, input, name, out)
	o.done("create", t, st)
	return st
}

func (o observed) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.Open(cancel, input, out)
	o.done("open", t, st)
	return st
}

func (o observed) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.GetLk(cancel, input, out)
	o.done("getlk", t, st)
	return st
}

func (o observed) SetLk(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.SetLk(cancel, input)
	o.done("setlk", t, st)
	return st
}

func (o observed) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.SetLkw(cancel, input)
	o.done("setlkw", t, st)
	return st
}

func (o observed) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.Flush(cancel, input)
	o.done("flush", t, st)
	return st
}

func (o observed) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.Fsync(cancel, input)
	o.done("fsync", t, st)
	return st
}

func (o observed) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.Fallocate(cancel, input)
	o.done("fallocate", t, st)
	return st
}

func (o observed) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.OpenDir(cancel, input, out)
	o.done("opendir", t, st)
	return st
}

func (o observed) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.ReadDir(cancel, input, out)
	o.done("readdir", t, st)
	return st
}

func (o observed) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.ReadDirPlus(cancel, input, out)
	o.done("readdirplus", t, st)
	return st
}

func (o observed) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.FsyncDir(cancel, input)
	o.done("fsyncdir", t, st)
	return st
}

func (o observed) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	st := o.RawFileSystem.StatFs(cancel, input, out)
	o.done("statfs", t, st)
	return st
}

func (o observed) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	o.busy.enter(header.NodeId)
	defer o.busy.leave(header.NodeId)
	t := time.Now()
	st := o.RawFileSystem.RemoveXAttr(cancel, header, attr)
	o.done("removexattr", t, st)
	return st
}

func (o observed) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	o.busy.enter(input.NodeId)
	defer o.busy.leave(input.NodeId)
	t := time.Now()
	st := o.RawFileSystem.SetXAttr(cancel, input, attr, data)
	o.done("setxattr", t, st)
	return st
}
