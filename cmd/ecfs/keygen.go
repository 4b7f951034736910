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
	fs := newFlags("keygen", "> FILE\n\nPrints a new random cluster secret (64 hex digits). Keep it in a file\nreadable only by the daemons and pass it with --secret-file.", stdout)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	s, err := newSecret()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, s)
	return err
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
