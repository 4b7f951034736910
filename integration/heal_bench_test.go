package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkHeal measures, in one run on one cluster (1 meta, 7 stores, 4+2,
// --heal-rate 0: no limit), how fast the healer rebuilds a lost store's
// shards against how fast a mount reads the same objects:
//
//   - read-MB/s: ECFS_BENCH_HEAL_MIB (256) MiB of 64 MiB files written,
//     then read back cold (a fresh mount, the page cache dropped), one
//     file after another, file bytes per second;
//   - heal-MB/s: one store SIGKILLed; from the moment the leader marks it
//     down until nothing is pending, the object bytes the healer read to
//     rebuild (heal.read_bytes) per second; heal-shard-MB/s: the shard bytes
//     it wrote (heal.rebuilt_bytes) per second;
//   - heal/read: heal-MB/s over read-MB/s.
func BenchmarkHeal(b *testing.B) {
	mib := envInt(b, "ECFS_BENCH_HEAL_MIB", 256)
	for range b.N {
		benchHealOnce(b, mib)
	}
}

func benchHealOnce(b *testing.B, mib int) {
	b.StopTimer()
	fc := newFSClusterWith(b, 1, 7, healMetaFlags("--heal-rate", "0", "--down-after", "2s"),
		[]string{"--heartbeat", "250ms"})
	m := fc.mount()
	const fileMiB = 64
	sums := map[string]string{}
	for i := 0; i*fileMiB < mib; i++ {
		size := min(fileMiB, mib-i*fileMiB) << 20
		name := fmt.Sprintf("f%03d", i)
		sums[name] = writeRandomFile(b, filepath.Join(m.dir, name), size, uint64(i))
	}
	fc.unmount(m)
	before := waitHealed(b, fc.g, "the files' objects whole", 60*time.Second)

	// Cold read through a fresh mount.
	dropPageCache(b)
	fc.start(m)
	b.StartTimer()
	start := time.Now()
	var read int64
	for i := 0; i*fileMiB < mib; i++ {
		name := fmt.Sprintf("f%03d", i)
		sum, n := fileSum(b, filepath.Join(m.dir, name))
		if sum != sums[name] {
			b.Fatalf("%s reads back with sha256 %s, want %s", name, sum, sums[name])
		}
		read += n
	}
	readDur := time.Since(start)
	readMBs := float64(read) / 1e6 / readDur.Seconds()

	// Lose a store; time the healer from down to nothing pending.
	dead := fc.c.stores[3]
	_, onDead := storeEntry(b, before, dead.addr)
	mc := fc.g.client()
	defer mc.Close()
	dead.p.kill()
	killed := time.Now()
	var downAt, doneAt time.Time
	deadline := time.Now().Add(3 * time.Minute)
	for doneAt.IsZero() {
		if time.Now().After(deadline) {
			b.Fatalf("not healed 3 min after the kill: %+v", fc.g.status())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := mc.StatusOf(ctx, 0)
		cancel()
		if err == nil {
			now := time.Now()
			for _, s := range st.Stores {
				if s.Addr == dead.addr && s.State == "down" && downAt.IsZero() {
					downAt = now
				}
			}
			if !downAt.IsZero() && st.ObjectsHealPending == 0 && st.ObjectsDegraded == 0 {
				doneAt = now
			}
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	b.StopTimer()
	healDur := doneAt.Sub(downAt)
	after := fc.g.status()
	if after.Objects.Degraded != 0 || after.Heal.Pending != 0 {
		b.Fatalf("status after the heal: objects %+v, heal pending %d", after.Objects, after.Heal.Pending)
	}
	if _, left := storeEntry(b, after, dead.addr); left != 0 {
		b.Fatalf("%d shards still recorded on the dead store", left)
	}
	healRead := after.Heal.ReadBytes - before.Heal.ReadBytes
	healWritten := after.Heal.RebuiltBytes - before.Heal.RebuiltBytes
	healMBs := float64(healRead) / 1e6 / healDur.Seconds()
	shardMBs := float64(healWritten) / 1e6 / healDur.Seconds()

	b.ReportMetric(readMBs, "read-MB/s")
	b.ReportMetric(healMBs, "heal-MB/s")
	b.ReportMetric(shardMBs, "heal-shard-MB/s")
	b.ReportMetric(healMBs/readMBs, "heal/read")
	b.Logf("summary: %d MiB in %d objects; cold read %.0f MB in %v = %.1f MB/s", mib, before.Objects.Total,
		float64(read)/1e6, readDur.Round(time.Millisecond), readMBs)
	b.Logf("store with %d shards killed; down after %v; healed %v later: %d shards rebuilt (%.1f MB written), %.1f MB of objects read = %.1f MB/s (%.1f MB/s of shards); heal/read %.2f; failures %v",
		onDead, downAt.Sub(killed).Round(time.Millisecond), healDur.Round(time.Millisecond),
		after.Heal.RebuiltShards-before.Heal.RebuiltShards, float64(healWritten)/1e6, float64(healRead)/1e6,
		healMBs, shardMBs, healMBs/readMBs, after.Heal.Failures)
}
