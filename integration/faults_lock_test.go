package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Fencing: lock holders on two mounts take an flock (or an fcntl write
// lock) on KIND.lock, open KIND.log, read its size, write a 64-byte record
// with token = size/64 at offset size, fsync, close, and unlock. A holder
// whose mount froze past its session TTL must not land its write after the
// next holder's: the log must hold whole records, record i with token i,
// every acknowledged record where it was written, no token acknowledged
// twice.

const recLen = 64

type lockKind int

const (
	kindFlock lockKind = iota
	kindFcntl
)

func (k lockKind) String() string { return [...]string{"flock", "fcntl"}[k] }

type lockAck struct {
	holder, seq, token int
	granted, acked     time.Time
}

func (a lockAck) String() string {
	return fmt.Sprintf("holder %d seq %d (lock granted %s, write acknowledged %s)", a.holder, a.seq,
		a.granted.Format("15:04:05.000"), a.acked.Format("15:04:05.000"))
}

// freezeReq stops holder at the point where it has read the log's size and
// not yet written: it closes at, and goes on once goOn is closed.
type freezeReq struct {
	holder   int
	at, goOn chan struct{}
}

type lockRun struct {
	t      *testing.T
	rep    *faultReport
	stop   chan struct{}
	wg     sync.WaitGroup
	freeze [2]atomic.Pointer[freezeReq]

	mu     sync.Mutex
	acks   [2][]lockAck
	rounds [2]int
	failed [2]int
	tried  [2]map[[2]int]bool // {holder, seq} of every write attempted
}

func (lr *lockRun) lock(k lockKind, fd int, how int) error {
	if k == kindFlock {
		return syscall.Flock(fd, how)
	}
	typ := int16(syscall.F_WRLCK)
	if how == syscall.LOCK_UN {
		typ = syscall.F_UNLCK
	}
	return syscall.FcntlFlock(uintptr(fd), syscall.F_SETLKW, &syscall.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0})
}

func record(k lockKind, holder, token, seq int) []byte {
	s := fmt.Sprintf("%s holder %d token %08d seq %06d", k, holder, token, seq)
	b := []byte(fmt.Sprintf("%-*s\n", recLen-1, s))
	return b
}

// round is one lock, write, unlock; it returns whether the write was
// acknowledged (pwrite and fsync returned 0).
func (lr *lockRun) round(k lockKind, holder, seq int, dir string) {
	lf, err := syscall.Open(filepath.Join(dir, k.String()+".lock"), syscall.O_RDWR, 0)
	if err != nil {
		lr.fail(k, "open lock", err)
		return
	}
	defer syscall.Close(lf)
	if err := lr.lock(k, lf, syscall.LOCK_EX); err != nil {
		lr.fail(k, "lock", err)
		return
	}
	defer lr.lock(k, lf, syscall.LOCK_UN) //nolint:errcheck // the lock is released with the session anyway
	granted := time.Now()
	df, err := syscall.Open(filepath.Join(dir, k.String()+".log"), syscall.O_RDWR, 0)
	if err != nil {
		lr.fail(k, "open log", err)
		return
	}
	defer syscall.Close(df)
	var st syscall.Stat_t
	if err := syscall.Fstat(df, &st); err != nil {
		lr.fail(k, "fstat", err)
		return
	}
	token := int(st.Size / recLen)
	frozen := false
	if req := lr.freeze[k].Load(); req != nil && req.holder == holder && lr.freeze[k].CompareAndSwap(req, nil) {
		close(req.at)
		<-req.goOn
		frozen = true
	}
	lr.mu.Lock()
	lr.tried[k][[2]int{holder, seq}] = true
	lr.mu.Unlock()
	_, err = syscall.Pwrite(df, record(k, holder, token, seq), int64(token)*recLen)
	if err == nil {
		err = syscall.Fsync(df)
	}
	if frozen {
		lr.t.Logf("%s holder %d: the write of token %d made while its mount was frozen: %v (nil: acknowledged)", k, holder, token, err)
	}
	if err != nil {
		lr.fail(k, "write", err)
		return
	}
	lr.mu.Lock()
	lr.acks[k] = append(lr.acks[k], lockAck{holder: holder, seq: seq, token: token, granted: granted, acked: time.Now()})
	lr.mu.Unlock()
}

func (lr *lockRun) fail(k lockKind, what string, err error) {
	lr.mu.Lock()
	lr.failed[k]++
	lr.mu.Unlock()
	switch {
	case errnoOf(err) == 512:
		lr.rep.anomaly(lr.t, "%s holder: %s: errno 512 (ERESTARTSYS leaked to the caller: the mount answered a lock request EINTR with no signal pending)", k, what)
	case !maybeErr(err) && err != syscall.ENOLCK:
		lr.rep.anomaly(lr.t, "%s holder: %s: unexpected error %v", k, what, err)
	}
	time.Sleep(200 * time.Millisecond) // after a failure: don't spin
}

func (lr *lockRun) holder(k lockKind, holder int, dir string) {
	defer lr.wg.Done()
	for seq := 0; ; seq++ {
		select {
		case <-lr.stop:
			return
		default:
		}
		lr.round(k, holder, seq, dir)
		lr.mu.Lock()
		lr.rounds[k]++
		lr.mu.Unlock()
	}
}

// freezeHolder waits until holder (on mount fc.mounts[holder]) has read
// the log's size under the lock, SIGSTOPs its mount for hold, and thaws it.
func (lr *lockRun) freezeHolder(fc *faultCluster, k lockKind, holder int, hold time.Duration) {
	req := &freezeReq{holder: holder, at: make(chan struct{}), goOn: make(chan struct{})}
	lr.freeze[k].Store(req)
	select {
	case <-req.at:
	case <-time.After(30 * time.Second):
		lr.t.Fatalf("%s holder %d never got the lock in 30 s", k, holder)
	}
	m := fc.mounts[holder]
	fc.stop(m.p)
	close(req.goOn) // its write now waits on the frozen mount
	fc.note("%s holder %d's mount %s SIGSTOPped for %v while it holds the lock, between reading the size and writing", k, holder, m.name, hold)
	sleepPhase(hold)
	fc.cont(m.p)
	sleepPhase(4 * time.Second)
}

// TestFaultsLockFencing: flock and fcntl holders on two mounts, while each
// holder's mount is frozen past its 4 s session TTL in the middle of its
// critical section, and while the leader is frozen.
func TestFaultsLockFencing(t *testing.T) {
	began := time.Now()
	fc := newFaultCluster(t, 2, -1, 0)
	rep := &faultReport{}
	lr := &lockRun{t: t, rep: rep, stop: make(chan struct{})}
	base := filepath.Join(fc.mounts[0].dir, "locks")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	for k := range 2 {
		lr.tried[k] = map[[2]int]bool{}
		for _, suffix := range []string{".lock", ".log"} {
			if err := os.WriteFile(filepath.Join(base, lockKind(k).String()+suffix), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	syncDir(t, base)
	for h, m := range fc.mounts {
		for k := range 2 {
			lr.wg.Add(1)
			go lr.holder(lockKind(k), h, filepath.Join(m.dir, "locks"))
		}
	}
	sleepPhase(3 * time.Second)
	lr.freezeHolder(fc, kindFlock, 1, 9*time.Second)
	lr.freezeHolder(fc, kindFcntl, 0, 9*time.Second)
	l := fc.leader()
	fc.note("leader %s SIGSTOPped for 4 s", fc.metas[l].name)
	fc.stop(fc.metas[l].p)
	sleepPhase(4 * time.Second)
	fc.cont(fc.metas[l].p)
	sleepPhase(3 * time.Second)
	close(lr.stop)
	done := make(chan struct{})
	go func() { lr.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		rep.anomaly(t, "a lock holder's call still hangs 60 s after the faults ended")
		for i := range fc.mounts {
			fc.killMount(i)
		}
		<-done
	}
	fc.restartAll()
	fc.startMount(0)
	for k := range 2 {
		lr.checkLog(lockKind(k), filepath.Join(fc.mounts[0].dir, "locks", lockKind(k).String()+".log"))
	}
	rep.summary(t, fc, time.Since(began))
}

// checkLog checks the log of kind k after the run.
func (lr *lockRun) checkLog(k lockKind, path string) {
	t := lr.t
	b, err := os.ReadFile(path)
	if err != nil {
		lr.rep.anomaly(t, "reading %s: %v", path, err)
		return
	}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.rep.mu.Lock()
	lr.rep.histories++
	lr.rep.opCounts = append(lr.rep.opCounts, lr.rounds[k])
	lr.rep.mu.Unlock()
	t.Logf("%s: %d rounds, %d acknowledged, %d failed; the log holds %d bytes", k, lr.rounds[k], len(lr.acks[k]), lr.failed[k], len(b))
	if len(b)%recLen != 0 {
		lr.rep.anomaly(t, "%s.log: %d bytes, not whole %d-byte records", k, len(b), recLen)
	}
	slots := map[int][2]int{} // token -> {holder, seq}
	for i := 0; i+recLen <= len(b); i += recLen {
		var kind string
		var holder, token, seq int
		_, err := fmt.Sscanf(string(b[i:i+recLen]), "%s holder %d token %d seq %d", &kind, &holder, &token, &seq)
		switch {
		case err != nil || kind != k.String():
			lr.rep.anomaly(t, "%s.log: record %d is not a record: %q", k, i/recLen, b[i:i+recLen])
		case token != i/recLen:
			lr.rep.anomaly(t, "%s.log: record %d has token %d (holder %d seq %d): out of order", k, i/recLen, token, holder, seq)
		case !lr.tried[k][[2]int{holder, seq}]:
			lr.rep.anomaly(t, "%s.log: record %d (holder %d seq %d) was never written", k, i/recLen, holder, seq)
		default:
			slots[token] = [2]int{holder, seq}
		}
	}
	owner := map[int]lockAck{}
	for _, a := range lr.acks[k] {
		if o, dup := owner[a.token]; dup {
			lr.rep.anomaly(t, "%s: token %d acknowledged to %v and to %v: two holders in the critical section", k, a.token, o, a)
		}
		owner[a.token] = a
		if got, ok := slots[a.token]; !ok || got != [2]int{a.holder, a.seq} {
			lr.rep.anomaly(t, "%s: acknowledged record token %d, %v, is not in the log: the slot holds holder/seq %v (present %v)", k, a.token, a, got, ok)
		}
	}
}
