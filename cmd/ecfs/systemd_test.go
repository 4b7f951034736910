package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUnitTexts(t *testing.T) {
	for kind, typ := range map[string]string{"meta": "simple", "store": "simple", "mount": "notify"} {
		text, err := unitText(kind, "/usr/local/bin/ecfs")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"ExecStart=/usr/local/bin/ecfs " + kind + " $ECFS_ARGS",
			"EnvironmentFile=/etc/ecfs/" + kind + ".env",
			"Type=" + typ,
			"Restart=on-failure",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("unit %s lacks %q:\n%s", kind, want, text)
			}
		}
	}
	if _, err := unitText("bogus", "/x"); err == nil {
		t.Fatal("an unknown unit kind was accepted")
	}
}

func TestSystemdInstall(t *testing.T) {
	root := t.TempDir()
	var out bytes.Buffer
	if code := run([]string{"systemd", "--install", "--root", root, "mount"}, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/ecfs-mount.service"))
	if err != nil || !strings.Contains(string(unit), "Type=notify") {
		t.Fatalf("unit: %v\n%s", err, unit)
	}
	env := filepath.Join(root, "etc/ecfs/mount.env")
	if err := os.WriteFile(env, []byte("ECFS_ARGS=--mine\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"systemd", "--install", "--root", root, "mount"}, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if b, _ := os.ReadFile(env); string(b) != "ECFS_ARGS=--mine\n" {
		t.Fatalf("a second install overwrote the env file: %q", b)
	}
	if code := run([]string{"systemd", "nope"}, &out, &out); code != 2 {
		t.Fatalf("an unknown unit: exit %d, want 2", code)
	}
}

func TestSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
}

func TestMountHelperArgs(t *testing.T) {
	var out, errb bytes.Buffer
	code := runMountHelper([]string{"ecfs:10.0.0.1:9100,10.0.0.2:9100", "/mnt/x", "-o", "secret-file=/etc/s,_netdev,noatime,x-systemd.automount,attr_timeout=2s", "-f"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if s := out.String(); !strings.Contains(s, "mount --meta 10.0.0.1:9100,10.0.0.2:9100 -o secret-file=/etc/s,attr_timeout=2s /mnt/x") {
		t.Fatalf("fake mount would run: %s", s)
	}
	for _, bad := range [][]string{
		{"a:1", "/mnt/x"}, // no secret
		{"a:1", "/mnt/x", "-o", "secret-file=/s,ro"},    // read-only
		{"a:1", "-o", "secret-file=/s"},                 // no mount point
		{"a:1", "/mnt/x", "-o", "secret-file=/s", "-q"}, // unknown flag
	} {
		out.Reset()
		errb.Reset()
		if code := runMountHelper(bad, &out, &errb); code != mountUsage || errb.Len() == 0 {
			t.Errorf("%v: exit %d (%q), want %d and a message", bad, code, errb.String(), mountUsage)
		}
	}
}

// TestUnitsVerify: systemd's own check (systemd-analyze verify) of each
// unit, installed for the binary under test, finds nothing to say. It
// needs systemd-analyze (make deps installs systemd when root).
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is missing: install systemd (make deps does, as root)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, kind := range []string{"meta", "store", "mount"} {
		text, err := unitText(kind, exe)
		if err != nil {
			t.Fatal(err)
		}
		unit := filepath.Join(dir, "ecfs-"+kind+".service")
		if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("systemd-analyze verify ecfs-%s.service: %v\n%s", kind, err, out)
		}
	}
	// The check can fail: a unit systemd cannot parse is reported.
	bad := filepath.Join(dir, "ecfs-bad.service")
	text, _ := unitText("meta", exe)
	os.WriteFile(bad, []byte(strings.Replace(text, "Type=simple", "Type=bogus", 1)), 0o644)
	if out, _ := exec.Command(analyze, "verify", bad).CombinedOutput(); len(bytes.TrimSpace(out)) == 0 {
		t.Error("systemd-analyze verify said nothing of a unit with Type=bogus: the check checks nothing here")
	}
}
