package integration

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestMountProcsFollowLoad: an idle mount runs on one Go processor, one
// that data moves through in bulk on more (every CPU), and back on one a
// few seconds after; --procs fixes the number whatever the load.
func TestMountProcsFollowLoad(t *testing.T) {
	fc := newFSCluster(t, 1, 6)
	ops, fixedOps := freeAddr(t, "127.0.0.41"), freeAddr(t, "127.0.0.42")
	m := fc.mount("--http-addr", ops)
	fixed := fc.mount("--http-addr", fixedOps, "--procs", "3")
	procs := func(addr string) int { return int(counters(t, addr, "ecfs_mount_procs")[""]) }
	waitFor := func(what string, addr string, want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for procs(addr) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d procs after %v, want %d", what, procs(addr), within, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("idle", ops, 1, 10*time.Second)

	// Write 512 MiB through each mount while sampling their processors.
	var mu sync.Mutex
	most := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, a := range []string{ops, fixedOps} {
				n := procs(a)
				mu.Lock()
				most[a] = max(most[a], n)
				mu.Unlock()
			}
		}
	}()
	for i, dir := range []string{m.dir, fixed.dir} {
		sh(t, dir, fmt.Sprintf("dd if=/dev/zero of=%s bs=1M count=512 conv=fsync status=none", filepath.Join(dir, fmt.Sprint("big", i))))
	}
	close(stop)
	wg.Wait()
	if cpus := runtime.NumCPU(); cpus > 1 && most[ops] < 2 {
		t.Errorf("the mount ran on at most %d procs while 512 MiB went through it (%d CPUs here)", most[ops], cpus)
	}
	if most[fixedOps] != 3 {
		t.Errorf("--procs 3: at most %d procs during the copy", most[fixedOps])
	}
	waitFor("quiet again", ops, 1, 10*time.Second)
	if n := procs(fixedOps); n != 3 {
		t.Errorf("--procs 3: %d procs once quiet", n)
	}
}
