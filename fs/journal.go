package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/protobuf/proto"
)

// The journal holds the metadata changes this mount made under its
// directory leases and has not sent yet (write-behind). One goroutine sends
// them in order, many per Raft entry (a MultiOp), one batch in flight.
//
// Every other call to the metadata service waits for the journal to be
// empty first (FS.apply, FS.read), so nothing this mount does overtakes a
// change it made before; fsync waits for the changes of its file.
type journal struct {
	fs *FS

	mu      sync.Mutex
	cond    *sync.Cond        // signalled when sent advances or room frees up
	ops     []*jop            // appended, not yet taken by the sender
	bytes   int               // encoded size of ops and of the batch in flight
	next    uint64            // sequence number of the last op appended
	sent    uint64            // every op up to this one is applied (or failed)
	last    map[uint64]uint64 // inode -> the last unapplied change naming it
	broken  error             // the last batch could not be applied at all (lifts the memory cap)
	kick    chan struct{}
	urgent  chan struct{} // someone waits: send without lingering
	waiters int
	stopped bool
	done    chan struct{}
}

type jop struct {
	seq  uint64
	sess uint64 // the mount session whose lease (or handle) it was written under
	cmd  *metapb.Command
	inos []uint64 // inodes whose state the op changes (failures are reported on them)
	size int
	// openClose: an open or close record; its failure loses nothing a
	// descriptor could see (the file it names is gone), so it is logged,
	// not reported.
	openClose bool
}

// Bounds of one batch and of what waits in memory.
const (
	journalBatchOps   = 512
	journalBatchBytes = 1 << 20
	journalMaxBytes   = 64 << 20
	// A batch smaller than journalLingerOps waits up to journalLinger for
	// more, unless someone waits for it: fewer, larger Raft entries cost
	// the metadata service less.
	journalLingerOps = 512
	journalLinger    = 5 * time.Millisecond
)

func (j *journal) init(fs *FS) {
	j.fs = fs
	j.cond = sync.NewCond(&j.mu)
	j.last = map[uint64]uint64{}
	j.kick = make(chan struct{}, 1)
	j.urgent = make(chan struct{}, 1)
	j.done = make(chan struct{})
}

// add appends a change made under session sess (the session of the lease
// it was written under: it is sent under that session or not at all) and
// returns its sequence number. It waits while too much is waiting to be
// sent. inos are the inodes whose state it changes: queries about them
// wait for it (waitFor), and its failure is reported on them.
func (j *journal) add(sess uint64, cmd *metapb.Command, inos ...uint64) uint64 {
	return j.append(sess, cmd, true, inos)
}

// addOpenClose appends an open or close record of ino: it changes nothing
// a query answers, so no query waits for it.
func (j *journal) addOpenClose(sess uint64, cmd *metapb.Command, ino uint64) uint64 {
	return j.append(sess, cmd, false, []uint64{ino})
}

func (j *journal) append(sess uint64, cmd *metapb.Command, changes bool, inos []uint64) uint64 {
	size := proto.Size(cmd)
	j.mu.Lock()
	for j.bytes > journalMaxBytes && j.broken == nil {
		j.cond.Wait()
	}
	j.next++
	seq := j.next
	j.ops = append(j.ops, &jop{seq: seq, sess: sess, cmd: cmd, inos: inos, size: size, openClose: !changes})
	if changes {
		for _, ino := range inos {
			j.last[ino] = seq
		}
	}
	j.bytes += size
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return seq
}

// pending reports whether changes wait to be applied.
func (j *journal) pending() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.sent < j.next
}

// wait returns once every change up to seq is applied or has failed.
func (j *journal) wait(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sent >= seq {
		return
	}
	j.waiters++
	select {
	case j.urgent <- struct{}{}:
	default:
	}
	for j.sent < seq {
		j.cond.Wait()
	}
	j.waiters--
}

// waitFor waits for the changes appended so far that name one of inos.
func (j *journal) waitFor(inos ...uint64) {
	j.mu.Lock()
	var seq uint64
	for _, ino := range inos {
		seq = max(seq, j.last[ino])
	}
	j.mu.Unlock()
	j.wait(seq)
}

// drain waits for everything appended so far.
func (j *journal) drain() {
	j.mu.Lock()
	seq := j.next
	j.mu.Unlock()
	j.wait(seq)
}

// run sends the changes until stop is closed and nothing is left.
func (j *journal) run(stop <-chan struct{}) {
	defer close(j.done)
	for {
		j.mu.Lock()
		n, waiters := len(j.ops), j.waiters
		j.mu.Unlock()
		if n > 0 && n < journalLingerOps && waiters == 0 {
			t := time.NewTimer(journalLinger)
			select {
			case <-t.C:
			case <-j.urgent:
			case <-stop:
			}
			t.Stop()
		}
		j.mu.Lock()
		var batch []*jop
		size := 0
		for len(j.ops) > 0 && len(batch) < journalBatchOps && (len(batch) == 0 || size+j.ops[0].size <= journalBatchBytes && j.ops[0].sess == batch[0].sess) {
			size += j.ops[0].size
			batch = append(batch, j.ops[0])
			j.ops = j.ops[1:]
		}
		j.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-j.kick:
				continue
			case <-stop:
				j.mu.Lock()
				left := len(j.ops)
				j.stopped = left == 0
				j.mu.Unlock()
				if left == 0 {
					return
				}
				continue
			}
		}
		j.send(batch, size)
	}
}

// send applies one batch, retrying (exactly-once) until MetaTimeout.
func (j *journal) send(batch []*jop, size int) {
	f := j.fs
	sent := coalesce(batch)
	cmds := make([]*metapb.Command, 0, len(batch))
	for i, op := range batch {
		if sent[i] {
			cmds = append(cmds, op.cmd)
		}
	}
	cmd := &metapb.Command{LeaseSession: batch[0].sess, Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds, ErrorsOnly: true}}}
	r, err := j.apply(cmd)
	if err == nil && len(r.Results) == len(cmds) {
		// One result per change again, the dropped ones successful.
		all := make([]*metapb.Result, len(batch))
		k := 0
		for i := range batch {
			if sent[i] {
				all[i] = r.Results[k]
				k++
			} else {
				all[i] = &metapb.Result{}
			}
		}
		r.Results = all
	} else if err == nil {
		err = fmt.Errorf("the metadata service answered %d results for %d changes", len(r.Results), len(cmds))
		if r.Errno != 0 {
			err = fmt.Errorf("the metadata service refused the batch: %w", syscall.Errno(r.Errno))
		}
	}
	// Failures are recorded on their inodes (errseq: every descriptor that
	// could have seen the change hears of it) before the batch counts as
	// sent, so that whoever waited for it finds them.
	failed := err != nil
	if err != nil {
		f.log.Error("sending write-behind changes failed: the files they touch report EIO on fsync/close", "changes", len(batch), "err", err)
		for _, op := range batch {
			if !op.openClose {
				f.failed(op.inos...)
			}
		}
	} else {
		for i, op := range batch {
			if e := r.Results[i].Errno; e != 0 {
				failed = true
				f.log.Error("a write-behind change was refused", "op", fmt.Sprintf("%T", op.cmd.Op), "inodes", op.inos, "errno", syscall.Errno(e).Error())
				if !op.openClose {
					f.failed(op.inos...)
				}
			}
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.broken = err // lifted again by the next batch that goes through
	j.sent = batch[len(batch)-1].seq
	j.bytes -= size
	for ino, seq := range j.last {
		if seq <= j.sent {
			delete(j.last, ino)
		}
	}
	j.cond.Broadcast()
	if failed {
		// The mount's view of its leased directories may be wrong now:
		// give them all up, so that everything is asked of the service.
		go f.dropLeases(true)
	}
}

// apply sends a batch until the service says what became of it. A call
// whose outcome is unknown (the service was out of reach: a partition, a
// frozen leader) is sent again as the same command, which the service
// applies at most once: failing it would report EIO for changes that may
// well have been applied, while the mount, reading its directories as if
// they had not, would drift from the service. It gives up after
// MetaTimeout + 2 session TTLs: by then the session has expired if the
// service was really gone (its batches are refused, ESTALE, a definite
// answer).
func (j *journal) apply(cmd *metapb.Command) (*metapb.Result, error) {
	f := j.fs
	give := time.Now().Add(f.cfg.MetaTimeout + 2*f.cfg.SessionTTL)
	for attempt := 0; ; attempt++ {
		ctx, cancel := f.ctx(context.Background())
		r, err := f.meta.Apply(ctx, cmd)
		cancel()
		if err == nil || errors.Is(err, context.Canceled) || time.Now().After(give) {
			return r, err
		}
		if attempt == 0 {
			f.log.Warn("sending write-behind changes: no answer yet; sending them again", "err", err)
		}
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second))
	}
}

// coalesce drops what the service need not see of a batch: a file opened
// (or created and opened) and closed again within it, with no name removed
// in between, needs no open-file record. It returns which changes to send.
func coalesce(batch []*jop) []bool {
	send := make([]bool, len(batch))
	opened := map[uint64]int{} // handle -> index of its open or create
	for i, op := range batch {
		send[i] = true
		switch o := op.cmd.Op.(type) {
		case *metapb.Command_Create:
			if o.Create.Handle != 0 {
				opened[o.Create.Handle] = i
			}
		case *metapb.Command_Open:
			opened[o.Open.Handle] = i
		case *metapb.Command_Unlink, *metapb.Command_Rename, *metapb.Command_Rmdir:
			clear(opened) // the open record may keep an unlinked file alive
		case *metapb.Command_Close:
			k, ok := opened[o.Close.Handle]
			if !ok {
				continue
			}
			delete(opened, o.Close.Handle)
			send[i] = false
			switch oo := batch[k].cmd.Op.(type) {
			case *metapb.Command_Create:
				oo.Create.Handle, oo.Create.Session = 0, 0
			case *metapb.Command_Open:
				send[k] = false
			}
		}
	}
	return send
}
