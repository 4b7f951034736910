package main

import (
	"io"
	"slices"
	"testing"
)

// TestParseFlagsInterspersed: flags may follow the positional arguments;
// after "--" everything is positional.
func TestParseFlagsInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args []string
		wait bool
		pos  []string
	}{
		{[]string{"--wait", "s1"}, true, []string{"s1"}},
		{[]string{"s1", "--wait"}, true, []string{"s1"}},
		{[]string{"s1"}, false, []string{"s1"}},
		{[]string{"--", "--wait"}, false, []string{"--wait"}},
		{[]string{"--wait", "--", "-x"}, true, []string{"-x"}},
	} {
		fs := newFlags("t", "", io.Discard)
		wait := fs.Bool("wait", false, "")
		if err := parseFlags(fs, tc.args, 1); err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if *wait != tc.wait || !slices.Equal(fs.Args(), tc.pos) {
			t.Errorf("%q: wait %v, args %q", tc.args, *wait, fs.Args())
		}
	}
	fs := newFlags("t", "", io.Discard)
	fs.Bool("wait", false, "")
	if err := parseFlags(fs, []string{"a", "--wait", "b"}, 1); err == nil {
		t.Error("two arguments where one is wanted: no error")
	}
}
