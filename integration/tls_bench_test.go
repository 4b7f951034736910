package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkMountTLS measures what TLS costs: two clusters of one meta
// member and six stores, one with TLS everywhere (certificates from ecfs
// certs) and one without, each with a mount, run the same sequential
// write, cold sequential read and small-file creates in turns, in the
// same run, twice in alternating order (the better of each counts).
// Reported: each figure and TLS's ratio to plaintext (the target: at
// least 0.85).
//
//	ECFS_BENCH_SEQ_MIB (1024) MiB written in 1 MiB writes, fsync, close;
//	ECFS_BENCH_FILES (2000) files of 4 KiB created.
func BenchmarkMountTLS(b *testing.B) {
	seqMiB := envInt(b, "ECFS_BENCH_SEQ_MIB", 1024)
	nFiles := envInt(b, "ECFS_BENCH_FILES", 2000)
	tlsArgs := certs(b, filepath.Join(b.TempDir(), "pki"))
	plain := newFSClusterWith(b, 1, 6, nil, nil)
	secure := newFSClusterWith(b, 1, 6, tlsArgs, tlsArgs)
	sides := []struct {
		name string
		m    *mountNode
	}{{"plain", plain.mount()}, {"tls", secure.mount()}}
	b.ResetTimer()
	for range b.N {
		// Two rounds, in turns and in both orders; the better figure of
		// each side counts (the machine's noise only ever slows a run).
		res := map[string]map[string]float64{"seq-write": {}, "seq-read": {}, "create": {}}
		best := func(op, side string, v float64) { res[op][side] = max(res[op][side], v) }
		for round, sd := range []struct {
			name string
			m    *mountNode
		}{sides[0], sides[1], sides[1], sides[0]} {
			var eintr eintrCount
			path := filepath.Join(sd.m.dir, "seq")
			mbs := func(d float64) float64 { return float64(seqMiB) * (1 << 20) / 1e6 / d }
			best("seq-write", sd.name, mbs(seqWrite(b, path, seqMiB, &eintr).Seconds()))
			dropCaches(b)
			best("seq-read", sd.name, mbs(seqRead(b, path, seqMiB).Seconds()))
			if err := os.Remove(path); err != nil {
				b.Fatal(err)
			}
			small := filepath.Join(sd.m.dir, fmt.Sprint("small", round))
			best("create", sd.name, smallFiles(b, small, small, nFiles, &eintr)["create"])
		}
		summary := fmt.Sprintf("TLS beside plaintext (%d MiB sequential, %d files of 4 KiB):\n", seqMiB, nFiles)
		for _, op := range []string{"seq-write", "seq-read", "create"} {
			unit := "MB/s"
			if op == "create" {
				unit = "files/s"
			}
			r := res[op]["tls"] / res[op]["plain"]
			summary += fmt.Sprintf("  %-9s plain %8.1f %s  tls %8.1f %s  tls/plain %.3f\n", op, res[op]["plain"], unit, res[op]["tls"], unit, r)
			b.ReportMetric(r, op+"-tls/plain")
		}
		b.Log(summary)
	}
}
