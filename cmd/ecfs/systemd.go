package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The systemd units ship inside the binary: `ecfs systemd meta|store|mount`
// prints one, `--install` writes it (and an environment file holding the
// flags, unless one exists) and reloads systemd. Each host's flags live in
// /etc/ecfs/<unit>.env, so the units stay the same everywhere; the flags
// all of a host's units take (secret, TLS) may go in /etc/ecfs/common.env
// (ECFS_COMMON_ARGS).

const unitTemplate = `# ecfs-%[1]s.service: written by "ecfs systemd %[1]s". The flags are in %[3]s.
[Unit]
Description=%[2]s
Documentation=https://github.com/ecfs/ecfs
After=network-online.target
Wants=network-online.target%[4]s

[Service]
Type=%[5]s
EnvironmentFile=-/etc/ecfs/common.env
EnvironmentFile=%[3]s
ExecStart=%[6]s %[1]s $ECFS_ARGS $ECFS_COMMON_ARGS
Restart=on-failure
RestartSec=2s
LimitNOFILE=1048576
TimeoutStopSec=%[7]s
KillSignal=SIGTERM
%[8]s
[Install]
WantedBy=%[9]s
`

type unitKind struct {
	desc, after, typ, stopTimeout, extra, wantedBy, env string
}

var unitKinds = map[string]unitKind{
	"meta": {
		desc: "ecfs metadata service member (Raft)", typ: "simple", stopTimeout: "30s", wantedBy: "multi-user.target",
		env: `# Flags of "ecfs meta" on this host (see ecfs meta --help), e.g.:
# ECFS_ARGS=--id m1 --data-dir /var/lib/ecfs/meta --raft-addr 10.0.0.1:9101 --api-addr 10.0.0.1:9100 --secret-file /etc/ecfs/secret --join 10.0.0.2:9100
ECFS_ARGS=
`,
	},
	"store": {
		desc: "ecfs store daemon (shards)", typ: "simple", stopTimeout: "40s", wantedBy: "multi-user.target",
		env: `# Flags of "ecfs store" on this host (see ecfs store --help), e.g.:
# ECFS_ARGS=--data-dir /var/lib/ecfs/store --disk /srv/disk1 --addr 10.0.0.4:9200 --meta 10.0.0.1:9100,10.0.0.2:9100,10.0.0.3:9100 --secret-file /etc/ecfs/secret
ECFS_ARGS=
`,
	},
	"mount": {
		// Type=notify: systemd counts the mount as started once it serves;
		// stop (SIGTERM) flushes and unmounts.
		desc: "ecfs FUSE mount", after: "\nAfter=ecfs-meta.service ecfs-store.service", typ: "notify", stopTimeout: "120s",
		extra: "ExecStopPost=-/bin/umount -l $ECFS_MOUNTPOINT\n", wantedBy: "remote-fs.target",
		env: `# Flags of "ecfs mount" on this host (see ecfs mount --help); the mount point last, e.g.:
# ECFS_MOUNTPOINT=/mnt/ecfs
# ECFS_ARGS=--meta 10.0.0.1:9100,10.0.0.2:9100,10.0.0.3:9100 --secret-file /etc/ecfs/secret /mnt/ecfs
ECFS_MOUNTPOINT=
ECFS_ARGS=
`,
	},
}

// unitText is the unit of kind for the binary at exe.
func unitText(kind, exe string) (string, error) {
	k, ok := unitKinds[kind]
	if !ok {
		return "", &usageError{fmt.Sprintf("unknown unit %q: want meta, store or mount", kind)}
	}
	env := "/etc/ecfs/" + kind + ".env"
	return fmt.Sprintf(unitTemplate, kind, k.desc, env, k.after, k.typ, exe, k.stopTimeout, k.extra, k.wantedBy), nil
}

func runSystemd(args []string, stdout, stderr io.Writer) error {
	fl := newFlags("systemd", "meta|store|mount [--install]\n\n"+
		"Prints the systemd unit of an ecfs daemon. With --install it writes it to\n"+
		"/etc/systemd/system/ecfs-KIND.service, writes /etc/ecfs/KIND.env (the flags, in\n"+
		"ECFS_ARGS) unless it exists, and runs systemctl daemon-reload; then edit the env\n"+
		"file and run systemctl enable --now ecfs-KIND.", stdout)
	install := fl.Bool("install", false, "write the unit and its env file and reload systemd")
	root := fl.String("root", "/", "install under this root directory instead of / (for packaging and tests)")
	if err := parseFlags(fl, args, 1); err != nil {
		return err
	}
	kind := fl.Arg(0)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return err
	}
	text, err := unitText(kind, exe)
	if err != nil {
		return err
	}
	if !*install {
		_, err := io.WriteString(stdout, text)
		return err
	}
	unit := filepath.Join(*root, "etc/systemd/system", "ecfs-"+kind+".service")
	env := filepath.Join(*root, "etc/ecfs", kind+".env")
	if err := os.MkdirAll(filepath.Dir(unit), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", unit)
	if err := os.MkdirAll(filepath.Dir(env), 0o755); err != nil {
		return err
	}
	switch _, err := os.Stat(env); {
	case errors.Is(err, os.ErrNotExist):
		if err := os.WriteFile(env, []byte(unitKinds[kind].env), 0o640); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: set the flags there\n", env)
	case err != nil:
		return err
	default:
		fmt.Fprintf(stdout, "kept %s\n", env)
	}
	if *root != "/" {
		return nil
	}
	if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %v: %s", err, strings.TrimSpace(string(out)))
	}
	fmt.Fprintf(stdout, "then: systemctl enable --now ecfs-%s\n", kind)
	return nil
}

// sdNotify tells systemd (Type=notify) about the service's state; without
// NOTIFY_SOCKET it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying systemd: %w", err)
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
