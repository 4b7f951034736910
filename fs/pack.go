package fs

import (
	"sync/atomic"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/fs/internal/lockorder"
)

// Packing small files' data into shared objects.
//
// A file over the inline threshold written behind (under a directory
// lease) cost an object of its own: k+m shard PUTs, each a file created,
// fsynced and renamed on a store. rsync -a of Go's src made 7,752 of them
// for 1,292 files, 8 s of the stores' CPU on a 2-core host, and took 14 s
// against 8.5 s with every file inline. Now the buffers written behind that
// are small (up to packMax) wait, up to packLinger, for others of the same
// session, and go together as one object of up to one scheme block; each
// file's commit names its part of it (its slices' ObjOff) and says how many
// commits name the object (CommitOp.pack), so that the service keeps the
// object until all have come and then as long as any file references it.
//
// Nothing waits for the linger that needs the data: the commits take their
// places in the journal when the files are sealed (sealBehind), and whoever
// waits for the journal (fsync, another mount's access through the lease's
// give-back, a query: pipeline.waiting), for the file's uploads (seal) or
// for buffer memory (flush) has the pack stored at once.
const (
	packMax    = 1 << 20
	packLinger = 200 * time.Millisecond
)

// packer gathers small buffers into packs. Its lock is a leaf. It stores
// nothing itself: the upload that opened a pack stores it (dataPlane's
// storePacked) once it is sealed, and the others wait for it.
type packer struct {
	mu     lockorder.Mutex
	open   *pack // taking members; nil: none
	isOpen atomic.Bool
	limit  int           // bytes of one pack: the scheme's object block
	linger time.Duration // packLinger (tests change it)
}

// pack is one object's worth of small buffers.
type pack struct {
	sess    uint64
	members []packMember
	size    int
	sealed  chan struct{} // closed when it takes no more members
	done    chan struct{} // closed once stored: rec or err is set
	rec     *metapb.ObjectRecord
	err     error
}

// packMember is one buffer in a pack, its data at off in the object.
type packMember struct {
	b   *buf
	off int
}

func newPacker(limit int) *packer {
	k := &packer{limit: min(limit, 4*packMax), linger: packLinger}
	k.mu.Init(levelPacker, "packer.mu")
	return k
}

// fits reports whether b goes into a pack.
func (k *packer) fits(b *buf) bool { return k.limit > 0 && len(b.data) <= min(packMax, k.limit) }

// add puts b into the open pack, or a new one, and returns the pack, b's
// place in it and whether b opened it (then its caller stores it).
func (k *packer) add(b *buf) (pk *pack, m packMember, opened bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	pk = k.open
	if pk != nil && (pk.sess != b.sess || pk.size+len(b.data) > k.limit) {
		k.sealLocked(pk)
		pk = nil
	}
	if pk == nil {
		pk = &pack{sess: b.sess, sealed: make(chan struct{}), done: make(chan struct{})}
		k.open, opened = pk, true
		k.isOpen.Store(true)
	}
	m = packMember{b: b, off: pk.size}
	pk.members = append(pk.members, m)
	pk.size += len(b.data)
	if pk.size >= k.limit-k.limit/8 {
		k.sealLocked(pk) // nearly full: another member would rarely fit
	}
	return pk, m, opened
}

// data returns the members' data of pk, sealed, laid out as one object.
func (pk *pack) data() []byte {
	out := make([]byte, pk.size) // its members are fixed now, and sealed buffers not written
	for _, m := range pk.members {
		copy(out[m.off:], m.b.data)
	}
	return out
}

// commit is the commit of m's part of the stored pack pk (Session unset).
func (m packMember) commit(ino uint64, pk *pack) *metapb.CommitOp {
	cmd := &metapb.CommitOp{Ino: ino, Objects: []*metapb.ObjectRecord{pk.rec}}
	if n := len(pk.members); n > 1 {
		cmd.Pack = uint32(n)
	}
	for _, e := range m.b.ext {
		cmd.Writes = append(cmd.Writes, &metapb.BlockWrite{Block: m.b.block, Off: uint32(e.lo), Len: uint32(e.hi - e.lo),
			Object: pk.rec.Id, ObjOff: uint32(m.off + e.lo - m.b.base)})
	}
	return cmd
}

// flush seals the open pack: someone waits for what it holds.
func (k *packer) flush() {
	if !k.isOpen.Load() {
		return
	}
	k.mu.Lock()
	if k.open != nil {
		k.sealLocked(k.open)
	}
	k.mu.Unlock()
}

// seal stops pk taking members: someone waits for what it holds.
func (k *packer) seal(pk *pack) {
	k.mu.Lock()
	k.sealLocked(pk)
	k.mu.Unlock()
}

// sealLocked stops pk taking members. k.mu is held.
func (k *packer) sealLocked(pk *pack) {
	if k.open == pk {
		k.open = nil
		k.isOpen.Store(false)
	}
	select {
	case <-pk.sealed:
	default:
		close(pk.sealed)
	}
}
