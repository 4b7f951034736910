package integration

// The fault tests (make test-faults): real processes in network namespaces,
// concurrent clients on two mounts, faults injected on a schedule, and the
// histories checked for linearizability and durability afterwards.

import (
	"testing"
	"time"
)

// faultRun is one test's cluster, clients and report.
type faultRun struct {
	t     *testing.T
	fc    *faultCluster
	w     *workload
	rep   *faultReport
	began time.Time
}

func startFaultRun(t *testing.T, tmpfsStore, tmpfsMiB int) *faultRun {
	began := time.Now()
	fc := newFaultCluster(t, 2, tmpfsStore, tmpfsMiB)
	rep := &faultReport{}
	w := newWorkload(t, rep, []string{fc.mounts[0].dir, fc.mounts[1].dir})
	w.newPhase("warmup")
	w.run(2, 2)
	t.Logf("cluster up and clients running after %v", time.Since(began).Round(time.Millisecond))
	sleepPhase(3 * time.Second)
	return &faultRun{t: t, fc: fc, w: w, rep: rep, began: began}
}

// phase starts a new namespace history, injects a fault, keeps it for
// hold, repairs it and lets the cluster settle for 3 s.
func (r *faultRun) phase(name string, hold time.Duration, inject func() string, repair func()) {
	r.t.Helper()
	r.w.newPhase(name)
	r.fc.note("%s: %s for %v", name, inject(), hold)
	sleepPhase(hold)
	repair()
	sleepPhase(3 * time.Second)
}

// finish stops the clients, SIGKILLs and restarts every daemon, reads
// everything through a fresh mount and checks the histories.
func (r *faultRun) finish() {
	r.t.Helper()
	r.w.halt()
	r.t.Logf("%d calls made under faults; restarting everything", r.w.ops.Load())
	r.fc.restartAll()
	r.fc.startMount(0)
	r.w.finalCheck(r.fc.mounts[0].dir)
	r.rep.summary(r.t, r.fc, time.Since(r.began))
}

// TestFaultsPartitions: network partitions (links down, or moved to a
// second bridge) of the leader alone, a mount alone, one store, a store
// minority, and the leader with a mount, under namespace and register
// clients on two mounts.
func TestFaultsPartitions(t *testing.T) {
	r := startFaultRun(t, -1, 0)
	fc := r.fc
	heal := fc.net.heal
	r.phase("leader-isolated", 6*time.Second, func() string {
		l := fc.metas[fc.leader()].name
		fc.net.isolate(l)
		return "leader " + l + " isolated (link down)"
	}, heal)
	r.phase("mount-isolated", 3*time.Second, func() string {
		fc.net.isolate("c1")
		return "mount c1 isolated (link down, under its 4 s session TTL)"
	}, heal)
	r.phase("store-isolated", 6*time.Second, func() string {
		fc.net.isolate("s3")
		return "store s3 isolated (link down)"
	}, heal)
	r.phase("store-minority", 6*time.Second, func() string {
		fc.net.splitOff("s0", "s1")
		return "stores s0, s1 split off together (below the write quorum of 5)"
	}, heal)
	r.phase("leader-with-mount", 6*time.Second, func() string {
		l := fc.metas[fc.leader()].name
		fc.net.splitOff(l, "c0")
		return "leader " + l + " and mount c0 split off together (a deposed leader and its client)"
	}, heal)
	r.finish()
}

// TestFaultsProcesses: SIGSTOP/SIGCONT of the leader and of a mount, SIGKILL
// and restart of the leader, a store and a mount, latency and connection
// resets on the paths to the stores, and a full disk on a store.
func TestFaultsProcesses(t *testing.T) {
	r := startFaultRun(t, 5, 48)
	fc := r.fc
	var frozen *proc
	r.phase("leader-frozen", 5*time.Second, func() string {
		l := fc.leader()
		frozen = fc.metas[l].p
		fc.stop(frozen)
		return "leader " + fc.metas[l].name + " SIGSTOPped"
	}, func() { fc.cont(frozen) })
	var killed int
	r.phase("leader-killed", 3*time.Second, func() string {
		killed = fc.leader()
		fc.metas[killed].p.kill()
		return "leader " + fc.metas[killed].name + " SIGKILLed, restarted after"
	}, func() { fc.startMeta(killed, false); fc.waitMeta(killed) })
	stopResets := make(chan struct{})
	r.phase("store-latency", 6*time.Second, func() string {
		fc.stores[0].proxy.setDelay(400 * time.Millisecond)
		fc.stores[1].proxy.setDelay(150 * time.Millisecond)
		go func() {
			for {
				select {
				case <-stopResets:
					return
				case <-time.After(1500 * time.Millisecond):
				}
				for _, s := range fc.stores[2:4] {
					s.proxy.resetAll()
				}
			}
		}()
		return "400 ms on s0, 150 ms on s1, connections to s2, s3 reset every 1.5 s"
	}, func() {
		close(stopResets)
		fc.stores[0].proxy.setDelay(0)
		fc.stores[1].proxy.setDelay(0)
	})
	r.phase("store-killed", 4*time.Second, func() string {
		fc.stores[2].p.kill()
		return "store s2 SIGKILLed, restarted after"
	}, func() { fc.startStore(2) })
	var free func()
	r.phase("store-disk-full", 6*time.Second, func() string {
		free = fillDisk(t, fc.stores[5].dataDir)
		return "store s5's disk (a 48 MiB tmpfs) filled up, freed after"
	}, func() { free() })
	r.phase("mount-killed", 2*time.Second, func() string {
		r.w.down[1].Store(true)
		fc.killMount(1)
		return "mount c1 SIGKILLed, restarted after"
	}, func() { fc.startMount(1); r.w.down[1].Store(false) })
	r.phase("mount-frozen", 2*time.Second, func() string {
		fc.stop(fc.mounts[0].p)
		return "mount c0 SIGSTOPped (under its 4 s session TTL)"
	}, func() { fc.cont(fc.mounts[0].p) })
	r.finish()
}
