package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

const certsUsage = `ca DIR | host DIR NAME ADDR...

ecfs certs ca DIR
    makes a certificate authority for one cluster: DIR/ca.pem (give it to
    every host, --tls-ca) and DIR/ca-key.pem (keep it off the hosts).
ecfs certs host DIR NAME ADDR...
    makes DIR/NAME.pem and DIR/NAME-key.pem (--tls-cert, --tls-key), signed by
    DIR's authority, for the addresses and host names given (IPs or DNS
    names; NAME is one of the names too). It serves and it dials: one per
    host, for its meta member, stores and mounts alike.

Every file is written mode 0600 and never over an existing one.`

func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs", certsUsage, stdout)
	days := fs.Int("days", 0, "validity in days (default: 3650 for a CA, 825 for a host)")
	if err := parseFlagsN(fs, args, 2, manyArgs); err != nil {
		return err
	}
	pos := fs.Args()
	switch pos[0] {
	case "ca":
		if len(pos) != 2 {
			return &usageError{"ecfs certs ca DIR: one directory"}
		}
		return makeCA(pos[1], daysOr(*days, 3650), stdout)
	case "host":
		if len(pos) < 4 {
			return &usageError{"ecfs certs host DIR NAME ADDR...: at least one address or name"}
		}
		return makeHostCert(pos[1], pos[2], pos[3:], daysOr(*days, 825), stdout)
	}
	return &usageError{fmt.Sprintf("ecfs certs: %q is neither ca nor host", pos[0])}
}

func daysOr(d, def int) time.Duration {
	if d <= 0 {
		d = def
	}
	return time.Duration(d) * 24 * time.Hour
}

func makeCA(dir string, valid time.Duration, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, tmpl, err := newCert("ecfs cluster CA", valid)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid, tmpl.IsCA, tmpl.MaxPathLenZero = true, true, true
	return signAndWrite(dir, "ca", tmpl, tmpl, key, key, stdout)
}

var certName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func makeHostCert(dir, name string, addrs []string, valid time.Duration, stdout io.Writer) error {
	if !certName.MatchString(name) || name == "ca" {
		return &usageError{fmt.Sprintf("certificate name %q: letters, digits, '.', '_' and '-', and not \"ca\"", name)}
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	key, tmpl, err := newCert(name, valid)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = []string{name}
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err == nil {
			a = host // an address with its port: the host is what is checked
		}
		if ip := net.ParseIP(a); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if a != name {
			tmpl.DNSNames = append(tmpl.DNSNames, a)
		}
	}
	return signAndWrite(dir, name, tmpl, ca, key, caKey, stdout)
}

// newCert makes a key and the start of its certificate: a random serial,
// the name, valid from an hour ago (clocks differ) for valid.
func newCert(name string, valid time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	return key, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"ecfs"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(valid),
	}, nil
}

// signAndWrite signs tmpl (for key) with parent and its key, and writes
// DIR/NAME.pem and DIR/NAME-key.pem.
func signAndWrite(dir, name string, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey, stdout io.Writer) error {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := writePEMs(keyPath, "EC PRIVATE KEY", key, certPath, der); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", certPath, keyPath)
	return nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	keyPath := filepath.Join(dir, "ca-key.pem")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.pem"), keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the CA (ecfs certs ca %s makes one): %w", dir, err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !ca.IsCA {
		return nil, nil, fmt.Errorf("%s is not an ecfs CA", dir)
	}
	return ca, key, nil
}

// writePEMs writes the key and the certificate, each mode 0600, refusing
// to replace either.
func writePEMs(keyPath, keyType string, key *ecdsa.PrivateKey, certPath string, der []byte) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	for _, p := range []string{keyPath, certPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: not replaced", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: kb})); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
