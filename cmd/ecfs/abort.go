package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A FUSE mount whose daemon is stopped or stuck answers nothing: a stat
// of its mount point waits for ever. The kernel keeps such a connection
// until its daemon closes /dev/fuse, which a daemon killed while one of its
// threads waits in the kernel (a cache invalidation waiting for a
// directory lock that a request to it holds) never does. Aborting the
// connection through fusectl fails every request of it, after which the
// mount point can be detached.

// fusectl is where the kernel lists FUSE connections (fusectl).
const fusectl = "/sys/fs/fuse/connections"

// recoverStatWait bounds the stat of a mount point at start.
const recoverStatWait = 5 * time.Second

// errNoAnswer: the mount point did not answer a stat in time.
var errNoAnswer = errors.New("does not answer")

// statWithin stats path, giving up after wait (the stat goes on in the
// background; it ends when the connection is aborted or answers).
func statWithin(path string, wait time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		_, err := os.Stat(path)
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(wait):
		return errNoAnswer
	}
}

// fuseConnection returns the fusectl name of the FUSE connection mounted
// on mp (the topmost mount there), from /proc/self/mountinfo.
func fuseConnection(mp string) (string, error) {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	conn, fstype := "", ""
	for _, l := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		f := strings.Fields(l)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(f) || unescapeMountinfo(f[4]) != abs {
			continue
		}
		major, minor, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		conn, fstype = strconv.FormatUint(ma<<20|mi, 10), f[sep+1] // the kernel's dev_t
	}
	switch {
	case conn == "":
		return "", fmt.Errorf("nothing is mounted on %s", abs)
	case fstype != "fuse" && !strings.HasPrefix(fstype, "fuse."):
		return "", fmt.Errorf("%s is a %s mount, not FUSE", abs, fstype)
	}
	return conn, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// abortMount aborts the FUSE connection mounted on mp (its daemon, if it
// lives, loses what it had not flushed) and detaches the mount point.
// fusectl is mounted for it if it is not (and unmounted after).
func abortMount(mp string) error {
	conn, err := fuseConnection(mp)
	if err != nil {
		return err
	}
	if ents, _ := os.ReadDir(fusectl); len(ents) == 0 { // fusectl is not mounted
		if err := syscall.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("mounting fusectl on %s to abort the connection of %s: %w", fusectl, mp, err)
		}
		defer func() { _ = syscall.Unmount(fusectl, 0) }()
	}
	if err := os.WriteFile(filepath.Join(fusectl, conn, "abort"), []byte("1"), 0o200); err != nil {
		return fmt.Errorf("aborting the FUSE connection of %s: %w", mp, err)
	}
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching %s after aborting its connection: %w", mp, err)
	}
	return nil
}
