package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// mount.ecfs is this binary under another name (a symlink in /sbin), so
// that mount(8) and /etc/fstab can mount ecfs:
//
//	mount -t ecfs 10.0.0.1:9100,10.0.0.2:9100 /mnt/ecfs -o secret-file=/etc/ecfs/secret
//	10.0.0.1:9100,10.0.0.2:9100  /mnt/ecfs  ecfs  secret-file=/etc/ecfs/secret,_netdev  0 0
//
// mount(8) runs "mount.ecfs SPEC DIR [-sfnv] [-o OPTS]" and expects it to
// return once the file system is mounted; the mount itself runs on as a
// detached `ecfs mount` process, which logs to log_file
// (/var/log/ecfs-mount.log by default) and exits when DIR is unmounted.

// Exit statuses mount(8) knows.
const (
	mountUsage   = 1
	mountFailure = 32
)

// Options mount(8) hands every helper, which mean nothing to ecfs (or are
// what ecfs does anyway).
var genericMountOpts = map[string]bool{
	"defaults": true, "rw": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "users": true, "nouser": true, "owner": true, "group": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "noexec": true,
	"async": true, "atime": true, "noatime": true, "relatime": true, "nodiratime": true, "diratime": true,
}

func runMountHelper(args []string, stdout, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "mount.ecfs: "+format+"\n", a...)
		return code
	}
	var pos []string
	var opts []string
	var fake, verbose, sloppy bool
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" && i+1 < len(args):
			i++
			opts = append(opts, strings.Split(args[i], ",")...)
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-t" && i+1 < len(args):
			i++ // ecfs, or ecfs.SUBTYPE
		case a == "-N" && i+1 < len(args):
			return fail(mountUsage, "mounting in another namespace (-N) is not supported")
		case a == "-h" || a == "--help":
			fmt.Fprint(stdout, "Usage: mount.ecfs META_ADDRS MOUNTPOINT -o secret-file=FILE[,log_file=FILE][,OPTS] [-fnsv]\n\n"+
				"The mount(8) / fstab form of ecfs mount: starts a detached ecfs mount and returns once\n"+
				"MOUNTPOINT is mounted. OPTS are ecfs mount's -o options (see ecfs mount --help);\n"+
				"mount(8)'s generic ones (defaults, _netdev, noauto, nofail, ...) are accepted and ignored.\n")
			return 0
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for _, c := range a[1:] {
				switch c {
				case 'f':
					fake = true
				case 'v':
					verbose = true
				case 's':
					sloppy = true
				case 'n':
				default:
					return fail(mountUsage, "unknown flag -%c", c)
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return fail(mountUsage, "want META_ADDRS MOUNTPOINT, got %d arguments (see mount.ecfs --help)", len(pos))
	}
	meta, dir := strings.TrimPrefix(pos[0], "ecfs:"), pos[1]
	logFile := "/var/log/ecfs-mount.log"
	var pass []string
	secret := false
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case o == "":
		case k == "ro":
			return fail(mountUsage, "read-only mounts are not supported")
		case k == "log_file" || k == "log-file":
			logFile = v
		case genericMountOpts[k] || strings.HasPrefix(k, "x-") || k == "comment":
		default:
			if k == "secret-file" || k == "secret_file" {
				secret = true
			}
			pass = append(pass, o)
		}
	}
	if !secret {
		return fail(mountUsage, "-o secret-file=FILE is required")
	}
	if sloppy {
		pass = append(pass, "sloppy")
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(mountFailure, "%v", err)
	}
	cmdArgs := []string{"mount", "--meta", meta, "-o", strings.Join(pass, ","), dir}
	if verbose || fake {
		fmt.Fprintf(stdout, "mount.ecfs: running %s %s (log: %s)\n", exe, strings.Join(cmdArgs, " "), logFile)
	}
	if fake {
		return 0
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return fail(mountFailure, "log file: %v", err)
	}
	lf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fail(mountFailure, "log file: %v", err)
	}
	defer lf.Close()
	start, _ := lf.Seek(0, io.SeekEnd)
	cmd := exec.Command(exe, cmdArgs...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives mount(8) and its session
	if err := cmd.Start(); err != nil {
		return fail(mountFailure, "starting ecfs mount: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	abs, _ := filepath.Abs(dir)
	deadline := time.After(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fail(mountFailure, "ecfs mount exited (%v): %s", err, logTail(logFile, start))
		case <-deadline:
			return fail(mountFailure, "%s not mounted after 90 s; ecfs mount (pid %d) goes on trying, see %s", dir, cmd.Process.Pid, logFile)
		case <-tick.C:
		}
		if mountedFUSE(abs) {
			if verbose {
				fmt.Fprintf(stdout, "mount.ecfs: %s mounted by pid %d\n", dir, cmd.Process.Pid)
			}
			return 0
		}
	}
}

// mountedFUSE reports whether dir is an ecfs (FUSE) mount point now.
func mountedFUSE(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// mount id, parent, dev, root, mount point, options, ... "-", type, source
		if len(fields) > 7 && fields[4] == dir {
			for i, x := range fields {
				if x == "-" && i+1 < len(fields) && strings.HasPrefix(fields[i+1], "fuse") {
					return true
				}
			}
		}
	}
	return false
}

// logTail is what the log got since offset start: why the mount failed.
func logTail(path string, start int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < start {
		return "(no log)"
	}
	b = bytes.TrimSpace(b[start:])
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}
