package cluster

import (
	"slices"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// The files of a write-leased directory.
//
// A mount that write-leases a directory it did not make (LeaseOp modes 1
// and 4) loads its entries with their attributes and then answers for the
// files there as for those it makes under the lease: their attributes from
// its own copy, their unlinks, opens, closes, chmods and data commits
// written behind. Another session could still reach such a file without
// touching the directory: through a descriptor it opened before, through a
// name the kernel cached, or through a hard link elsewhere. So the files a
// directory listed when its write lease was granted are the lease's too:
// another session's command that changes one (touchedDirs, touchedInodes)
// or opens one, and its query of one's attributes, are refused and revoke
// the lease as if they touched the directory. A file made later under the
// lease needs no entry: no other session can know it until it looks into
// the directory.
type leaseKids struct {
	kids    map[uint64][]uint64 // dir -> the regular files it listed at the grant
	childOf map[uint64][]uint64 // file -> the write-leased directories listing it
}

func newLeaseKids() leaseKids {
	return leaseKids{kids: map[uint64][]uint64{}, childOf: map[uint64][]uint64{}}
}

// indexKids records the regular files of dir, just write-leased.
func (f *FSM) indexKids(dir uint64) {
	if _, ok := f.wkids.kids[dir]; ok {
		return
	}
	files := f.children(dir, namespace.TypeFile)
	f.wkids.kids[dir] = files
	for _, k := range files {
		f.wkids.childOf[k] = append(f.wkids.childOf[k], dir)
	}
}

// endLease ends dir's write lease and forgets its files.
func (f *FSM) endLease(dir uint64) {
	delete(f.leases, dir)
	for _, k := range f.wkids.kids[dir] {
		ds := slices.DeleteFunc(f.wkids.childOf[k], func(d uint64) bool { return d == dir })
		if len(ds) == 0 {
			delete(f.wkids.childOf, k)
		} else {
			f.wkids.childOf[k] = ds
		}
	}
	delete(f.wkids.kids, dir)
}

// kidConflict reports whether a command of session ls touching inodes
// targets touches a file of a directory write-leased to another live
// session, and marks those leases revoked (conflict).
func (f *FSM) kidConflict(targets []uint64, ls uint64) bool {
	if len(f.wkids.childOf) == 0 {
		return false
	}
	refused := false
	for _, t := range targets {
		if t == 0 {
			continue
		}
		for _, d := range slices.Clone(f.wkids.childOf[t]) {
			if f.conflict(d, ls) {
				refused = true
			}
		}
	}
	return refused
}

// kidLeasedToOther reports, without changing anything, whether ino is a
// file of a directory write-leased to a live session other than ls.
func (f *FSM) kidLeasedToOther(ino, ls uint64) bool {
	for _, d := range f.wkids.childOf[ino] {
		if f.leasedToOther(d, ls) {
			return true
		}
	}
	return false
}

// openedIno is the inode a command opens (0: none).
func openedIno(c *metapb.Command) uint64 {
	if o := c.GetOpen(); o != nil {
		return o.Ino
	}
	return 0
}

// decodeKids restores the files of the write leases restored from a
// snapshot, as they were listed at each grant: listing the directories
// again would also list the files made under a lease since, and another
// session's command touching one would be refused here and applied on
// the replicas that did not restore. A snapshot of an older version
// carries none: those directories are listed again (a superset).
func (f *FSM) decodeKids(in []*metapb.DirLease) {
	f.wkids = newLeaseKids()
	for _, l := range in {
		if l.Read || f.leases[l.Dir] == nil {
			continue
		}
		if !l.KidsListed {
			f.indexKids(l.Dir)
			continue
		}
		if len(l.Kids) == 0 {
			continue // none listed (a directory made under its lease)
		}
		f.wkids.kids[l.Dir] = l.Kids
		for _, k := range l.Kids {
			f.wkids.childOf[k] = append(f.wkids.childOf[k], l.Dir)
		}
	}
}
