package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
)

// The healer's end-to-end tests (issue 9): rotten shards found by reads and
// by the stores' scrub are rebuilt; a lost store's shards are rebuilt
// elsewhere; a full store is backed off from; a drained store ends empty;
// deleted files give their space back. Each runs the real binary: meta,
// stores and a FUSE mount on 127.0.0.x.

// healMetaFlags are the meta flags of these tests: fast health timeouts and
// healer, GC and orphan scans.
func healMetaFlags(extra ...string) []string {
	return append([]string{"--suspect-after", "1s", "--down-after", "2s", "--heal-interval", "200ms",
		"--gc-interval", "500ms", "--orphan-interval", "5s", "--orphan-grace", "30s"}, extra...)
}

// remount stops m (SIGTERM: it flushes every file and its journal, and must
// exit 0), empties the page cache, and starts it again: what it reads next
// comes from the stores.
func (fc *fsCluster) remount(m *mountNode) {
	fc.t.Helper()
	fc.unmount(m)
	dropPageCache(fc.t)
	fc.start(m)
}

// unmount stops m and checks that it flushed and exited cleanly.
func (fc *fsCluster) unmount(m *mountNode) {
	fc.t.Helper()
	m.stop(fc.t)
	if m.p.err != nil {
		fc.t.Fatalf("mount %s exited with %v after SIGTERM:\n%s", m.dir, m.p.err, m.p.logs.String())
	}
}

// dropPageCache writes back and drops the kernel's page cache (as root), so
// the stores read their shards from the disk.
func dropPageCache(t testing.TB) {
	t.Helper()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		t.Logf("cannot drop the page cache (%v); relying on the remount alone", err)
	}
}

// statusWatch polls member 0's status over the API (much faster than
// running ecfs status) in the background and keeps the highest figures it
// saw: a state that lasts a few hundred milliseconds is still seen.
type statusWatch struct {
	mu                                  sync.Mutex
	maxCorrupt, maxDegraded, maxPending uint64
	downSince                           map[string]time.Time // store addr -> first seen down
	stop                                chan struct{}
	done                                chan struct{}
	polls                               int
}

func watchStatus(t testing.TB, g *metaGroup) *statusWatch {
	t.Helper()
	w := &statusWatch{downSince: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	c := g.client()
	go func() {
		defer close(w.done)
		defer c.Close()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.StatusOf(ctx, 0)
			cancel()
			if err == nil {
				now := time.Now()
				w.mu.Lock()
				w.polls++
				w.maxCorrupt = max(w.maxCorrupt, st.GetHeal().GetCorrupt())
				w.maxDegraded = max(w.maxDegraded, st.ObjectsDegraded)
				w.maxPending = max(w.maxPending, st.ObjectsHealPending)
				for _, s := range st.Stores {
					if _, ok := w.downSince[s.Addr]; !ok && s.State == "down" {
						w.downSince[s.Addr] = now
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond): // polling interval
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *statusWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *statusWatch) snapshot() (corrupt, degraded, pending uint64, polls int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxCorrupt, w.maxDegraded, w.maxPending, w.polls
}

func (w *statusWatch) downAt(addr string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.downSince[addr]
	return at, ok
}

// storeStatus returns the entry of the store at addr in st.
func storeEntry(t testing.TB, st statusJSON, addr string) (state string, shards uint64) {
	t.Helper()
	for _, s := range st.Stores {
		if s.Addr == addr {
			return s.State, s.Shards
		}
	}
	t.Fatalf("ecfs status lists no store %s: %+v", addr, st.Stores)
	return "", 0
}

// waitHealed waits until ecfs status shows nothing left to heal: no pending
// object, no degraded or unreadable one, no known bad shard.
func waitHealed(t testing.TB, g *metaGroup, what string, timeout time.Duration) statusJSON {
	t.Helper()
	var st statusJSON
	waitFor(t, what, timeout, func() error {
		st = g.status()
		if st.Heal.Pending != 0 || st.Objects.Degraded != 0 || st.Objects.Unreadable != 0 || st.Heal.Corrupt != 0 {
			return fmt.Errorf("objects %+v, heal pending %d (%d bytes), corrupt %d, rebuilt %d, failures %v, last error %q",
				st.Objects, st.Heal.Pending, st.Heal.PendingBytes, st.Heal.Corrupt, st.Heal.RebuiltShards, st.Heal.Failures, st.Heal.LastError)
		}
		return nil
	})
	return st
}

// waitDown waits until ecfs status shows the store at addr down.
func waitDown(t testing.TB, g *metaGroup, addr string) {
	t.Helper()
	waitFor(t, "store "+addr+" down", 20*time.Second, func() error {
		if state, _ := storeEntry(t, g.status(), addr); state != "down" {
			return fmt.Errorf("store %s is %s", addr, state)
		}
		return nil
	})
}

// diskShard is a shard file on a store's disk.
type diskShard struct {
	store int
	key   store.ShardKey
	path  string
}

// diskShards lists the shard files on store i's disk.
func diskShards(t testing.TB, c *testCluster, i int) []diskShard {
	t.Helper()
	var out []diskShard
	root := filepath.Join(c.stores[i].dataDir, "disk", "shards")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while walking
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		k, err := store.ParseShardKey(d.Name())
		if err != nil {
			return fmt.Errorf("%s: not a shard file name: %v", p, err)
		}
		out = append(out, diskShard{store: i, key: k, path: p})
		return nil
	})
	if err != nil {
		t.Fatalf("listing the shards of store %d: %v", i, err)
	}
	return out
}

// filesUnder counts the regular files under dir (and names a few).
func filesUnder(dir string) (int, []string) {
	n := 0
	var some []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if n++; len(some) < 5 {
				some = append(some, p)
			}
		}
		return nil
	})
	return n, some
}

// objectRecords reads the records of the given objects (addresses in
// Stores, every shard not to be relied on in Bad).
func objectRecords(t testing.TB, g *metaGroup, ids []uint64) map[uint64]*metapb.ObjectRecord {
	t.Helper()
	mc := g.client()
	defer mc.Close()
	out := map[uint64]*metapb.ObjectRecord{}
	for len(ids) > 0 {
		n := min(len(ids), 500)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := mc.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Objects{Objects: &metapb.ObjectsReq{Ids: ids[:n]}}})
		cancel()
		if err != nil {
			t.Fatalf("reading object records: %v", err)
		}
		for _, o := range r.Objects {
			out[o.Id] = o
		}
		ids = ids[n:]
	}
	return out
}

// ecfsAdmin runs an ecfs admin command against the cluster's meta group
// with a deadline, and returns its exit code and output (a missing command
// fails the test with its message).
func ecfsAdmin(t testing.TB, g *metaGroup, timeout time.Duration, cmd string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{cmd, "--meta", strings.Join(g.addrs(), ","), "--secret-file", g.secretFile}, args...)
	c := exec.CommandContext(ctx, ecfsBin, full...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if ctx.Err() != nil {
		t.Fatalf("ecfs %s did not finish within %v:\n%s", strings.Join(full, " "), timeout, out.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "unknown command") {
		t.Fatalf("ecfs %s: the command is not there yet: %s", cmd, out.String())
	}
	return code, out.String()
}

// fsckClean runs ecfs fsck and fails unless it exits 0.
func fsckClean(t testing.TB, g *metaGroup) {
	t.Helper()
	code, out := ecfsAdmin(t, g, 60*time.Second, "fsck", "--json")
	if code != 0 {
		t.Fatalf("ecfs fsck --json: exit %d, want 0 (clean):\n%s", code, out)
	}
	t.Logf("ecfs fsck: clean: %s", strings.Join(strings.Fields(out), " "))
}

// TestHealRepairsRottenShards: a source tree and a 64 MiB file on 7 stores;
// bytes flipped in the data area of 1% of the shard files (at least 3, at
// most one per object). A fresh mount reads every file back exactly; reads
// and the stores' scrub find every rotten shard, the healer rewrites each,
// and within 2 minutes ecfs status shows no bad shard (after showing some),
// each rotten file holds its original bytes again (or the shard moved to a
// store where it verifies), no store lists a corrupt shard, and ecfs fsck
// is clean.
func TestHealRepairsRottenShards(t *testing.T) {
	// The scrub's first pass runs at start-up, on empty disks; the next one
	// 30 s later, after the reads: it finds the rotten shards the reads did
	// not touch (parity shards).
	fc := newFSClusterWith(t, 1, 7, healMetaFlags("--down-after", "20s"),
		[]string{"--heartbeat", "250ms", "--scrub-interval", "30s", "--scrub-rate", fmt.Sprint(1 << 30)})
	m := fc.mount()
	src := makeTree(t, 64)
	sh(t, m.dir, "cp -a "+src+" tree")
	fc.unmount(m) // everything flushed and committed
	waitHealed(t, fc.g, "the copy's objects whole", 30*time.Second)

	// Choose the shards to rot among those the records name.
	var all []diskShard
	for i := range fc.c.stores {
		all = append(all, diskShards(t, fc.c, i)...)
	}
	var ids []uint64
	for _, s := range all {
		ids = append(ids, uint64(s.key.Object))
	}
	slices.Sort(ids)
	recs := objectRecords(t, fc.g, slices.Compact(ids))
	var cands []diskShard
	for _, s := range all {
		o := recs[uint64(s.key.Object)]
		if o != nil && o.Bad == 0 && s.key.Index < len(o.Stores) && o.Stores[s.key.Index] == fc.c.stores[s.store].addr {
			cands = append(cands, s)
		}
	}
	r := rand.New(rand.NewPCG(9, 9))
	r.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	want := max(3, len(all)/100)
	var rotten []diskShard
	used := map[store.ObjectID]bool{}
	pick := func(ok func(diskShard) bool) {
		for _, s := range cands {
			if len(rotten) < want && !used[s.key.Object] && ok(s) {
				used[s.key.Object] = true
				rotten = append(rotten, s)
				return
			}
		}
	}
	pick(func(s diskShard) bool { return s.key.Index < 4 })  // a data shard: reads find it
	pick(func(s diskShard) bool { return s.key.Index >= 4 }) // a parity shard: only the scrub does
	for len(rotten) < want {
		n := len(rotten)
		pick(func(diskShard) bool { return true })
		if len(rotten) == n {
			t.Fatalf("only %d distinct objects to rot a shard of, want %d", n, want)
		}
	}
	orig := map[string][]byte{}
	for _, s := range rotten {
		b, err := os.ReadFile(s.path)
		if err != nil {
			t.Fatal(err)
		}
		orig[s.path] = b
		rotData(t, s.path, r)
	}
	t.Logf("%d shard files on the stores, %d in the records; rotted %d: %v", len(all), len(cands), len(rotten), shardNames(rotten))

	w := watchStatus(t, fc.g)
	rottedAt := time.Now()
	dropPageCache(t)
	fc.start(m)
	readStart := time.Now()
	n := compareTrees(t, src, filepath.Join(m.dir, "tree"), false)
	t.Logf("a fresh mount read %d paths back exactly with %d rotten shards (%v)", n, len(rotten), time.Since(readStart).Round(time.Millisecond))
	foundByReads := 0
	for i, s := range fc.c.stores {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cs, err := fc.c.client.Corrupt(ctx, s.addr)
		cancel()
		if err != nil {
			t.Fatalf("GET /v1/corrupt of store %d: %v", i, err)
		}
		foundByReads += len(cs)
	}
	st := fc.g.status()
	t.Logf("after the reads: %d shards listed corrupt by the stores, status heal corrupt %d, rebuilt %d", foundByReads, st.Heal.Corrupt, st.Heal.RebuiltShards)

	waitFor(t, "every rotten shard rebuilt", 2*time.Minute-time.Since(rottedAt), func() error {
		st = fc.g.status()
		if st.Heal.Corrupt != 0 || st.Heal.Pending != 0 || st.Objects.Degraded != 0 {
			return fmt.Errorf("heal corrupt %d, pending %d, objects %+v, rebuilt %d, last error %q",
				st.Heal.Corrupt, st.Heal.Pending, st.Objects, st.Heal.RebuiltShards, st.Heal.LastError)
		}
		var bad []string
		for _, s := range rotten {
			if err := shardRepaired(fc, s, orig[s.path]); err != nil {
				bad = append(bad, err.Error())
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%d of %d rotten shards not repaired: %s", len(bad), len(rotten), strings.Join(bad, "; "))
		}
		for i, s := range fc.c.stores {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cs, err := fc.c.client.Corrupt(ctx, s.addr)
			cancel()
			if err != nil {
				return fmt.Errorf("GET /v1/corrupt of store %d: %v", i, err)
			}
			if len(cs) > 0 {
				return fmt.Errorf("store %d still lists corrupt shards %v", i, cs)
			}
		}
		return nil
	})
	maxCorrupt, _, _, polls := w.snapshot()
	t.Logf("repaired %v after the rot: rebuilt shards %d (%d bytes); the highest heal.corrupt seen in %d polls: %d",
		time.Since(rottedAt).Round(time.Millisecond), st.Heal.RebuiltShards, st.Heal.RebuiltBytes, polls, maxCorrupt)
	if maxCorrupt == 0 {
		t.Errorf("ecfs status never showed a corrupt shard (%d polls) while %d were rotten", polls, len(rotten))
	}
	if st.Heal.RebuiltShards < uint64(len(rotten)) {
		t.Errorf("heal.rebuilt_shards %d, want at least the %d rotten", st.Heal.RebuiltShards, len(rotten))
	}
	// Who found them: the stores log each corrupt shard a read, a verify or
	// the scrub met.
	found := map[string]int{}
	for _, s := range fc.c.stores {
		for _, l := range strings.Split(s.p.logs.String(), "\n") {
			if m := foundRE.FindStringSubmatch(l); m != nil {
				found[m[1]]++
			}
		}
	}
	t.Logf("the stores logged: %v", found)
	var rewritten []string
	for i := range fc.c.stores {
		for _, s := range diskShards(t, fc.c, i) {
			if info, err := os.Stat(s.path); err == nil && info.ModTime().After(rottedAt) {
				rewritten = append(rewritten, fmt.Sprintf("%s@s%d", s.key, s.store))
			}
		}
	}
	t.Logf("shard files written since the rot: %v", rewritten)
	// Still exact after the repair, from the disks.
	fc.remount(m)
	compareTrees(t, src, filepath.Join(m.dir, "tree"), false)
	fsckClean(t, fc.g)
}

var foundRE = regexp.MustCompile(`msg="((?:scrub found a )?corrupt shard)"`)

// rotData flips 3 bytes in the data area (past the header) of a shard file.
func rotData(t testing.TB, path string, r *rand.Rand) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := store.ReadShardHeader(f, 1<<30)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if h.ShardLen == 0 {
		t.Fatalf("%s: an empty shard cannot rot", path)
	}
	for range 3 {
		off := h.DataOffset() + r.Int64N(h.ShardLen)
		var b [1]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= byte(1 + r.IntN(255))
		if _, err := f.WriteAt(b[:], off); err != nil {
			t.Fatal(err)
		}
	}
}

func shardNames(ss []diskShard) []string {
	var out []string
	for _, s := range ss {
		out = append(out, fmt.Sprintf("%s@s%d", s.key, s.store))
	}
	return out
}

// shardRepaired checks a rotten shard was rebuilt: rewritten on its store,
// the file holds its original bytes again; rebuilt on another store, it
// verifies there and the rotten copy is gone. (It never asks the old store
// to verify: that would find the rot itself, in place of the scrub.)
func shardRepaired(fc *fsCluster, s diskShard, orig []byte) error {
	o := objectRecords(fc.t, fc.g, []uint64{uint64(s.key.Object)})[uint64(s.key.Object)]
	if o == nil {
		return fmt.Errorf("%s: no record", s.key)
	}
	if o.Bad&(1<<uint(s.key.Index)) != 0 {
		return fmt.Errorf("%s: still bad in the record", s.key)
	}
	at := o.Stores[s.key.Index]
	b, err := os.ReadFile(s.path)
	if at == fc.c.stores[s.store].addr {
		if err != nil || !bytes.Equal(b, orig) {
			return fmt.Errorf("%s on store %d: not rewritten (%v)", s.key, s.store, err)
		}
		return nil
	}
	if err == nil {
		return fmt.Errorf("%s rebuilt on %s, the rotten copy is still on store %d", s.key, at, s.store)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := fc.c.client.Verify(ctx, at, s.key)
	if err != nil || !v.OK {
		return fmt.Errorf("%s rebuilt on %s: verify %+v %v", s.key, at, v, err)
	}
	return nil
}

// TestHealAfterStoreLoss: 7 stores; a tree written; one store SIGKILLed for
// good. Once it is down, the healer rebuilds its shards elsewhere: pending
// and degraded fall to 0 and the dead store holds no recorded shard. Then
// with 2 more stores killed (2 + the rebuilt ones: exactly k of each
// object's shards left) a fresh mount reads every file back exactly.
func TestHealAfterStoreLoss(t *testing.T) {
	fc := newFSClusterWith(t, 1, 7, healMetaFlags(), []string{"--heartbeat", "250ms"})
	m := fc.mount()
	src := makeTree(t, 24)
	sh(t, m.dir, "cp -a "+src+" tree")
	fc.unmount(m)
	before := waitHealed(t, fc.g, "the copy's objects whole", 30*time.Second)
	dead := fc.c.stores[3]
	_, onDead := storeEntry(t, before, dead.addr)
	if onDead == 0 {
		t.Fatalf("store %s holds no shard of the %d objects: nothing to heal", dead.addr, before.Objects.Total)
	}
	w := watchStatus(t, fc.g)
	dead.p.kill()
	killed := time.Now()
	waitDown(t, fc.g, dead.addr)
	// ecfs heal --wait returns once nothing is pending: by then, with 6
	// stores up, every object is whole again.
	code, out := ecfsAdmin(t, fc.g, 90*time.Second, "heal", "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("ecfs heal --wait: exit %d:\n%s", code, out)
	}
	st := fc.g.status()
	if st.Heal.Pending != 0 || st.Objects.Degraded != 0 || st.Objects.Unreadable != 0 {
		t.Fatalf("ecfs heal --wait returned with objects %+v, heal pending %d:\n%s", st.Objects, st.Heal.Pending, out)
	}
	st = waitHealed(t, fc.g, "the dead store's shards rebuilt", 10*time.Second)
	downAt, _ := w.downAt(dead.addr)
	_, maxDegraded, maxPending, _ := w.snapshot()
	t.Logf("store killed; down after %v; %d of %d objects had a shard on it (status saw up to %d degraded, %d pending); healed %v after down: rebuilt %d shards, %d bytes, read %d",
		downAt.Sub(killed).Round(time.Millisecond), onDead, st.Objects.Total, maxDegraded, maxPending,
		time.Since(downAt).Round(time.Millisecond), st.Heal.RebuiltShards, st.Heal.RebuiltBytes, st.Heal.ReadBytes)
	if _, left := storeEntry(t, st, dead.addr); left != 0 {
		t.Fatalf("healed, yet %d shards are still recorded on the dead store", left)
	}
	if st.Heal.RebuiltShards < onDead {
		t.Errorf("heal.rebuilt_shards %d, want at least the %d shards of the dead store", st.Heal.RebuiltShards, onDead)
	}
	if maxDegraded == 0 {
		t.Errorf("ecfs status never showed a degraded object while a store holding %d shards was down", onDead)
	}
	// The leader's /metrics says the same.
	checkHealMetrics(t, fc.g, st.Heal.RebuiltShards)
	// The health a user sees on each file (getfattr -n ecfs.health).
	fc.start(m)
	checkHealthXattrs(t, filepath.Join(m.dir, "tree"), "4+2 6/6 ok")

	// Two more stores go: every object still has k shards.
	fc.c.stores[0].p.kill()
	fc.c.stores[5].p.kill()
	fc.remount(m)
	n := compareTrees(t, src, filepath.Join(m.dir, "tree"), false)
	t.Logf("with 3 of 7 stores dead, %d paths read back exactly", n)
}

// checkHealthXattrs checks the ecfs.health attribute of a few files of a
// makeTree copy: inline, empty, or healthy with every shard.
func checkHealthXattrs(t *testing.T, root, whole string) {
	t.Helper()
	for name, want := range map[string]string{
		"extra/small-inline": "inline",
		"extra/empty":        "empty",
		"extra/big.bin":      whole,
		"extra/block.bin":    whole,
	} {
		buf := make([]byte, 256)
		n, err := syscall.Getxattr(filepath.Join(root, name), "ecfs.health", buf)
		if err != nil {
			t.Errorf("getfattr -n ecfs.health %s: %v", name, err)
			continue
		}
		if got := strings.TrimSpace(string(buf[:n])); got != want {
			t.Errorf("getfattr -n ecfs.health %s: %q, want %q", name, got, want)
		}
	}
}

// TestHealWithFullAndDownStore: 8 stores, each on a 64 MiB tmpfs (placement
// weighs stores by free space, so the full one competes with the others).
// One store's disk is filled up: every inode used, so it still reports free
// bytes and is placeable, yet refuses every shard (ENOSPC:
// ResourceExhausted); another store is SIGKILLed. The healer rebuilds the
// dead store's shards on the 6 stores with room (pending and degraded reach
// 0, every file reads back), and over at least 30 s the full store refuses
// only a few times: the healer backs off from a store that refused (5 s,
// doubling), it does not retry it every round.
func TestHealWithFullAndDownStore(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Fatalf("this test mounts tmpfs disks: it needs root")
	}
	g := newMetaGroup(t, 1, healMetaFlags()...)
	dir := t.TempDir()
	c := &testCluster{t: t, dir: dir, secretFile: g.secretFile, secret: g.secret,
		storeArgs: []string{"--meta", strings.Join(g.addrs(), ","), "--heartbeat", "250ms"}}
	c.client = store.NewClient(store.ClientConfig{Secret: c.secret})
	t.Cleanup(c.client.Close)
	const stores, diskMiB = 8, 64
	for i := range stores {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		s := &storeNode{dataDir: filepath.Join(dir, fmt.Sprintf("store%d", i)), addr: freeAddr(t, ip), http: freeAddr(t, ip)}
		tmpfsAt(t, s.dataDir, fmt.Sprintf("size=%dm,nr_inodes=4096", diskMiB)) // its cleanup runs after the store's
		c.stores = append(c.stores, s)
		c.start(i)
	}
	waitStoresUp(t, g, stores)
	fc := &fsCluster{t: t, g: g, c: c}
	m := fc.mount()
	src := makeTree(t, 8)
	sh(t, m.dir, "cp -a "+src+" tree")
	fc.unmount(m)
	before := waitHealed(t, g, "the copy's objects whole", 30*time.Second)

	full, dead := c.stores[7], c.stores[2]
	files := fillInodes(t, filepath.Join(full.dataDir, "filler"))
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(full.dataDir, &sfs); err != nil {
		t.Fatal(err)
	}
	t.Logf("store 7's disk full: %d empty files made, %d inodes free, %d MiB free", files, sfs.Ffree, int64(sfs.Bavail)*sfs.Bsize>>20)
	if _, err := os.Stat(filepath.Join(full.dataDir, "disk")); err != nil {
		t.Fatal(err)
	}
	for _, s := range g.status().Stores {
		if s.Addr == full.addr && (s.State != "up" || s.Free < 16<<20) {
			t.Logf("note: the full store is %s with %d bytes free: placement may skip it", s.State, s.Free)
		}
	}
	_, onDead := storeEntry(t, before, dead.addr)
	w := watchStatus(t, g)
	logStart := len(full.p.logs.String())
	dead.p.kill()
	killed := time.Now()
	waitDown(t, g, dead.addr)
	st := waitHealed(t, g, "the dead store's shards rebuilt on the stores with room", 60*time.Second)
	downAt, _ := w.downAt(dead.addr)
	t.Logf("store 2 (%d shards) killed; down after %v; healed %v after down: rebuilt %d shards, failures %v, last error %q",
		onDead, downAt.Sub(killed).Round(time.Millisecond), time.Since(downAt).Round(time.Millisecond),
		st.Heal.RebuiltShards, st.Heal.Failures, st.Heal.LastError)
	if _, left := storeEntry(t, st, dead.addr); left != 0 {
		t.Fatalf("healed, yet %d shards are still recorded on the dead store", left)
	}
	// Observe the full store for at least 30 s after the kill (a schedule,
	// not synchronisation: the healer has nothing left to do by now, and
	// must not keep trying the full store either).
	window := 35 * time.Second
	sleepPhase(time.Until(killed.Add(window)))
	window = time.Since(killed)
	log := full.p.logs.String()[logStart:]
	lines, bursts := refusals(log)
	perMin := float64(lines) / window.Minutes()
	t.Logf("store 7 (full) refused %d shard writes in %d bursts over %v (%.1f a minute); healer failures %v",
		lines, len(bursts), window.Round(time.Second), perMin, g.status().Heal.Failures)
	if lines == 0 {
		t.Logf("note: the healer never chose the full store (placement ranked it last every time)")
	}
	// Backing off from 5 s, doubling: tries at +0, +5, +15, +35 s at most;
	// each try is one round's tasks (at most 4 x --heal-parallel objects).
	if len(bursts) > 4 || perMin > 20 {
		t.Errorf("the full store refused %d times in %d bursts (at %v) within %v: the healer does not back off\n%s",
			lines, len(bursts), bursts, window.Round(time.Second), grepRefusals(log, 20))
	}
	fc.remount(m)
	n := compareTrees(t, src, filepath.Join(m.dir, "tree"), false)
	t.Logf("%d paths read back exactly", n)
}

// tmpfsAt mounts a tmpfs with these options at dir; the test's cleanup
// unmounts it (register it before starting the process that uses it:
// cleanups run last registered first).
func tmpfsAt(t testing.TB, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := runCmd("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting the tmpfs at %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// fillInodes makes empty files in dir until the file system has no inode
// left (ENOSPC) and returns how many.
func fillInodes(t testing.TB, dir string) int {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n := 0; ; n++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(n)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if n > 1<<20 {
			t.Fatalf("made %d files in %s and it is not full", n, dir)
		}
	}
}

var refusalRE = regexp.MustCompile(`(?i)resource ?exhausted|no space|refus`)

// refusals counts the log lines of refused writes and the distinct seconds
// (bursts) they fell in.
func refusals(log string) (lines int, bursts []string) {
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	timeRE := regexp.MustCompile(`time=(\S+)`)
	for sc.Scan() {
		l := sc.Text()
		if !refusalRE.MatchString(l) {
			continue
		}
		lines++
		sec := "?"
		if m := timeRE.FindStringSubmatch(l); m != nil {
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				sec = ts.Truncate(time.Second).Format("15:04:05")
			}
		}
		if !seen[sec] {
			seen[sec] = true
			bursts = append(bursts, sec)
		}
	}
	sort.Strings(bursts)
	return lines, bursts
}

func grepRefusals(log string, n int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if refusalRE.MatchString(l) && len(out) < n {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestDrainDuringCopy: while cp -a copies a tree into the mount, ecfs drain
// marks a store draining. The copy succeeds; ecfs drain --wait returns once
// no shard is recorded on the store; status shows it draining with 0
// shards; the orphan scan removes what writes placed there before the
// drain and never committed, until the store's disk holds no shard file;
// every file reads back exactly.
func TestDrainDuringCopy(t *testing.T) {
	fc := newFSClusterWith(t, 1, 7, healMetaFlags("--orphan-interval", "2s", "--orphan-grace", "10s"),
		[]string{"--heartbeat", "250ms"})
	m := fc.mount("--meta-timeout", "4s", "--write-timeout", "4s") // together below the orphan grace
	src := makeTree(t, 96)
	drained := fc.c.stores[4]
	dst := filepath.Join(m.dir, "tree")
	errc := copyInBackground(src, dst)
	// Drain once the copy has recorded shards on the store.
	waitFor(t, "the copy to place shards on store 4", 60*time.Second, func() error {
		select {
		case err := <-errc:
			t.Fatalf("the copy ended before the drain: %v", err)
		default:
		}
		if _, n := storeEntry(t, fc.g.status(), drained.addr); n < 10 {
			return fmt.Errorf("%d shards recorded on store 4", n)
		}
		return nil
	})
	code, out := ecfsAdmin(t, fc.g, 30*time.Second, "drain", drained.addr)
	if code != 0 {
		t.Fatalf("ecfs drain %s: exit %d:\n%s", drained.addr, code, out)
	}
	drainAt := time.Now()
	select {
	case err := <-errc:
		t.Fatalf("the copy ended (%v) before the drain took effect: make the tree bigger", err)
	default:
	}
	st := fc.g.status()
	state, left := storeEntry(t, st, drained.addr)
	if state != "draining" {
		t.Fatalf("after ecfs drain the store is %s, want draining", state)
	}
	t.Logf("drained store 4 during the copy: %d shards recorded on it then", left)
	if err := <-errc; err != nil {
		t.Fatalf("the copy failed during the drain: %v", err)
	}
	t.Logf("the copy finished %v after the drain", time.Since(drainAt).Round(time.Millisecond))
	fc.unmount(m) // its journal committed: nothing more lands on the store

	code, out = ecfsAdmin(t, fc.g, 90*time.Second, "drain", "--wait", "--timeout", "60s", drained.addr)
	if code != 0 {
		t.Fatalf("ecfs drain --wait %s: exit %d:\n%s", drained.addr, code, out)
	}
	st = fc.g.status()
	state, left = storeEntry(t, st, drained.addr)
	if state != "draining" || left != 0 {
		t.Fatalf("after ecfs drain --wait the store is %s with %d shards, want draining with 0", state, left)
	}
	if st.Objects.Degraded != 0 || st.Objects.Unreadable != 0 || st.Heal.Pending != 0 {
		t.Fatalf("after the drain: objects %+v, heal pending %d", st.Objects, st.Heal.Pending)
	}
	if st.Heal.MovedShards == 0 {
		t.Errorf("heal.moved_shards is 0 after draining a store that held shards")
	}
	t.Logf("drain done %v after it started: moved %d shards", time.Since(drainAt).Round(time.Millisecond), st.Heal.MovedShards)
	waitFor(t, "no shard file left on the drained store's disk", 45*time.Second, func() error {
		for _, sub := range []string{"shards", "tmp"} {
			if n, some := filesUnder(filepath.Join(drained.dataDir, "disk", sub)); n != 0 {
				return fmt.Errorf("%d files left in disk/%s, e.g. %v", n, sub, some)
			}
		}
		return nil
	})
	t.Logf("the drained store's disk is empty %v after the drain", time.Since(drainAt).Round(time.Millisecond))
	fc.start(m)
	dropPageCache(t)
	n := compareTrees(t, src, dst, false)
	t.Logf("%d paths read back exactly", n)
	if _, left = storeEntry(t, fc.g.status(), drained.addr); left != 0 {
		t.Fatalf("%d shards recorded on the drained store after the reads", left)
	}
	// Stopped, the drained store can be forgotten.
	if code, out := ecfsAdmin(t, fc.g, 30*time.Second, "drain", "--remove", drained.addr); code == 0 {
		t.Fatalf("ecfs drain --remove of a store still reporting succeeded:\n%s", out)
	}
	drained.p.kill()
	waitFor(t, "ecfs drain --remove of the stopped store", 30*time.Second, func() error {
		if code, out := ecfsAdmin(t, fc.g, 30*time.Second, "drain", "--remove", drained.addr); code != 0 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	for _, s := range fc.g.status().Stores {
		if s.Addr == drained.addr {
			t.Fatalf("the removed store is still listed: %+v", s)
		}
	}
}

// duBytes is the disk space used under dir (st_blocks, as du counts it),
// and how much of it directories take.
func duBytes(t testing.TB, dir string) (total, dirs int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // deleted meanwhile
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
			if d.IsDir() {
				dirs += st.Blocks * 512
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	return total, dirs
}

func storesDu(t testing.TB, c *testCluster) (total, dirs int64) {
	for _, s := range c.stores {
		a, b := duBytes(t, s.dataDir)
		total, dirs = total+a, dirs+b
	}
	return total, dirs
}

// TestDeleteReturnsSpace: with a 64 MiB file kept, 1 GiB of files written
// through the mount and deleted: within a deadline GC gives the space back
// (the stores' disk use, du of their data dirs, within 5% of what it was
// with the kept file alone: first the shard files, then with directories),
// no object but the kept file's is left, and the kept file reads back.
func TestDeleteReturnsSpace(t *testing.T) {
	fc := newFSClusterWith(t, 1, 7, healMetaFlags(), []string{"--heartbeat", "250ms"})
	m := fc.mount()
	kept := writeRandomFile(t, filepath.Join(m.dir, "kept"), 64<<20, 1)
	fc.unmount(m)
	base := waitHealed(t, fc.g, "the kept file's objects whole", 30*time.Second)
	fc.start(m)
	before, beforeDirs := storesDu(t, fc.c)

	const files, size = 16, 64 << 20
	start := time.Now()
	for i := range files {
		writeRandomFile(t, filepath.Join(m.dir, "big", fmt.Sprint(i)), size, uint64(100+i))
	}
	written := time.Since(start)
	peak, _ := storesDu(t, fc.c)
	t.Logf("wrote %d MiB in %v (%.0f MB/s); the stores' disk use went from %d to %d MiB",
		files*size>>20, written.Round(time.Millisecond), float64(files*size)/1e6/written.Seconds(), before>>20, peak>>20)
	if peak < before+files*size {
		t.Fatalf("the stores use %d bytes after writing %d (before %d): the data is not on their disks", peak, files*size, before)
	}
	sh(t, m.dir, "rm -rf big")
	deleted := time.Now()
	// First the shard files: what GC deletes.
	var now, dirs int64
	beforeFiles := before - beforeDirs
	waitFor(t, "GC to delete the deleted files' shards", 60*time.Second, func() error {
		now, dirs = storesDu(t, fc.c)
		if d := (now - dirs) - beforeFiles; d > beforeFiles/20 {
			return fmt.Errorf("the stores' files use %d bytes, %d (%.1f%%) more than before the writes",
				now-dirs, d, 100*float64(d)/float64(beforeFiles))
		}
		return nil
	})
	st := fc.g.status()
	t.Logf("shard files back to %d MiB (before %d MiB) %v after rm -rf; objects %d (kept file: %d), gc pending %d",
		(now-dirs)>>20, beforeFiles>>20, time.Since(deleted).Round(time.Millisecond), st.Objects.Total, base.Objects.Total, st.GC.Pending)
	// Then the whole disk use, as du counts it: directories too.
	if d := now - before; d > before/20 {
		empty := 0
		for _, s := range fc.c.stores {
			_ = filepath.WalkDir(filepath.Join(s.dataDir, "disk", "shards"), func(p string, e fs.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					if es, _ := os.ReadDir(p); len(es) == 0 {
						empty++
					}
				}
				return nil
			})
		}
		t.Errorf("the stores' data dirs use %d bytes (du), %d (%.1f%%) more than before the writes: the shard files are gone, "+
			"and directories take %d bytes (%d before): %d emptied fan-out directories stay behind",
			now, d, 100*float64(d)/float64(before), dirs, beforeDirs, empty)
	}
	waitFor(t, "only the kept file's objects recorded", 10*time.Second, func() error {
		if st := fc.g.status(); st.Objects.Total != base.Objects.Total || st.GC.Pending != 0 {
			return fmt.Errorf("objects %d (want %d), gc pending %d", st.Objects.Total, base.Objects.Total, st.GC.Pending)
		}
		return nil
	})
	fc.remount(m)
	if sum, n := fileSum(t, filepath.Join(m.dir, "kept")); sum != kept {
		t.Fatalf("the kept file no longer reads back after GC: %d bytes, sha256 %s, want %s", n, sum, kept)
	}
}

// writeRandomFile writes size pseudo-random bytes (seeded) to path in
// 1 MiB writes, fsyncs and closes it, and returns their sha256.
func writeRandomFile(t testing.TB, path string, size int, seed uint64) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 0xec})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= len(buf) {
		b := buf[:min(len(buf), left)]
		_, _ = r.Read(b)
		h.Write(b)
		if _, err := f.Write(b); err != nil {
			f.Close()
			t.Fatalf("writing %s: %v", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		t.Fatalf("fsync %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileSum reads path whole and returns its sha256 and length.
func fileSum(t testing.TB, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// checkHealMetrics reads the meta leader's /metrics: the heal series are
// there, with nothing pending and the shards rebuilt that status reports.
func checkHealMetrics(t *testing.T, g *metaGroup, rebuilt uint64) {
	t.Helper()
	resp, err := http.Get("http://" + g.nodes[g.leader()].http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ecfs_heal_pending_objects{risk="0"} 0`,
		`ecfs_heal_pending_objects{risk="2"} 0`,
		`ecfs_heal_corrupt_shards 0`,
		fmt.Sprintf("ecfs_heal_rebuilt_shards_total %d", rebuilt),
		`ecfs_heal_failures_total{reason="full"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("the leader's /metrics lacks %q:\n%s", want, grepLines(string(body), "ecfs_heal"))
		}
	}
}
