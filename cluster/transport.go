package cluster

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Option configures NewClient and NewServer.
type Option func(*options)

type options struct{ tls *tls.Config }

// WithTLS makes the API's connections TLS with cfg, which holds this
// host's certificate and the cluster's CA (as a server, it asks for and
// checks the client's certificate; as a client it shows its own).
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

func applyOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// dialCreds is the transport security of the API's client connections.
func (o options) dialCreds() grpc.DialOption { return DialCredentials(o.tls) }

// DialCredentials is the transport security of a connection to the
// metadata API: TLS with cfg, or none when cfg is nil (for callers that
// dial the API themselves, as fsck does).
func DialCredentials(cfg *tls.Config) grpc.DialOption {
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// APIRefusals counts the API's refused connections and calls.
type APIRefusals struct {
	TLS    atomic.Uint64 // TLS handshake failed: plaintext, no certificate, another CA
	Secret atomic.Uint64 // a call without the cluster secret
}

// countedCreds counts and logs (rate-limited) the TLS handshakes the
// server refuses.
type countedCreds struct {
	credentials.TransportCredentials
	refused *APIRefusals
	limit   *limitedLog
}

func (c countedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.refused.TLS.Add(1)
		c.limit.warn("refused an API connection: TLS handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
	}
	return nc, ai, err
}

func (c countedCreds) Clone() credentials.TransportCredentials {
	return countedCreds{c.TransportCredentials.Clone(), c.refused, c.limit}
}

// serverCreds is the API server's transport security (none without TLS).
func (o options) serverCreds(refused *APIRefusals, log *slog.Logger) []grpc.ServerOption {
	if o.tls == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(countedCreds{credentials.NewTLS(o.tls), refused, newRateLimitedLog(log, 10*time.Second)})}
}
