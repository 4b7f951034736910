package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCerts: a host certificate from `ecfs certs` verifies against its CA
// for each address and name given, as a server and as a client, and not
// for others; bad calls fail with a usage error and replace nothing.
func TestCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var out bytes.Buffer
	if code := run([]string{"certs", "host", dir, "h1", "10.0.0.1"}, &out, &out); code == 0 || !strings.Contains(out.String(), "ecfs certs ca") {
		t.Errorf("host before ca: exit %d: %s", code, out.String())
	}
	for _, args := range [][]string{{"certs"}, {"certs", "ca"}, {"certs", "make", dir}, {"certs", "host", dir, "h1"}, {"certs", "host", dir, "../h1", "10.0.0.1"}} {
		out.Reset()
		if code := run(args, &out, &out); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, code, out.String())
		}
	}
	for _, args := range [][]string{{"certs", "ca", dir}, {"certs", "host", dir, "h1", "10.0.0.1", "10.0.0.2:9100", "meta1.example"}} {
		out.Reset()
		if code := run(args, &out, &out); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, out.String())
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	out.Reset()
	if code := run([]string{"certs", "ca", dir}, &out, &out); code == 0 || !strings.Contains(out.String(), "exists") {
		t.Errorf("a second ca: exit %d: %s", code, out.String())
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem")); !bytes.Equal(before, after) {
		t.Error("a second ecfs certs ca replaced the CA key")
	}

	cfg, err := loadTLS(filepath.Join(dir, "h1.pem"), filepath.Join(dir, "h1-key.pem"), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"10.0.0.1", "10.0.0.2", "meta1.example", "h1"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: cfg.RootCAs, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s (usage %v): %v", name, usage, err)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "10.0.0.3", Roots: cfg.RootCAs}); err == nil {
		t.Error("the certificate verifies for an address it was not made for")
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Error("the TLS configuration does not require client certificates")
	}
	// The key must be private.
	os.Chmod(filepath.Join(dir, "h1-key.pem"), 0o644)
	if _, err := loadTLS(filepath.Join(dir, "h1.pem"), filepath.Join(dir, "h1-key.pem"), filepath.Join(dir, "ca.pem")); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a key of mode 0644: %v", err)
	}
	if _, err := loadTLS(filepath.Join(dir, "h1.pem"), "", ""); err == nil {
		t.Error("--tls-cert alone was accepted")
	}
}

// TestTLSHint: a status that reached no member says which side lacks TLS.
func TestTLSHint(t *testing.T) {
	for _, c := range []struct {
		tls  bool
		err  string
		want string
	}{
		{false, "rpc error: code = Unavailable desc = connection error: desc = \"error reading server preface: EOF\"", "if the cluster uses TLS"},
		{true, "tls: first record does not look like a TLS handshake", "does not use TLS"},
		{true, "tls: failed to verify certificate: x509: certificate signed by unknown authority", "signed by the cluster's CA"},
		{false, "connection refused", ""},
	} {
		if got := tlsHint(c.tls, errors.New(c.err)); (c.want == "" && got != "") || !strings.Contains(got, c.want) {
			t.Errorf("tlsHint(%v, %q) = %q, want %q", c.tls, c.err, got, c.want)
		}
	}
}
