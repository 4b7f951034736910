package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
)

// tlsFlags are --tls-cert, --tls-key and --tls-ca: all three or none.
type tlsFlags struct{ cert, key, ca *string }

func addTLSFlags(fs *flag.FlagSet) tlsFlags {
	return tlsFlags{
		cert: fs.String("tls-cert", "", "this host's certificate (ecfs certs host): with --tls-key and --tls-ca, every connection to and from the cluster is TLS with certificates both ways"),
		key:  fs.String("tls-key", "", "its private key (mode 0600)"),
		ca:   fs.String("tls-ca", "", "the cluster's CA certificate (ecfs certs ca): peers must show a certificate it signed"),
	}
}

// load returns the TLS configuration the flags give, or nil without them.
func (f tlsFlags) load() (*tls.Config, error) {
	return loadTLS(*f.cert, *f.key, *f.ca)
}

// loadTLS builds a configuration that serves and dials with cert, and
// accepts only peers (servers and clients) whose certificate ca signed.
func loadTLS(cert, key, ca string) (*tls.Config, error) {
	switch n := btoi(cert != "") + btoi(key != "") + btoi(ca != ""); n {
	case 0:
		return nil, nil
	case 3:
	default:
		return nil, &usageError{"--tls-cert, --tls-key and --tls-ca go together (all three, or none)"}
	}
	if err := privateFile(key, "TLS key"); err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("reading the TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("the TLS CA file " + ca + " holds no PEM certificate")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
