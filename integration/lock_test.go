package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

const lockTTL = 3 * time.Second

// lockHolder runs in a child process (the test binary re-executed): it
// opens a session, takes an exclusive flock on ECFS_LOCK_INO, says
// "locked", and renews its lease every TTL/4 until it is killed.
func lockHolder() {
	c, err := cluster.NewClient(strings.Split(os.Getenv("ECFS_LOCK_META"), ","), os.Getenv("ECFS_LOCK_SECRET"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ino, _ := strconv.ParseUint(os.Getenv("ECFS_LOCK_INO"), 10, 64)
	ctx := context.Background()
	s, _, err := c.OpenSession(ctx, "lock-holder", lockTTL)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Lock{Lock: &metapb.LockOp{Session: s, Ino: ino, Owner: 1, Kind: 2, Type: 2}}})
	if err != nil || r.Errno != 0 {
		fmt.Println("error", err, r.GetErrno())
		os.Exit(1)
	}
	fmt.Println("locked")
	for {
		time.Sleep(lockTTL / 4) // the lease renewal interval
		if _, err := c.Renew(ctx, s); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
	}
}

// TestLockOfKilledHolderReleasedAfterTTL: a flock held by a process that is
// SIGKILLed is released when its session's lease runs out, not before.
func TestLockOfKilledHolderReleasedAfterTTL(t *testing.T) {
	g := newMetaGroup(t, 3)
	c := g.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
		Parent: namespace.RootIno, Name: "locked", Type: uint32(namespace.TypeFile), Mode: 0o644}}})
	if err != nil || f.Errno != 0 {
		t.Fatal(err, f)
	}
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), "ECFS_LOCK_HOLDER=1", "ECFS_LOCK_META="+strings.Join(g.addrs(), ","),
		"ECFS_LOCK_SECRET="+g.secret, fmt.Sprint("ECFS_LOCK_INO=", f.Attr.Ino))
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("lock holder: %q %v", line, err)
	}
	me, _, err := c.OpenSession(ctx, "test", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	try := func() syscall.Errno {
		r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Lock{Lock: &metapb.LockOp{Session: me, Ino: f.Attr.Ino, Owner: 9, Kind: 2, Type: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		return syscall.Errno(r.Errno)
	}
	if e := try(); e != syscall.EAGAIN {
		t.Fatalf("flock while the holder lives: %v, want EAGAIN", e)
	}
	holder.Process.Signal(syscall.SIGKILL)
	holder.Wait()
	killed := time.Now()
	var got time.Duration
	waitFor(t, "the dead holder's lock to be released", lockTTL+10*time.Second, func() error {
		if e := try(); e != 0 {
			return e
		}
		got = time.Since(killed)
		return nil
	})
	t.Logf("lock granted %v after the holder's SIGKILL (lease %v, renewed every %v)", got.Round(time.Millisecond), lockTTL, lockTTL/4)
	// The last renewal was at most TTL/4 before the kill, so the lease ran
	// until at least TTL - TTL/4 after it.
	if got < lockTTL-lockTTL/4-100*time.Millisecond {
		t.Fatalf("the lock was released %v after the kill, before the lease could have run out", got)
	}
	if got > lockTTL+3*time.Second {
		t.Fatalf("the lock was released only %v after the kill", got)
	}
}
