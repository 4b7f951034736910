package integration

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// regFiles are the register files: r0, r1 small (inline in the metadata),
// r2, r3 large (erasure-coded).
const regFiles = 4

func regLarge(f int) bool { return f >= 2 }

// regWrite is one replacement of a register file, for the durability check.
type regWrite struct {
	file      int
	value     uint64
	sum       [32]byte
	call, ret int64 // ret: pendingReturn if unknown
}

// workload runs clients on every mount: namespace clients in the current
// phase's directory, register clients on the files of reg/.
type workload struct {
	t      testing.TB
	rep    *faultReport
	mounts []string
	start  time.Time
	reg    *history
	phase  atomic.Pointer[nsPhase]
	phases []*nsPhase
	values atomic.Uint64
	ids    atomic.Uint32 // identities of namespace calls (nsIn.id)
	stop   chan struct{}
	halted sync.Once
	wg     sync.WaitGroup

	mu     sync.Mutex
	writes map[uint64]regWrite
	ops    atomic.Int64
	down   []atomic.Bool // mount i is dead: its clients wait
}

// nsPhase is one namespace history: a fresh directory per fault.
type nsPhase struct {
	dir string // relative to a mount
	h   *history
}

func newWorkload(t testing.TB, rep *faultReport, mounts []string) *workload {
	t.Helper()
	w := &workload{t: t, rep: rep, mounts: mounts, start: time.Now(), stop: make(chan struct{}), writes: map[uint64]regWrite{},
		down: make([]atomic.Bool, len(mounts))}
	w.reg = newHistory("registers", w.start)
	// Clients stop before the test returns, even when it fails midway (a
	// client reporting to a finished test panics the whole binary).
	t.Cleanup(w.halt)
	if err := os.Mkdir(filepath.Join(mounts[0], "reg"), 0o755); err != nil {
		t.Fatal(err)
	}
	for f := range regFiles {
		if err := os.WriteFile(filepath.Join(mounts[0], "reg", fmt.Sprint("r", f)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syncDir(t, filepath.Join(mounts[0], "reg"))
	return w
}

func syncDir(t testing.TB, dir string) {
	t.Helper()
	if err := fsyncPath(dir); err != nil {
		t.Fatalf("fsync %s: %v", dir, err)
	}
}

func fsyncPath(p string) error {
	fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Fsync(fd)
}

// newPhase starts a namespace history in a new directory.
func (w *workload) newPhase(name string) {
	w.t.Helper()
	dir := "ns-" + name
	if err := os.Mkdir(filepath.Join(w.mounts[0], dir), 0o755); err != nil {
		w.t.Fatalf("mkdir %s: %v", dir, err)
	}
	syncDir(w.t, w.mounts[0])
	p := &nsPhase{dir: dir, h: newHistory(dir, w.start)}
	w.phases = append(w.phases, p)
	w.phase.Store(p)
}

// run starts nsPer namespace and regPer register clients per mount.
func (w *workload) run(nsPer, regPer int) {
	id := 0
	for i := range w.mounts {
		for range nsPer {
			w.wg.Add(1)
			go w.nsClient(id, i)
			id++
		}
		for range regPer {
			w.wg.Add(1)
			go w.regClient(id, i)
			id++
		}
	}
}

// halt stops the clients and waits for their last calls.
func (w *workload) halt() {
	w.halted.Do(func() { close(w.stop) })
	w.wg.Wait()
}

func (w *workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// pause waits between calls, longer after an unknown outcome.
func (w *workload) pause(r *rand.Rand, failed bool) {
	d := time.Duration(5+r.IntN(20)) * time.Millisecond
	if failed {
		// Each unknown outcome is a pending call the checker must place
		// anywhere after its start: keep them few.
		d = time.Second
	}
	select {
	case <-w.stop:
	case <-time.After(d):
	}
}

// up waits while mount i is down and reports whether to go on.
func (w *workload) up(i int) bool {
	for w.down[i].Load() && !w.stopped() {
		time.Sleep(50 * time.Millisecond) // polling the flag
	}
	return !w.stopped()
}

func (w *workload) nsClient(id, mi int) {
	defer w.wg.Done()
	mnt := w.mounts[mi]
	r := rand.New(rand.NewPCG(uint64(id), uint64(w.start.UnixNano())))
	for w.up(mi) {
		p := w.phase.Load()
		dir := filepath.Join(mnt, p.dir)
		name := func(i int) string { return filepath.Join(dir, fmt.Sprint("n", i)) }
		in := nsIn{kind: nsKind(r.IntN(4)), a: r.IntN(nsNames), b: r.IntN(nsNames), id: w.ids.Add(1)}
		for in.kind == nsRename && in.b == in.a {
			in.b = r.IntN(nsNames)
		}
		call := p.h.now()
		var err error
		out := nsOut{}
		switch in.kind {
		case nsCreate:
			var fd int
			if fd, err = syscall.Open(name(in.a), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o644); err == nil {
				err = syscall.Close(fd)
			}
		case nsUnlink:
			err = syscall.Unlink(name(in.a))
		case nsRename:
			err = syscall.Rename(name(in.a), name(in.b))
		case nsList:
			var names []string
			if names, err = readNames(dir); err == nil {
				for _, n := range names {
					var i int
					if _, e := fmt.Sscanf(n, "n%d", &i); e == nil && i < nsNames && n == fmt.Sprint("n", i) {
						out.names |= 1 << i
					} else {
						w.rep.anomaly(w.t, "%s: a name no call made: %q", dir, n)
					}
				}
			}
		}
		if err == nil && in.kind != nsList {
			err = fsyncPath(dir) // acknowledged only once durable
		}
		ret := p.h.now()
		w.ops.Add(1)
		e := errnoOf(err)
		switch {
		case err == nil:
		case in.kind != nsList && (e == syscall.EEXIST && in.kind == nsCreate || e == syscall.ENOENT && in.kind != nsCreate):
			out.errno = e
		case maybeErr(err):
			if in.kind == nsList {
				w.pause(r, true)
				continue // a failed read tells nothing
			}
			out.unknown, ret = true, -1
		default:
			w.rep.anomaly(w.t, "%s: %s of n%d: unexpected error %v", dir, [...]string{"create", "unlink", "rename", "list"}[in.kind], in.a, err)
			out.unknown, ret = true, -1
		}
		p.h.add(id, in, out, call, ret)
		w.pause(r, ret < 0)
	}
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (w *workload) regClient(id, mi int) {
	defer w.wg.Done()
	r := rand.New(rand.NewPCG(uint64(id), uint64(w.start.UnixNano())+1))
	dir := filepath.Join(w.mounts[mi], "reg")
	for seq := 0; w.up(mi); seq++ {
		f := r.IntN(regFiles)
		path := filepath.Join(dir, fmt.Sprint("r", f))
		if r.IntN(2) == 0 {
			call := w.reg.now()
			b, err := readFileAll(path)
			ret := w.reg.now()
			w.ops.Add(1)
			if err != nil {
				if !maybeErr(err) {
					w.rep.anomaly(w.t, "read r%d: %v (the name is only ever replaced by rename)", f, err)
				}
				w.pause(r, true)
				continue
			}
			v, verr := valueOf(b)
			if verr != nil {
				w.rep.anomaly(w.t, "read r%d: bytes never written: %v", f, verr)
			} else if v != 0 {
				w.mu.Lock()
				wr, ok := w.writes[v]
				w.mu.Unlock()
				if !ok || wr.file != f {
					w.rep.anomaly(w.t, "read r%d: v%d was never written to it", f, v)
				}
			}
			w.reg.add(id, regIn{file: f}, regOut{value: v}, call, ret)
			w.pause(r, false)
			continue
		}
		size := 1<<10 + r.IntN(11<<10)
		if regLarge(f) {
			size = 1<<20 + r.IntN(4<<20)
		}
		v := w.values.Add(1)
		data := content(v, size)
		tmp := filepath.Join(dir, fmt.Sprintf(".t-%d-%d", id, seq))
		if err := writeFsync(tmp, data); err != nil {
			// Not renamed: r%d is untouched whatever happened to tmp.
			_ = os.Remove(tmp)
			w.pause(r, true)
			continue
		}
		wr := regWrite{file: f, value: v, sum: sha256.Sum256(data)}
		w.mu.Lock()
		w.writes[v] = wr
		w.mu.Unlock()
		wr.call = w.reg.now()
		err := syscall.Rename(tmp, path)
		if err == nil {
			err = fsyncPath(dir)
		}
		wr.ret = w.reg.now()
		w.ops.Add(1)
		if err != nil {
			if !maybeErr(err) {
				w.rep.anomaly(w.t, "rename %s over r%d: unexpected error %v", filepath.Base(tmp), f, err)
			}
			wr.ret = -1
		}
		w.reg.add(id, regIn{file: f, write: true, value: v}, regOut{unknown: err != nil}, wr.call, wr.ret)
		if wr.ret < 0 {
			wr.ret = pendingReturn
		}
		w.mu.Lock()
		w.writes[v] = wr
		w.mu.Unlock()
		w.pause(r, err != nil)
	}
}

func readFileAll(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return b, err
}

// writeFsync creates path with data and returns nil only if write, fsync
// and close all succeeded.
func writeFsync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// finalCheck reads every register file and namespace directory through
// mount mnt (after the restart of everything), adds these reads to the
// histories, checks them all, and checks that every file holds the bytes
// of its last acknowledged write or of one that may have come after it.
func (w *workload) finalCheck(mnt string) {
	t := w.t
	t.Helper()
	for f := range regFiles {
		call := w.reg.now()
		b, err := readFileAll(filepath.Join(mnt, "reg", fmt.Sprint("r", f)))
		ret := w.reg.now()
		if err != nil {
			w.rep.anomaly(t, "final read of r%d: %v", f, err)
			continue
		}
		v, verr := valueOf(b)
		if verr != nil {
			w.rep.anomaly(t, "final read of r%d: bytes never written: %v", f, verr)
			continue
		}
		w.reg.add(1000, regIn{file: f}, regOut{value: v}, call, ret)
		w.checkDurable(f, v, sha256.Sum256(b))
	}
	for _, p := range w.phases {
		call := p.h.now()
		names, err := readNames(filepath.Join(mnt, p.dir))
		ret := p.h.now()
		if err != nil {
			w.rep.anomaly(t, "final list of %s: %v", p.dir, err)
			continue
		}
		out := nsOut{}
		for _, n := range names {
			var i int
			if _, e := fmt.Sscanf(n, "n%d", &i); e == nil && i < nsNames {
				out.names |= 1 << i
			}
		}
		p.h.add(1000, nsIn{kind: nsList}, out, call, ret)
	}
	for _, p := range w.phases {
		w.rep.check(t, nsModel, p.h)
	}
	w.rep.check(t, regModel, w.reg)
}

// checkDurable: the last acknowledged write of file f (by return time)
// must be what it holds, unless a write that may have come after it is.
func (w *workload) checkDurable(f int, got uint64, sum [32]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last *regWrite
	for _, wr := range w.writes {
		if wr.file == f && wr.ret != 0 && wr.ret != pendingReturn && (last == nil || wr.ret > last.ret) {
			last = &wr
		}
	}
	if last == nil {
		return // nothing acknowledged: any write (or none) may be there
	}
	var ok []string
	for _, wr := range w.writes {
		if wr.file == f && wr.ret != 0 && wr.ret >= last.call {
			if wr.value == got && wr.sum == sum {
				return
			}
			ok = append(ok, fmt.Sprint("v", wr.value))
		}
	}
	w.rep.anomaly(w.t, "r%d lost an acknowledged write: it holds v%d (sha256 %x…), the last acknowledged was v%d; allowed: %s",
		f, got, sum[:6], last.value, strings.Join(ok, " "))
}
