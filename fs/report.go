package fs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
)

// Reads report the shards they found corrupt or missing to the healer (a
// ReportOp through the metadata service), so that a file read often is not
// left with one shard less until a scrub finds it. Shards that were only
// unreachable, slow or cancelled are not reported: whether a store is down
// is the health checker's call.
//
// A read never waits for a report: it hands it to one goroutine through a
// bounded queue and drops it when the queue is full (a later read reports
// the shard again). That goroutine batches reports, sends the same shard
// (object, index, store) at most once a minute, and at most one batch a
// second. The service ignores a report naming a store that no longer holds
// the shard (a stale placement, a shard the healer moved), and a repeat
// changes nothing, so a report needs no exactly-once and is never resent
// as the same command: it goes through Meta.Apply as a new command, with
// no lease session (it touches no directory, so no lease refuses it).
// *cluster.Client gives it the next sequence number of the client, like
// any other command of the mount; the service keeps the results of a
// client's last 1024 commands for resends, so a journal batch resent after
// many newer commands could fall out of that window. Reports add at most
// one command a second to those, whatever the reads find.
const (
	reportQueue   = 1024                   // reports waiting for the sender; more are dropped
	reportBatch   = 512                    // shards per ReportOp at most
	reportLinger  = 100 * time.Millisecond // a first report waits this long for others
	reportEvery   = time.Second            // at most one ReportOp per this
	reportForget  = time.Minute            // a shard reported is not reported again within this
	reportRecent  = 1 << 14                // bound of the table of shards reported recently
	reportTimeout = 10 * time.Second       // one ReportOp keeps trying this long
	reportFinal   = 2 * time.Second        // what Close gives the last batch
	reportWarn    = time.Minute            // at most one warning per this when sending fails
)

// Reasons given for a bad shard (metapb.BadShard.Reason).
const (
	reasonCorrupt = "corrupt"
	reasonMissing = "missing"
)

// shardAt names one shard on one store.
type shardAt struct {
	object uint64
	index  uint32
	addr   string
}

type badReport struct {
	shardAt
	reason string
}

// reporter sends bad shards to the metadata service. Only its goroutine
// (run) touches anything but ch.
type reporter struct {
	*base
	meta     Meta
	ch       chan badReport
	done     chan struct{} // closed when run returns
	recent   map[shardAt]time.Time
	last     time.Time // last ReportOp sent
	lastWarn time.Time
}

func (r *reporter) init(b *base, meta Meta) {
	r.base, r.meta = b, meta
	r.ch = make(chan badReport, reportQueue)
	r.done = make(chan struct{})
	r.recent = map[shardAt]time.Time{}
}

// badReason says why a shard that failed a read is reported, or "" when it
// is not (unreachable, too slow, cancelled, unplaced).
func badReason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, store.ErrDataLoss):
		return reasonCorrupt
	case errors.Is(err, store.ErrNotFound):
		return reasonMissing
	}
	return ""
}

// reportBad queues the shards of object id a read found corrupt or
// missing. It never blocks.
func (d *dataPlane) reportBad(id uint64, bad []store.ShardResult) {
	for _, b := range bad {
		reason := badReason(b.Err)
		if reason == "" || b.Addr == "" || b.Index < 0 {
			continue
		}
		select {
		case d.reports.ch <- badReport{shardAt{id, uint32(b.Index), b.Addr}, reason}:
		default: // full: a later read reports it again
		}
	}
}

// run sends what reads report until ctx ends, then sends what it holds
// (within reportFinal) and returns.
func (r *reporter) run(ctx context.Context) {
	defer close(r.done)
	for {
		var batch []*metapb.BadShard
		select {
		case b := <-r.ch:
			batch = r.add(batch, b)
		case <-ctx.Done():
			r.final(ctx, nil)
			return
		}
		if len(batch) == 0 {
			continue // reported recently
		}
		t := time.NewTimer(max(reportLinger, time.Until(r.last.Add(reportEvery))))
	gather:
		for {
			var in chan badReport
			if len(batch) < reportBatch {
				in = r.ch
			}
			select {
			case b := <-in:
				batch = r.add(batch, b)
			case <-t.C:
				break gather
			case <-ctx.Done():
				t.Stop()
				r.final(ctx, batch)
				return
			}
		}
		r.send(ctx, batch)
	}
}

// final sends batch and what is queued, once, within reportFinal.
func (r *reporter) final(ctx context.Context, batch []*metapb.BadShard) {
	for len(batch) < reportBatch {
		select {
		case b := <-r.ch:
			batch = r.add(batch, b)
			continue
		default:
		}
		break
	}
	if len(batch) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportFinal)
	defer cancel()
	r.send(fctx, batch)
}

// add appends b to batch unless the same shard was reported within
// reportForget.
func (r *reporter) add(batch []*metapb.BadShard, b badReport) []*metapb.BadShard {
	now := time.Now()
	if t, ok := r.recent[b.shardAt]; ok && now.Sub(t) < reportForget {
		return batch
	}
	if len(r.recent) >= reportRecent {
		for k, t := range r.recent {
			if now.Sub(t) >= reportForget {
				delete(r.recent, k)
			}
		}
		if len(r.recent) >= reportRecent*3/4 {
			clear(r.recent) // many shards go bad at once: repeats are harmless
		}
	}
	r.recent[b.shardAt] = now
	return append(batch, &metapb.BadShard{Object: b.object, Index: b.index, Store: b.addr, Reason: b.reason})
}

// send applies one ReportOp. Shards it fails to report are forgotten, so
// that the next read to find them reports them again.
func (r *reporter) send(ctx context.Context, batch []*metapb.BadShard) {
	r.last = time.Now()
	cctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	res, err := r.meta.Apply(cctx, &metapb.Command{Op: &metapb.Command_Report{Report: &metapb.ReportOp{Shards: batch}}})
	if err == nil && res.Errno != 0 {
		err = syscall.Errno(res.Errno)
	}
	if err != nil {
		for _, b := range batch {
			delete(r.recent, shardAt{b.Object, b.Index, b.Store})
		}
		if ctx.Err() == nil && time.Since(r.lastWarn) >= reportWarn {
			r.lastWarn = time.Now()
			r.log.Warn("reporting bad shards to the metadata service failed; reads report them again", "shards", len(batch), "err", err)
		}
		return
	}
	if r.debugOn {
		b := batch[0]
		r.log.Debug("reported bad shards", "shards", len(batch),
			"first", fmt.Sprintf("%016x/%d on %s (%s)", b.Object, b.Index, b.Store, b.Reason))
	}
}
