package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", "[FILE]\n\nMakes a new random cluster secret (64 hex digits) and writes it to FILE (mode\n0600; an existing FILE is left alone), or prints it. Printed into a file\n(ecfs keygen > FILE), it makes that file 0600 too. Pass the file to every\ndaemon and mount with --secret-file: they refuse one that group or others\ncan read.", stdout)
	if err := parseFlagsN(fs, args, 0, 1); err != nil {
		return err
	}
	s, err := newSecret()
	if err != nil {
		return err
	}
	if fs.NArg() == 1 {
		return writeSecretFile(fs.Arg(0), s)
	}
	if f, ok := stdout.(*os.File); ok {
		// Redirected into a file the shell made with the umask's mode
		// (0644 mostly): the secret must not be readable by others.
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if err := f.Chmod(0o600); err != nil {
				return fmt.Errorf("making the secret's file private: %w", err)
			}
		}
	}
	_, err = fmt.Fprintln(stdout, s)
	return err
}

// writeSecretFile writes a new secret to path, mode 0600; it does not
// replace an existing file (another cluster's secret, perhaps).
func writeSecretFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the cluster secret: %w", err)
	}
	if _, err := fmt.Fprintln(f, s); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing the cluster secret: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing the cluster secret: %w", err)
	}
	return f.Close()
}

func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// readSecret loads the cluster secret from a file written by keygen.
func readSecret(path string) (string, error) {
	if path == "" {
		return "", &usageError{"--secret-file is required (create one with: ecfs keygen > FILE)"}
	}
	if err := privateFile(path, "cluster secret"); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the cluster secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 || strings.ContainsAny(s, " \t\r\n") {
		return "", errors.New("the cluster secret in " + path + " must be one line of at least 16 characters (see ecfs keygen)")
	}
	return s, nil
}

// privateFile refuses a secret or private key file that its group or
// others may read (or write).
func privateFile(path, what string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading the %s: %w", what, err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("the %s file %s is open to group or others (mode %04o); run: chmod 600 %s", what, path, m, shellQuote(path))
	}
	return nil
}
