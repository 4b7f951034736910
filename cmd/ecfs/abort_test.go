package main

import (
	"strings"
	"testing"
)

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/mnt/ecfs":                  "/mnt/ecfs",
		`/mnt/my\040files`:           "/mnt/my files",
		`/a\134b`:                    `/a\b`,
		`/tab\011x\012`:              "/tab\tx\n",
		`/odd\0`:                     `/odd\0`,
		`/not\999octal`:              `/not\999octal`,
		`/trailing\`:                 `/trailing\`,
		`/two\040spaces\040here\134`: `/two spaces here\`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFuseConnectionRefusesWhatIsNotFUSE(t *testing.T) {
	if _, err := fuseConnection(t.TempDir()); err == nil || !strings.Contains(err.Error(), "nothing is mounted") {
		t.Errorf("a plain directory: %v", err)
	}
	if _, err := fuseConnection("/proc"); err == nil || !strings.Contains(err.Error(), "not FUSE") {
		t.Errorf("/proc: %v", err)
	}
}
