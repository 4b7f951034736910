package integration

// Histories of file-system calls made during faults, and their checks:
// porcupine (the standard linearizability checker) over a namespace model
// and a per-file register model. A call that failed with an error that
// leaves its effect unknown (EIO, ETIMEDOUT, ENOTCONN …) is pending: its
// return time is infinite, so it may have happened at any time after its
// call, or never.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// pendingReturn is the return time of a call whose outcome is unknown.
const pendingReturn = math.MaxInt64

// maybeErr reports whether err leaves the call's effect unknown.
func maybeErr(err error) bool {
	for _, e := range []syscall.Errno{syscall.EIO, syscall.ETIMEDOUT, syscall.ENOTCONN, syscall.ECONNABORTED,
		syscall.EINTR, syscall.EAGAIN, syscall.ENOSPC, syscall.ESTALE} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// history is the operations of one model (one namespace directory, or all
// register files) and what the checks found.
type history struct {
	name  string
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	pend  int
}

func newHistory(name string, start time.Time) *history { return &history{name: name, start: start} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

// add records a call; ret < 0 makes it pending.
func (h *history) add(client int, in, out any, call, ret int64) {
	if ret < 0 {
		ret = pendingReturn
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ret == pendingReturn {
		h.pend++
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// --- namespace model: which of nsNames exist in one directory ------------

const nsNames = 4

type nsKind int

const (
	nsCreate nsKind = iota // O_CREAT|O_EXCL, then fsync of the directory
	nsUnlink
	nsRename
	nsList
)

type nsIn struct {
	kind nsKind
	a, b int
	id   uint32 // unique per call: a create's file identity
}

// nsState is which file (identity: its create's id; 0: none) each name
// holds, and for each name the name its file was last renamed from (-1:
// none), for the one rename the kernel answers by itself (nsModel).
type nsState struct {
	file [nsNames]uint32
	from [nsNames]int8
}

func (s nsState) names() uint8 {
	var m uint8
	for i, f := range s.file {
		if f != 0 {
			m |= 1 << i
		}
	}
	return m
}

type nsOut struct {
	errno   syscall.Errno // 0, EEXIST or ENOENT
	unknown bool          // pending: the effect is unknown
	names   uint8         // nsList: the bit of each name seen
}

// nsModel: create, unlink, rename and list of nsNames in one directory.
// One outcome is allowed that a linearizable file system would not give,
// because the kernel gives it before asking the file system: rename(a, b)
// returns 0 and does nothing when the kernel's entries for a and b name the
// same inode ("two links of one file"), and on a mount whose entries for a
// were looked up just before another mount renamed a to b, they do. So
// rename(a, b) may also succeed with a gone when the file at b is the one
// last renamed there from a: the outcome the caller asked for.
var nsModel = porcupine.Model{
	Init: func() any {
		return nsState{from: [nsNames]int8{-1, -1, -1, -1}}
	},
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(nsState), input.(nsIn), output.(nsOut)
		has := func(i int) bool { return s.file[i] != 0 }
		switch in.kind {
		case nsCreate:
			if has(in.a) {
				return out.unknown || out.errno == syscall.EEXIST, s
			}
			n := s
			n.file[in.a], n.from[in.a] = in.id, -1
			return out.unknown || out.errno == 0, n
		case nsUnlink:
			if !has(in.a) {
				return out.unknown || out.errno == syscall.ENOENT, s
			}
			n := s
			n.file[in.a], n.from[in.a] = 0, -1
			return out.unknown || out.errno == 0, n
		case nsRename:
			if !has(in.a) {
				if out.errno == 0 && has(in.b) && s.from[in.b] == int8(in.a) {
					return true, s // the kernel's "same file": see above
				}
				return out.unknown || out.errno == syscall.ENOENT, s
			}
			n := s
			n.file[in.b], n.from[in.b] = s.file[in.a], int8(in.a)
			n.file[in.a], n.from[in.a] = 0, -1
			return out.unknown || out.errno == 0, n
		default:
			return out.names == s.names(), s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(nsIn), output.(nsOut)
		res := "ok"
		switch {
		case out.unknown:
			res = "?"
		case in.kind == nsList:
			res = nsSet(out.names)
		case out.errno != 0:
			res = out.errno.Error()
		}
		return fmt.Sprintf("%s(n%d,n%d) -> %s", [...]string{"create", "unlink", "rename", "list"}[in.kind], in.a, in.b, res)
	},
	DescribeState: func(state any) string { return nsSet(state.(nsState).names()) },
}

func nsSet(s uint8) string {
	var n []string
	for i := range nsNames {
		if s&(1<<i) != 0 {
			n = append(n, fmt.Sprint("n", i))
		}
	}
	return "{" + strings.Join(n, ",") + "}"
}

// --- register model: the content of each file, replaced whole ------------

type regIn struct {
	file  int
	write bool
	value uint64 // the value written
}

type regOut struct {
	value   uint64 // the value read (0: the initial empty file)
	unknown bool
}

var regModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range h {
			f := op.Input.(regIn).file
			by[f] = append(by[f], op)
		}
		var out [][]porcupine.Operation
		for f := range len(by) + 16 {
			if ops, ok := by[f]; ok {
				out = append(out, ops)
			}
		}
		return out
	},
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(regIn), output.(regOut)
		if in.write {
			return true, in.value
		}
		return out.value == state.(uint64), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regIn), output.(regOut)
		if in.write {
			return fmt.Sprintf("r%d := v%d%s", in.file, in.value, map[bool]string{true: " ?"}[out.unknown])
		}
		return fmt.Sprintf("r%d -> v%d", in.file, out.value)
	},
	DescribeState: func(state any) string { return fmt.Sprint("v", state) },
}

// --- results --------------------------------------------------------------

// faultReport collects what one test checked and found.
type faultReport struct {
	mu        sync.Mutex
	histories int
	opCounts  []int
	pending   int
	anomalies []string
	unknown   int // histories the checker gave up on
}

func (r *faultReport) anomaly(t testing.TB, format string, args ...any) {
	s := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.anomalies = append(r.anomalies, s)
	n := len(r.anomalies)
	r.mu.Unlock()
	if n <= 20 {
		t.Errorf("anomaly: %s", s)
	}
}

// check runs porcupine on h (each partition is one history) and records
// an anomaly if it is not linearizable.
func (r *faultReport) check(t testing.TB, model porcupine.Model, h *history) {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	pend := h.pend
	h.mu.Unlock()
	parts := [][]porcupine.Operation{ops}
	if model.Partition != nil {
		parts = model.Partition(ops)
	}
	r.mu.Lock()
	r.histories += len(parts)
	for _, p := range parts {
		r.opCounts = append(r.opCounts, len(p))
	}
	r.pending += pend
	r.mu.Unlock()
	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, 30*time.Second)
	t.Logf("history %s: %d operations (%d pending) in %d partitions: %s in %v", h.name, len(ops), pend, len(parts), res, time.Since(began).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("ecfs-faults-%s-%s.html", strings.ReplaceAll(t.Name(), "/", "_"), h.name))
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Logf("visualizing: %v", err)
		}
		r.anomaly(t, "history %s is not linearizable (%d operations, %d pending); see %s\n%s", h.name, len(ops), pend, path, explain(model, parts, info, h.start))
	case porcupine.Unknown:
		t.Logf("history %s: the checker gave up after 30 s: inconclusive", h.name)
		r.mu.Lock()
		r.unknown++
		r.mu.Unlock()
	}
}

// explain describes where each failed partition got stuck: the end of the
// longest linearization found (with the state after each step) and the
// first operation (by return time) that fits nowhere after it.
func explain(model porcupine.Model, parts [][]porcupine.Operation, info porcupine.LinearizationInfo, start time.Time) string {
	var b strings.Builder
	at := func(ns int64) string {
		if ns == pendingReturn {
			return "never"
		}
		return start.Add(time.Duration(ns)).Format("15:04:05.000")
	}
	for p, partials := range info.PartialLinearizationsOperations() {
		if p >= len(parts) {
			break
		}
		var longest []porcupine.Operation
		for _, l := range partials {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if len(longest) == len(parts[p]) {
			continue
		}
		type key struct {
			c    int
			call int64
		}
		done := map[key]bool{}
		state := model.Init()
		var lines []string
		for _, op := range longest {
			done[key{op.ClientId, op.Call}] = true
			_, state = model.Step(state, op.Input, op.Output)
			lines = append(lines, fmt.Sprintf("    client %d [%s, %s] %s => %s", op.ClientId, at(op.Call), at(op.Return),
				model.DescribeOperation(op.Input, op.Output), model.DescribeState(state)))
		}
		fmt.Fprintf(&b, "  partition %d: %d of %d operations linearized; the last ones:\n%s\n", p, len(longest), len(parts[p]),
			strings.Join(lines[max(0, len(lines)-6):], "\n"))
		var stuck *porcupine.Operation
		for i, op := range parts[p] {
			if !done[key{op.ClientId, op.Call}] && (stuck == nil || op.Return < stuck.Return) {
				stuck = &parts[p][i]
			}
		}
		if stuck != nil {
			fmt.Fprintf(&b, "  and none of those left fits next, the first to return being: client %d [%s, %s] %s\n", stuck.ClientId,
				at(stuck.Call), at(stuck.Return), model.DescribeOperation(stuck.Input, stuck.Output))
		}
	}
	return b.String()
}

// summary logs the figures of the run and fails on anomalies.
func (r *faultReport) summary(t testing.TB, fc *faultCluster, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lo, hi, sum := math.MaxInt, 0, 0
	for _, n := range r.opCounts {
		lo, hi, sum = min(lo, n), max(hi, n), sum+n
	}
	avg := 0
	if len(r.opCounts) > 0 {
		avg = sum / len(r.opCounts)
	} else {
		lo = 0
	}
	t.Logf("SUMMARY %s: %d histories checked (%d inconclusive), operations per history min %d / mean %d / max %d (%d in all, %d pending), "+
		"%d faults injected, %d anomalies found, %v",
		t.Name(), r.histories, r.unknown, lo, avg, hi, sum, r.pending, len(fc.faults), len(r.anomalies), took.Round(time.Second))
	for i, f := range fc.faults {
		t.Logf("  fault %d: %s", i+1, f)
	}
	if fc.stuckKills > 0 {
		t.Logf("  %d killed mount(s) stuck in the kernel needed their FUSE connection aborted (a known hazard: see killMount)", fc.stuckKills)
	}
	for i, a := range r.anomalies {
		if i == 20 {
			t.Logf("  … %d more anomalies", len(r.anomalies)-20)
			break
		}
		t.Logf("  anomaly: %s", a)
	}
}

// --- contents -------------------------------------------------------------

// content is the bytes of value v: a header naming it, then bytes drawn
// from v, so any read can say which write it saw, or that it saw none.
func content(v uint64, size int) []byte {
	b := make([]byte, size)
	hdr := fmt.Sprintf("ecfs-reg %016x %010d\n", v, size)
	copy(b, hdr)
	x := v*0x9e3779b97f4a7c15 | 1
	for i := len(hdr); i < size; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(bits.RotateLeft64(x, i&63))
	}
	return b
}

// valueOf parses what a read returned: the value, or an error if the bytes
// are not exactly those of one write (torn, mixed, or never written).
func valueOf(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var v uint64
	var size int
	if _, err := fmt.Sscanf(string(b[:min(len(b), 37)]), "ecfs-reg %016x %010d\n", &v, &size); err != nil {
		return 0, fmt.Errorf("%d bytes with no header (%q…)", len(b), b[:min(len(b), 16)])
	}
	if size != len(b) {
		return v, fmt.Errorf("v%d: %d bytes, the write was %d", v, len(b), size)
	}
	want := content(v, size)
	if sha256.Sum256(want) != sha256.Sum256(b) {
		i := 0
		for i < len(b) && b[i] == want[i] {
			i++
		}
		return v, fmt.Errorf("v%d: %d bytes differ from the write from offset %d", v, len(b), i)
	}
	return v, nil
}
