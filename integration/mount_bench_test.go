package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mountBufferSize is the mount's default --buffer-size; the benchmark uses
// the default and checks the mount's memory against it.
const mountBufferSize = 256 << 20

// BenchmarkMount runs the same workloads on a real mount (1 meta, 6 stores,
// 4+2, default buffers), on a directory of the local file system that holds
// the stores' data, and on go-fuse's loopback example over that file system
// (the practical limit of a go-fuse file system), in the same run, and
// reports all three, ecfs/local and ecfs/loopback; and ecfs2: the same
// workloads written through the mount and read, listed and removed
// through a second mount (another host's view: nothing cached there, the
// first mount's leases revoked):
//
//   - seq-write: ECFS_BENCH_SEQ_MIB (2048) MiB in 1 MiB writes, fsync, close;
//   - seq-read: the same file after sync and drop_caches;
//   - small files: ECFS_BENCH_FILES (10000) files of 4 KiB in directories of
//     100, one goroutine, each phase over all files: create (write, close);
//     stat cold (after drop_caches) and warm (at once again: the best of 5
//     passes, each some 20 ms of kernel-cached stats); readdir cold
//     (per directory); read cold; delete;
//   - tree: rsync -a of $GOROOT/src (or ECFS_BENCH_RSYNC_DIR: absolute or
//     relative to $GOROOT/src), diff -r of the copy against it (cold), then
//     rm -rf of the copy.
//
// Throughput ratios are ecfs/reference (below 1: ecfs is slower); time
// ratios (rsync, diff, rm) are ecfs/reference seconds (above 1: ecfs is
// slower). The mount process's VmRSS is sampled every 100 ms through the
// run; its maximum should stay under the buffer size + 100 MiB (logged, not
// failed).
func BenchmarkMount(b *testing.B) {
	seqMiB := envInt(b, "ECFS_BENCH_SEQ_MIB", 2048)
	nFiles := envInt(b, "ECFS_BENCH_FILES", 10000)
	goroot := strings.TrimSpace(sh(b, ".", "go env GOROOT"))
	rsyncSrc := filepath.Join(goroot, "src")
	if v := os.Getenv("ECFS_BENCH_RSYNC_DIR"); v != "" {
		rsyncSrc = v
		if !filepath.IsAbs(v) {
			rsyncSrc = filepath.Join(goroot, "src", v)
		}
	}

	// The daemons' default timers (heal every 1 s, GC every 2 s, orphan
	// scan every 5 min, heartbeats every 3 s), not the tests' fast ones.
	fc := newFSClusterWith(b, 1, 6, nil, nil)
	m := fc.mount() // default --buffer-size (mountBufferSize)
	// The local reference lives beside the stores' data dirs (all under the
	// test's temporary directory, one file system); so does the loopback's.
	local := filepath.Join(b.TempDir(), "local")
	if err := os.Mkdir(local, 0o755); err != nil {
		b.Fatal(err)
	}
	lo, _, _ := startLoopback(b)
	// ecfs2: written through the mount, read (and removed) through a
	// second one, as from another host: nothing of the tree is cached
	// there, and the first mount's leases move to it.
	m2 := fc.mount()
	sides := []struct{ name, dir, read string }{{"local", local, local}, {"loopback", lo, lo}, {"ecfs", m.dir, m.dir}, {"ecfs2", m.dir, m2.dir}}

	rss := startRSSSampler(b, m.p.cmd.Process.Pid, 100*time.Millisecond)
	defer rss.stop()

	srcFiles, srcBytes := warmTree(b, rsyncSrc)
	b.ResetTimer()
	for range b.N {
		res := map[string]map[string]float64{} // phase -> side -> figure
		each := func(name string, f func(side, dir, read string) float64) {
			res[name] = map[string]float64{}
			for _, sd := range sides {
				rss.phase(sd.name + " " + name)
				res[name][sd.name] = f(sd.name, sd.dir, sd.read)
			}
			rss.phase("")
		}
		mbs := func(bytes int64, d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }

		// 1, 2: sequential write, then cold sequential read.
		seqBytes := int64(seqMiB) << 20
		eintr := map[string]*eintrCount{}
		for _, sd := range sides {
			eintr[sd.name] = &eintrCount{}
		}
		seqName := func(side string) string { return "seq-" + side }
		each("seq-write", func(side, dir, _ string) float64 {
			return mbs(seqBytes, seqWrite(b, filepath.Join(dir, seqName(side)), seqMiB, eintr[side]))
		})
		cold := true
		each("seq-read", func(side, _, read string) float64 {
			cold = dropCaches(b) && cold
			return mbs(seqBytes, seqRead(b, filepath.Join(read, seqName(side)), seqMiB))
		})
		for _, sd := range sides {
			if err := os.Remove(filepath.Join(sd.read, seqName(sd.name))); err != nil {
				b.Fatal(err)
			}
		}

		// 3: small files, one goroutine, phase by phase.
		each("small-files", func(side, dir, read string) float64 {
			for op, rate := range smallFiles(b, filepath.Join(dir, "small-"+side), filepath.Join(read, "small-"+side), nFiles, eintr[side]) {
				if res[op] == nil {
					res[op] = map[string]float64{}
				}
				res[op][side] = rate
			}
			return 0
		})
		delete(res, "small-files")

		// 4: rsync -a of a source tree, diff -r of the copy (cold), then
		// rm -rf of the copy.
		each("rsync", func(side, dir, _ string) float64 {
			return timeCmd(b, "rsync", "-a", rsyncSrc+"/", filepath.Join(dir, "rsync-"+side)+"/").Seconds()
		})
		each("diff", func(side, _, read string) float64 {
			cold = dropCaches(b) && cold
			return timeCmd(b, "diff", "-r", rsyncSrc, filepath.Join(read, "rsync-"+side)).Seconds()
		})
		each("rm", func(side, _, read string) float64 {
			return timeCmd(b, "rm", "-rf", filepath.Join(read, "rsync-"+side)).Seconds()
		})

		// 5: memory of the mount process.
		maxRSS, byPhase := rss.max()
		hwm := procStatusKiB(m.p.cmd.Process.Pid, "VmHWM")
		limit := int64(mountBufferSize>>20) + 100

		// The summary stays within the 10 lines a benchmark's log keeps.
		cols := []struct{ name, unit string }{
			{"seq-write", "MB/s"}, {"seq-read", "MB/s"},
			{"create", "ops/s"}, {"stat-cold", "ops/s"}, {"stat-warm", "ops/s"}, {"readdir-cold", "dirs/s"},
			{"read-cold", "ops/s"}, {"delete", "ops/s"},
			{"rsync", "s"}, {"diff", "s"}, {"rm", "s"},
		}
		var tbl strings.Builder
		fmt.Fprintf(&tbl, "summary: %d MiB sequential, %d files of 4 KiB in directories of %d, rsync -a, diff -r, rm -rf of %s (%d files, %.0f MB); caches dropped before cold phases: %v\n",
			seqMiB, nFiles, filesPerDir, rsyncSrc, srcFiles, float64(srcBytes)/1e6, cold)
		rowNames := []string{"", "local", "loopback", "ecfs", "ecfs2", "ecfs/local", "ecfs/loopback", "ecfs2/loopback"}
		rows := make([]strings.Builder, len(rowNames))
		for i, n := range rowNames {
			fmt.Fprintf(&rows[i], "%-13s", n)
		}
		for _, c := range cols {
			r := res[c.name]
			kind := "ratio"
			if c.unit == "s" {
				kind = "time-ratio" // above 1: ecfs takes longer
			}
			fmt.Fprintf(&rows[0], " %13s", c.name)
			for i, sd := range sides {
				b.ReportMetric(r[sd.name], c.name+"-"+sd.name+"-"+strings.ReplaceAll(c.unit, "/", "-per-"))
				fmt.Fprintf(&rows[1+i], " %13s", fmtNum(r[sd.name]))
			}
			for i, ref := range []string{"local", "loopback"} {
				ratio := r["ecfs"] / r[ref]
				b.ReportMetric(ratio, c.name+"-"+kind+"-"+ref)
				fmt.Fprintf(&rows[5+i], " %13s", fmtNum(ratio))
			}
			ratio := r["ecfs2"] / r["loopback"]
			b.ReportMetric(ratio, c.name+"-"+kind+"-ecfs2-loopback")
			fmt.Fprintf(&rows[7], " %13s", fmtNum(ratio))
		}
		for i := range rows {
			fmt.Fprintf(&tbl, "%s\n", rows[i].String())
		}
		b.ReportMetric(float64(maxRSS)/1024, "mount-max-RSS-MiB")
		verdict := "ok"
		if max(maxRSS, hwm)/1024 >= limit {
			verdict = "OVER LIMIT"
		}
		fmt.Fprintf(&tbl, "mount max RSS %.0f MiB (sampled every 100 ms; VmHWM %.0f MiB), limit %d MiB = buffer %d MiB + 100: %s; by phase:",
			float64(maxRSS)/1024, float64(hwm)/1024, limit, mountBufferSize>>20, verdict)
		for _, p := range byPhase {
			if name, ok := strings.CutPrefix(p.name, "ecfs "); ok {
				fmt.Fprintf(&tbl, " %s %.0f,", name, float64(p.kib)/1024)
			}
		}
		tbl.WriteString("\n")
		e := eintr["ecfs"]
		b.ReportMetric(float64(e.close), "ecfs-close-EINTR")
		b.ReportMetric(float64(e.unlink), "ecfs-unlink-EINTR")
		for _, sd := range sides {
			if c := eintr[sd.name]; *c != (eintrCount{}) {
				fmt.Fprintf(&tbl, "EINTR let pass on %s: close %d, unlink that took effect %d (interrupted FUSE requests; data checked after)\n",
					sd.name, c.close, c.unlink)
			}
		}
		b.Logf("%s", tbl.String())
		if verdict != "ok" {
			b.Logf("MOUNT MEMORY OVER LIMIT: max RSS %.0f MiB (VmHWM %.0f MiB) >= %d MiB = buffer size %d MiB + 100 MiB",
				float64(maxRSS)/1024, float64(hwm)/1024, limit, mountBufferSize>>20)
		}
	}
}

// eintrCount counts the calls that failed with EINTR and were let pass.
type eintrCount struct{ close, unlink int }

// seqWrite writes mib MiB to path in 1 MiB writes, fsyncs and closes it;
// the first 8 bytes of every MiB hold its index (seqRead checks them).
func seqWrite(b *testing.B, path string, mib int, eintr *eintrCount) time.Duration {
	buf := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(buf)
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	for i := range mib {
		binary.LittleEndian.PutUint64(buf, uint64(i))
		if _, err := f.Write(buf); err != nil {
			b.Fatalf("writing %s at MiB %d: %v", path, i, err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatalf("fsync %s: %v", path, err)
	}
	closeFile(b, f, eintr)
	return time.Since(start)
}

// seqRead reads path in 1 MiB reads and checks its size and MiB indexes.
func seqRead(b *testing.B, path string, mib int) time.Duration {
	buf := make([]byte, 1<<20)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for i := range mib {
		if _, err := io.ReadFull(f, buf); err != nil {
			b.Fatalf("reading %s at MiB %d: %v", path, i, err)
		}
		if got := binary.LittleEndian.Uint64(buf); got != uint64(i) {
			b.Fatalf("%s: MiB %d holds the data of MiB %d", path, i, got)
		}
	}
	if n, _ := f.Read(buf[:1]); n != 0 {
		b.Fatalf("%s is longer than %d MiB", path, mib)
	}
	return time.Since(start)
}

// filesPerDir is how many small files share a directory.
const filesPerDir = 100

// smallFiles creates, writes and closes n files of 4 KiB in directories of
// filesPerDir under dir, then, through other (dir itself, or the same
// directory seen through another mount), stats them all (cold: after
// drop_caches, and warm: at once again, best of 5), lists every directory (cold),
// reads every file (cold) and deletes them all, one goroutine, and returns
// each phase's files (directories, for readdir) per second.
func smallFiles(b *testing.B, dir, other string, n int, eintr *eintrCount) map[string]float64 {
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	dirs := (n + filesPerDir - 1) / filesPerDir
	mk := func(d int) string { return filepath.Join(dir, fmt.Sprintf("d%04d", d)) }
	for d := range dirs {
		if err := os.Mkdir(mk(d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	created := func(i int) string { return filepath.Join(mk(i/filesPerDir), fmt.Sprintf("f%06d", i)) }
	sub := func(d int) string { return filepath.Join(other, fmt.Sprintf("d%04d", d)) }
	data := make([]byte, 4096)
	r := rand.NewChaCha8([32]byte{2})
	_, _ = r.Read(data)
	name := func(i int) string { return filepath.Join(sub(i/filesPerDir), fmt.Sprintf("f%06d", i)) }
	rates := map[string]float64{}
	phase := func(op string, count int, coldStart bool, f func(i int) error) {
		if coldStart {
			dropCaches(b)
		}
		start := time.Now()
		for i := range count {
			if err := f(i); err != nil {
				b.Fatalf("%s %d: %v", op, i, err)
			}
		}
		rates[op] = float64(count) / time.Since(start).Seconds()
	}
	phase("create", n, false, func(i int) error {
		// Not O_EXCL: Go retries an open that failed with EINTR, and the
		// retry of a create that took effect must not fail.
		f, err := os.Create(created(i))
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(data, uint64(i))
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		closeFile(b, f, eintr)
		return nil
	})
	stat := func(i int) error {
		st, err := os.Stat(name(i))
		if err == nil && st.Size() != int64(len(data)) {
			err = fmt.Errorf("%s: size %d, want %d", name(i), st.Size(), len(data))
		}
		return err
	}
	phase("stat-cold", n, true, stat)
	// One warm pass takes some 20 ms, less than this machine's hiccups:
	// the best of a few.
	warm := 0.0
	for range 5 {
		phase("stat-warm", n, false, stat)
		warm = max(warm, rates["stat-warm"])
	}
	rates["stat-warm"] = warm
	phase("readdir-cold", dirs, true, func(d int) error {
		ents, err := os.ReadDir(sub(d))
		if want := min(filesPerDir, n-d*filesPerDir); err == nil && len(ents) != want {
			err = fmt.Errorf("%s: %d entries, want %d", sub(d), len(ents), want)
		}
		return err
	})
	phase("read-cold", n, true, func(i int) error {
		got, err := os.ReadFile(name(i))
		if err == nil && (len(got) != len(data) || binary.LittleEndian.Uint64(got) != uint64(i) || !bytes.Equal(got[8:], data[8:])) {
			err = fmt.Errorf("%s: wrong content (%d bytes)", name(i), len(got))
		}
		return err
	})
	phase("delete", n, false, func(i int) error { return unlink(name(i), eintr) })
	for d := range dirs {
		if err := os.Remove(sub(d)); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Remove(other); err != nil {
		b.Fatal(err)
	}
	return rates
}

// closeFile closes f and fails the benchmark on error, except EINTR, which
// it counts: a FUSE flush that the file system abandoned when the
// kernel sent it an INTERRUPT (the Go runtime's SIGURG preemption signals
// cause them). Linux has closed the descriptor then and close cannot be
// retried; the later phases check that the data arrived.
func closeFile(b *testing.B, f *os.File, eintr *eintrCount) {
	err := f.Close()
	if errors.Is(err, syscall.EINTR) {
		eintr.close++
		return
	}
	if err != nil {
		b.Fatal(err)
	}
}

// unlink removes a file. os.Remove retries unlink after EINTR, and a FUSE
// unlink can fail with EINTR after it took effect (interrupted as above),
// which makes the retry fail with ENOENT; unlink counts those.
func unlink(path string, eintr *eintrCount) error {
	interrupted := false
	for {
		err := syscall.Unlink(path)
		switch {
		case err == syscall.EINTR:
			interrupted = true
			continue
		case err == syscall.ENOENT && interrupted:
			eintr.unlink++
			return nil
		case err != nil:
			return &os.PathError{Op: "unlink", Path: path, Err: err}
		}
		return nil
	}
}

// timeCmd runs a command and returns how long it took; it fails the
// benchmark on error.
func timeCmd(b *testing.B, name string, args ...string) time.Duration {
	start := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return d
}

// warmTree reads every file under root once, so that copies of it measure
// the destination, and returns the number of regular files and their bytes.
func warmTree(b *testing.B, root string) (files int, size int64) {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, f)
		f.Close()
		files++
		size += n
		return err
	})
	if err != nil {
		b.Fatalf("reading %s: %v", root, err)
	}
	return files, size
}

// rssSampler records a process's VmRSS (KiB) every interval: the maximum
// overall and per named phase.
type rssSampler struct {
	mu     sync.Mutex
	cur    int // index in phases, -1 for none
	top    int64
	phases []rssPhase
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// rssPhase is the maximum VmRSS seen during one named phase.
type rssPhase struct {
	name string
	kib  int64
}

func startRSSSampler(b *testing.B, pid int, every time.Duration) *rssSampler {
	s := &rssSampler{cur: -1, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample(pid)
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	b.Cleanup(s.stop)
	return s
}

func (s *rssSampler) sample(pid int) {
	kib := procStatusKiB(pid, "VmRSS")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.top = max(s.top, kib)
	if s.cur >= 0 {
		s.phases[s.cur].kib = max(s.phases[s.cur].kib, kib)
	}
}

// phase names what the following samples belong to ("" for none).
func (s *rssSampler) phase(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = -1
	if name != "" {
		s.phases = append(s.phases, rssPhase{name: name})
		s.cur = len(s.phases) - 1
	}
}

func (s *rssSampler) max() (int64, []rssPhase) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.top, slices.Clone(s.phases)
}

func (s *rssSampler) stop() {
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
}

// procStatusKiB returns a "kB" field (VmRSS, VmHWM) of /proc/PID/status, 0
// if it cannot be read.
func procStatusKiB(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// envInt reads a positive integer from the environment, or def.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// fmtNum prints whole numbers from 100 up and 3 significant digits below.
func fmtNum(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}
