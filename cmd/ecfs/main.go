// Command ecfs is every ecfs process: the store and meta daemons, the FUSE
// mount, the embedded dev cluster and the admin tools. `ecfs help` lists them.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"meta", "run a metadata service member (Raft)", runMeta},
		{"store", "run a store daemon: keeps, serves and checks shards", runStore},
		{"mount", "mount the filesystem (FUSE) and serve it until unmounted", runMount},
		{"umount", "unmount an ecfs mount", runUmount},
		{"status", "show the cluster: meta members, stores, objects and healing", runStatus},
		{"fsck", "check files, object records and shards; --repair fixes what it can", runFsck},
		{"heal", "wake the healer; with --wait, return when nothing is pending", runHeal},
		{"drain", "move every shard off a store so it can be removed", runDrain},
		{"keygen", "make a new cluster secret", runKeygen},
		{"certs", "make a cluster's TLS authority and host certificates", runCerts},
		{"dev", "run a whole cluster (1 meta, 6 stores) in one process and mount it", runDev},
		{"systemd", "print or install the systemd unit of meta, store or mount", runSystemd},
		{"version", "print the version", runVersion},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError is a bad command line: reported in one line, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	if filepath.Base(os.Args[0]) == "mount.ecfs" {
		os.Exit(runMountHelper(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			args = []string{args[1], "--help"}
		} else {
			printUsage(stdout)
			return 0
		}
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		var ue *usageError
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "ecfs %s: %v (see ecfs %s --help)\n", c.name, err, c.name)
			return 2
		default:
			fmt.Fprintf(stderr, "ecfs %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "ecfs: unknown command %q (see ecfs help)\n", args[0])
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "ecfs: an erasure-coded POSIX filesystem\n\nUsage: ecfs COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'ecfs COMMAND --help' for the flags of one.\n")
}

// newFlags returns a flag set that reports errors instead of exiting and
// prints its usage to out on --help.
func newFlags(name, synopsis string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fs.SetOutput(out)
		fmt.Fprintf(out, "Usage: ecfs %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args. --help prints the usage; a parse error becomes a
// one-line usageError; stray positional arguments are refused.
func parseFlags(fs *flag.FlagSet, args []string, positional int) error {
	return parseFlagsN(fs, args, positional, positional)
}

// manyArgs, as parseFlagsN's hi: no upper bound.
const manyArgs = 1 << 20

// parseFlagsN is parseFlags for a command taking from lo to hi positional
// arguments.
func parseFlagsN(fs *flag.FlagSet, args []string, lo, hi int) error {
	usage := fs.Usage
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := parseInterspersed(fs, args)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return err
	}
	if err != nil {
		return &usageError{err.Error()}
	}
	if n := fs.NArg(); n < lo || n > hi {
		switch {
		case hi == 0:
			return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
		case lo == hi:
			return &usageError{fmt.Sprintf("want %d argument(s), got %d", lo, n)}
		case hi == manyArgs:
			return &usageError{fmt.Sprintf("want at least %d arguments, got %d", lo, n)}
		}
		return &usageError{fmt.Sprintf("want %d to %d arguments, got %d", lo, hi, n)}
	}
	return nil
}

// parseInterspersed parses flags before and after the positional arguments
// (`ecfs drain STORE --wait` as well as `ecfs drain --wait STORE`); after
// "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		before := len(args)
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// Parse stops at the first non-flag, or consumes a "--" before it.
		if len(rest) < before && args[before-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, &usageError{fmt.Sprintf("bad --log-level %q (debug, info, warn, error)", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), nil
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", stdout)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ecfs", version)
	return nil
}
