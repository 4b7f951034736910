package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no args", nil, 0, "Usage: ecfs COMMAND", ""},
		{"help", []string{"help"}, 0, "Commands:", ""},
		{"help store", []string{"help", "store"}, 0, "Usage: ecfs store", ""},
		{"unknown", []string{"nope"}, 2, "", `unknown command "nope"`},
		{"version", []string{"version"}, 0, "ecfs ", ""},
		{"keygen", []string{"keygen"}, 0, "", ""},
		{"keygen extra", []string{"keygen", "a", "b"}, 2, "", "want 0 to 1 arguments"},
		{"store bad flag", []string{"store", "--nope"}, 2, "", "flag provided but not defined: -nope"},
		{"store bad duration", []string{"store", "--shutdown-timeout", "soon"}, 2, "", "invalid value"},
		{"store short secret", []string{"store", "--data-dir", dir, "--secret-file", secret}, 1, "", "at least 16 characters"},
		{"store bad log level", []string{"store", "--data-dir", dir, "--log-level", "loud"}, 2, "", "bad --log-level"},
		{"dev needs a mountpoint", []string{"dev"}, 2, "", "want 1 argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("stdout %q (want %q), stderr %q (want %q)", out.String(), tc.stdout, errb.String(), tc.stderr)
			}
		})
	}
}

func TestKeygenMakesDistinctSecrets(t *testing.T) {
	var a, b bytes.Buffer
	run([]string{"keygen"}, &a, &b)
	run([]string{"keygen"}, &b, &b)
	sa, sb := strings.TrimSpace(a.String()), strings.TrimSpace(b.String())
	if len(sa) != 64 || sa == sb {
		t.Fatalf("secrets %q and %q", sa, sb)
	}
	path := filepath.Join(t.TempDir(), "s")
	os.WriteFile(path, a.Bytes(), 0o600)
	got, err := readSecret(path)
	if err != nil || got != sa {
		t.Fatalf("readSecret = %q, %v", got, err)
	}
}
