package fs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
)

// Sending the changes written behind (the pipeline's batches).

// sendBatch applies one batch of changes written behind, retrying
// (exactly-once) until MetaTimeout.
func (p *pipeline) sendBatch(batch []*jop, size int) {
	sent := coalesce(batch)
	cmds := make([]*metapb.Command, 0, len(batch))
	for i, op := range batch {
		if sent[i] {
			cmds = append(cmds, op.cmd)
		}
	}
	cmd := &metapb.Command{LeaseSession: batch[0].sess, Op: &metapb.Command_Multi{Multi: &metapb.MultiOp{Commands: cmds, ErrorsOnly: true}}}
	r, err := &metapb.Result{}, error(nil)
	if len(cmds) > 0 {
		r, err = p.applyBatch(cmd)
	}
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
		p.log.Error("sending write-behind changes failed: the files they touch report EIO on fsync/close", "changes", len(batch), "err", err)
		for _, op := range batch {
			if !op.openClose {
				p.inodes.failed(op.inos...)
			}
		}
	} else {
		for i, op := range batch {
			if e := r.Results[i].Errno; e != 0 {
				failed = true
				p.log.Error("a write-behind change was refused", "op", fmt.Sprintf("%T", op.cmd.Op), "inodes", op.inos, "errno", syscall.Errno(e).Error())
				if !op.openClose {
					p.inodes.failed(op.inos...)
				}
			}
		}
	}
	p.mu.Lock()
	p.broken = err // lifted again by the next batch that goes through
	p.sent = batch[len(batch)-1].seq
	p.bytes -= size
	for ino, seq := range p.last {
		if seq <= p.sent {
			delete(p.last, ino)
		}
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	if failed {
		// The mount's view of its leased directories may be wrong now:
		// the lease table gives them all up, so that everything is asked
		// of the service.
		signal(p.failures)
	}
}

// applyBatch sends a batch until the service says what became of it. A call
// whose outcome is unknown (the service was out of reach: a partition, a
// frozen leader) is sent again as the same command, which the service
// applies at most once: failing it would report EIO for changes that may
// well have been applied, while the mount, reading its directories as if
// they had not, would drift from the service. It gives up after
// MetaTimeout + 2 session TTLs: by then the session has expired if the
// service was really gone (its batches are refused, ESTALE, a definite
// answer).
func (p *pipeline) applyBatch(cmd *metapb.Command) (*metapb.Result, error) {
	give := time.Now().Add(p.cfg.MetaTimeout + 2*p.cfg.SessionTTL)
	for attempt := 0; ; attempt++ {
		ctx, cancel := p.ctx(context.Background())
		r, err := p.meta.Apply(ctx, cmd)
		cancel()
		if err == nil || errors.Is(err, context.Canceled) || time.Now().After(give) {
			return r, err
		}
		if attempt == 0 {
			p.log.Warn("sending write-behind changes: no answer yet; sending them again", "err", err)
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
		if op.cmd == nil {
			continue // a reserved place left empty (pipeline.fill)
		}
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
