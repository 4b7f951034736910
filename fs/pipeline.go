package fs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/fs/internal/lockorder"

	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/protobuf/proto"
)

// The pipeline is the one way the mount's metadata changes reach the
// service. Every change takes a place in one queue, in the order the mount
// decided it, and one goroutine (run) sends the queue in that order:
//
//   - a change written behind (behind, behindOpenClose: made under a
//     directory lease, answered by the mount at once) waits in the queue
//     and goes with its neighbours, many per Raft entry (a MultiOp, one
//     batch in flight, sent again as the same command until the service
//     answers);
//   - a change sent now (apply: its caller waits for the service's answer)
//     goes once everything queued before it is applied. Changes sent now
//     that are queued one after another go together, each its own call (the
//     service's group commit puts them in one Raft entry): none of their
//     callers had the others' answers when it decided.
//
// So a change never overtakes one the mount decided before it, whichever
// way each goes, and nothing else keeps them in order. Queries (read) are
// not queued: a query waits for the changes queued so far that name what
// it asks about (waitFor), or for all of them (drain).
//
// Only control messages bypass the queue: sessions (open, renew, end),
// inode number reservations, lease revocation requests and reports of bad
// shards, none of which a query answers differently for.
type pipeline struct {
	*base
	meta   Meta
	inodes *inodeTable // failures are recorded on the inodes changes name
	sess   atomic.Uint64

	mu      lockorder.Mutex
	cond    *sync.Cond        // signalled when sent advances or room frees up
	ops     []*jop            // queued, not yet taken by the sender
	calls   int               // changes sent now among ops
	bytes   int               // encoded size of the changes written behind, queued or in flight
	next    uint64            // sequence number of the last change queued
	sent    uint64            // every change up to this one is applied (or failed)
	last    map[uint64]uint64 // inode -> the last unapplied change written behind naming it
	broken  error             // the last batch could not be applied at all (lifts the memory cap)
	waiters int
	stopped bool

	kick   chan struct{}
	urgent chan struct{} // someone waits: send without lingering
	// waiting is signalled when someone waits for the queue: the data
	// plane then stores the small files it is gathering (pack.go), whose
	// commits' places may be what is waited for.
	waiting  chan struct{}
	failures chan struct{} // a batch failed (the lease table gives its leases back)
	stop     chan struct{}
	done     chan struct{}
}

// jop is one queued change.
type jop struct {
	seq  uint64
	sess uint64 // the session whose lease (or handle) it was written under
	cmd  *metapb.Command
	inos []uint64 // inodes whose state it changes (failures are reported on them)
	size int
	// openClose: an open or close record; its failure loses nothing a
	// descriptor could see (the file it names is gone), so it is logged,
	// not reported.
	openClose bool
	call      *call // sent now: its caller waits for the answer
	// unfilled: a place reserved for a change whose command is not known
	// yet (reserve); the sender stops before it until fill gives it. A
	// filled place with a nil cmd sends nothing.
	unfilled bool
}

// call is a change sent now: the sender fills res and err, then closes
// done.
type call struct {
	ctx  context.Context
	res  *metapb.Result
	err  error
	done chan struct{}
}

// Bounds of one batch and of what waits in memory.
const (
	journalBatchOps   = 512
	journalBatchBytes = 1 << 20
	journalMaxBytes   = 64 << 20
	// A batch smaller than journalLingerOps waits up to journalLinger for
	// more, unless someone waits for it: fewer, larger Raft entries cost
	// the metadata service less. (rsync -a of Go's src: 5 ms made 2,512
	// batches and 4.9 s of the service's CPU; 20 ms, 770-870 and 1.8-2.4
	// s; 50 ms, 340 and 1.4 s, for no faster copy.)
	journalLingerOps = 512
	journalLinger    = 20 * time.Millisecond
	// callBatch bounds the changes sent now that go out together.
	callBatch = 64
)

func newPipeline(b *base, meta Meta, inodes *inodeTable) *pipeline {
	p := &pipeline{base: b, meta: meta, inodes: inodes, last: map[uint64]uint64{},
		kick: make(chan struct{}, 1), urgent: make(chan struct{}, 1), waiting: make(chan struct{}, 1), failures: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	p.mu.Init(levelPipeline, "pipeline.mu")
	p.cond = sync.NewCond(&p.mu)
	return p
}

// session is the mount's current session.
func (p *pipeline) session() uint64 { return p.sess.Load() }

// behind queues a change made under session sess (the session of the lease
// it was written under: it is sent under that session or not at all) and
// returns its sequence number. It waits while too much is waiting to be
// sent. inos are the inodes whose state it changes: queries about them
// wait for it (waitFor), and its failure is reported on them.
func (p *pipeline) behind(sess uint64, cmd *metapb.Command, inos ...uint64) uint64 {
	return p.append(sess, cmd, true, inos)
}

// behindOpenClose queues an open or close record of ino: it changes
// nothing a query answers, so no query waits for it.
func (p *pipeline) behindOpenClose(sess uint64, cmd *metapb.Command, ino uint64) uint64 {
	return p.append(sess, cmd, false, []uint64{ino})
}

func (p *pipeline) append(sess uint64, cmd *metapb.Command, changes bool, inos []uint64) uint64 {
	size := proto.Size(cmd)
	lockorder.MayWait("queueing a change (the queue may be full)", levelJournal)
	p.mu.Lock()
	for p.bytes > journalMaxBytes && p.broken == nil {
		p.cond.Wait()
	}
	p.next++
	seq := p.next
	p.ops = append(p.ops, &jop{seq: seq, sess: sess, cmd: cmd, inos: inos, size: size, openClose: !changes})
	if changes {
		for _, ino := range inos {
			p.last[ino] = seq
		}
	}
	p.bytes += size
	p.mu.Unlock()
	if p.debugOn {
		p.log.Debug("queued behind", "seq", seq, "cmd", fmt.Sprintf("%v", cmd.Op), "inos", inos)
	}
	signal(p.kick)
	return seq
}

// reserve queues a place for a change of ino decided now whose command is
// known only later: the slice commit of data written behind, reserved when
// the data is sealed and filled once it is stored, so that it is applied
// after every change the mount decided before it and before every change
// decided after. Queries about ino and drain wait for it; the sender stops
// before it until fill. It never waits (its caller holds an inode's mu):
// its size counts once filled.
func (p *pipeline) reserve(sess, ino uint64) *jop {
	p.mu.Lock()
	p.next++
	op := &jop{seq: p.next, sess: sess, inos: []uint64{ino}, unfilled: true}
	p.ops = append(p.ops, op)
	p.last[ino] = op.seq
	p.mu.Unlock()
	return op
}

// fill gives the place op reserved its command; nil sends nothing (the data
// could not be stored: the failure is the upload's to report).
func (p *pipeline) fill(op *jop, cmd *metapb.Command) {
	size := 0
	if cmd != nil {
		size = proto.Size(cmd)
	}
	p.mu.Lock()
	op.cmd, op.size, op.unfilled = cmd, size, false
	p.bytes += size
	p.mu.Unlock()
	if p.debugOn {
		p.log.Debug("filled behind", "seq", op.seq, "inos", op.inos, "empty", cmd == nil)
	}
	signal(p.kick)
	if cmd == nil {
		// The mount's own view of the file (its size, its slices) is
		// ahead of what will be applied: the lease table gives its leases
		// back, so that the file is asked of the service again.
		signal(p.failures)
	}
}

// apply sends a change now, after everything queued before it, and returns
// the service's answer; a failure to reach the service is EIO. A change
// refused because another mount holds a lease on a directory it touches is
// queued again (the service has asked the holder to give it back) until
// MetaTimeout.
func (p *pipeline) apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, syscall.Errno) {
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		cmd.LeaseSession = p.session()
		cmd.Seq = 0 // a new attempt, not the same command again
		r, err := p.send1(cctx, cmd)
		if err != nil {
			return nil, p.ioErr("metadata", err)
		}
		if !r.Leased {
			if p.debugOn {
				p.log.Debug("applied", "cmd", fmt.Sprintf("%v", cmd.Op), "errno", syscall.Errno(r.Errno).Error())
			}
			return r, syscall.Errno(r.Errno)
		}
		if e := sleepCtx(cctx, delay); e != 0 {
			return nil, e
		}
	}
}

// send1 queues cmd as a change sent now and waits for its answer. Once
// the pipeline has stopped (the mount is closing) it is sent at once.
func (p *pipeline) send1(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	lockorder.MayWait("sending a change now", levelJournal)
	c := &call{ctx: ctx, done: make(chan struct{})}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return p.meta.Apply(ctx, cmd)
	}
	p.next++
	seq := p.next
	p.ops = append(p.ops, &jop{seq: seq, cmd: cmd, call: c})
	p.calls++
	signal(p.waiting)
	p.mu.Unlock()
	if p.debugOn {
		p.log.Debug("queued now", "seq", seq, "cmd", fmt.Sprintf("%v", cmd.Op))
	}
	signal(p.kick)
	signal(p.urgent)
	<-c.done // the sender answers every call, whatever ctx does
	return c.res, c.err
}

// backlog is how many changes wait to be applied.
func (p *pipeline) backlog() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next - p.sent
}

// waited reports whether someone waits for the queue now.
func (p *pipeline) waited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiters > 0 || p.calls > 0
}

// pending reports whether changes wait to be applied.
func (p *pipeline) pending() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent < p.next
}

// wait returns once every change up to seq is applied or has failed.
func (p *pipeline) wait(seq uint64) {
	lockorder.MayWait("waiting for the pipeline", levelJournal)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sent >= seq {
		return
	}
	p.waiters++
	signal(p.urgent)
	signal(p.waiting)
	for p.sent < seq {
		p.cond.Wait()
	}
	p.waiters--
}

// waitFor waits for the changes queued so far that name one of inos.
func (p *pipeline) waitFor(inos ...uint64) {
	p.mu.Lock()
	var seq uint64
	for _, ino := range inos {
		seq = max(seq, p.last[ino])
	}
	p.mu.Unlock()
	p.wait(seq)
}

// pendingFor reports whether a change of ino waits in the journal.
func (p *pipeline) pendingFor(ino uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.last[ino]
	return ok
}

// pendingInos returns the inodes whose changes wait in the journal now.
func (p *pipeline) pendingInos() map[uint64]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint64]bool, len(p.last))
	for ino := range p.last {
		out[ino] = true
	}
	return out
}

// drain waits for everything queued so far.
func (p *pipeline) drain() {
	p.mu.Lock()
	seq := p.next
	p.mu.Unlock()
	p.wait(seq)
}

// run sends the queue until Close stops it and nothing is left.
func (p *pipeline) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		n, hurry := len(p.ops), p.waiters > 0 || p.calls > 0
		p.mu.Unlock()
		if n > 0 && n < journalLingerOps && !hurry {
			t := time.NewTimer(journalLinger)
			select {
			case <-t.C:
			case <-p.urgent:
			case <-p.stop:
			}
			t.Stop()
		}
		p.mu.Lock()
		batch, size := p.take()
		p.mu.Unlock()
		switch {
		case len(batch) == 0:
			select {
			case <-p.kick:
				continue
			case <-p.stop:
				p.mu.Lock()
				left := len(p.ops)
				p.stopped = left == 0
				p.mu.Unlock()
				if left == 0 {
					return
				}
			}
		case batch[0].call != nil:
			p.sendCalls(batch)
		default:
			p.sendBatch(batch, size)
		}
	}
}

// take takes the next batch off the queue: the changes sent now at its
// head, or the changes written behind there, up to the first change sent
// now, of another session, or not filled yet (nothing while the head waits
// to be filled). p.mu is held.
func (p *pipeline) take() (batch []*jop, size int) {
	if len(p.ops) > 0 && p.ops[0].call != nil {
		for len(p.ops) > 0 && p.ops[0].call != nil && len(batch) < callBatch {
			batch = append(batch, p.ops[0])
			p.ops = p.ops[1:]
		}
		p.calls -= len(batch)
		return batch, 0
	}
	for len(p.ops) > 0 && p.ops[0].call == nil && !p.ops[0].unfilled && len(batch) < journalBatchOps &&
		(len(batch) == 0 || size+p.ops[0].size <= journalBatchBytes && p.ops[0].sess == batch[0].sess) {
		size += p.ops[0].size
		batch = append(batch, p.ops[0])
		p.ops = p.ops[1:]
	}
	return batch, size
}

// sendCalls sends changes sent now, each its own call, at once. Each
// caller has its answer as soon as it comes (what it does next is queued
// after this run); what is queued after the run goes once all are
// answered.
func (p *pipeline) sendCalls(batch []*jop) {
	var wg sync.WaitGroup
	for _, op := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op.call.res, op.call.err = p.meta.Apply(op.call.ctx, op.cmd)
			close(op.call.done)
		}()
	}
	wg.Wait()
	p.mu.Lock()
	p.sent = batch[len(batch)-1].seq
	p.cond.Broadcast()
	p.mu.Unlock()
}

// close sends what is queued and stops the sender.
func (p *pipeline) close() {
	close(p.stop)
	<-p.done
}

// read runs a query, linearizable, once the changes this mount wrote
// behind that it could see are applied: for a query about one inode, those
// that name it (a directory's entries are named by the directory), not the
// whole queue. A query of a directory another mount leases revokes the
// lease and is retried.
func (p *pipeline) read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, syscall.Errno) {
	switch ino, known := queryIno(q); {
	case q.GetReaddirs() != nil:
		p.waitFor(q.GetReaddirs().Inos...)
	case !known:
		p.drain()
	case ino != 0:
		p.waitFor(ino)
	}
	return p.query(ctx, q)
}

// query is read without waiting for the queue: for what it cannot change,
// or after waiting for the part that can.
func (p *pipeline) query(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, syscall.Errno) {
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		q.LeaseSession = p.session()
		r, err := p.meta.Read(cctx, q)
		if err != nil {
			return nil, p.ioErr("metadata", err)
		}
		if !r.Leased {
			return r, syscall.Errno(r.Errno)
		}
		if dir, _ := queryIno(q); dir != 0 {
			if _, err := p.meta.Apply(cctx, &metapb.Command{LeaseSession: q.LeaseSession, Op: &metapb.Command_Lease{Lease: &metapb.LeaseOp{
				Dir: dir, Mode: 3}}}); err != nil {
				return nil, p.ioErr("metadata", err)
			}
		}
		if e := sleepCtx(cctx, delay); e != 0 {
			return nil, e
		}
	}
}

// queryIno is the inode a query is about (for a lookup, its directory;
// for a query refused for a lease, the leased directory): 0 for one that
// no change written behind alters, and known false for a kind it does not
// know (which waits for the whole queue).
func queryIno(q *metapb.ReadReq) (ino uint64, known bool) {
	switch op := q.Op.(type) {
	case *metapb.ReadReq_Lookup:
		return op.Lookup.Parent, true
	case *metapb.ReadReq_Getattr:
		return op.Getattr.Ino, true
	case *metapb.ReadReq_Readdir:
		return op.Readdir.Ino, true
	case *metapb.ReadReq_Readlink:
		return op.Readlink.Ino, true
	case *metapb.ReadReq_Getxattr:
		return op.Getxattr.Ino, true
	case *metapb.ReadReq_Listxattr:
		return op.Listxattr.Ino, true
	case *metapb.ReadReq_Getlk:
		return op.Getlk.Ino, true
	case *metapb.ReadReq_Slices:
		return op.Slices.Ino, true
	case *metapb.ReadReq_Statfs, *metapb.ReadReq_LockWait, *metapb.ReadReq_Objects, *metapb.ReadReq_Revokes:
		return 0, true
	}
	return 0, false
}

// attrOf is the attributes of a query's answer.
func attrOf(r *metapb.ReadResp, errno syscall.Errno) (*metapb.Attr, syscall.Errno) {
	if errno != 0 {
		return nil, errno
	}
	return r.Attr, 0
}
