package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// BenchmarkSnapshot1M measures how long a snapshot of a state with 1 M
// files holds Apply (FSM.Snapshot encodes the whole state) and its size.
func BenchmarkSnapshot1M(b *testing.B) {
	f := NewFSM()
	f.mu.Lock()
	for d := range 1000 {
		dir := f.apply(mkdirCmd(namespace.RootIno, fmt.Sprint("d", d))).Attr.Ino
		for i := range 1000 {
			f.apply(&metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
				Parent: dir, Name: fmt.Sprint("f", i), Type: uint32(namespace.TypeFile), Mode: 0o644}}})
		}
	}
	f.mu.Unlock()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		snap, _, err := f.encode(true)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/snapshot")
		b.ReportMetric(float64(len(snap))/1e6, "MB")
	}
}
