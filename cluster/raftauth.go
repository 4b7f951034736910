package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft transport's connections prove knowledge of the cluster secret
// before raft reads a byte of them: a host without it cannot vote, append
// or install a snapshot (a forged RequestVote with a high term would
// otherwise depose the leader). With TLS the connection is also encrypted
// and both ends show a certificate of the cluster's CA.
//
// The handshake, after TLS if any:
//
//	server -> client: raftAuthMagic, nonce S (32 bytes)
//	client -> server: nonce C (32 bytes), HMAC-SHA256(secret, "client" S C)
//	server -> client: HMAC-SHA256(secret, "server" C S)
//
// Each side checks the other's MAC, so neither a client nor a server
// without the secret gets further, and a recorded handshake cannot be
// replayed (the other side's nonce is new each time).

const (
	raftAuthMagic   = "ecfs-raft-auth-1"
	raftAuthTimeout = 5 * time.Second // for the handshake; then raft's own timeouts
	// raftAuthPending bounds connections in the handshake at once: more are
	// closed at once (a flood holds no more goroutines than this).
	raftAuthPending = 64
)

// errRaftAuth is a handshake the other end failed.
var errRaftAuth = errors.New("raft connection: the peer does not know the cluster secret")

// RaftRefusals counts the Raft connections refused at the handshake, by
// reason; exported on /metrics (ecfs meta).
type RaftRefusals struct {
	Secret    atomic.Uint64 // wrong or no proof of the secret (plaintext raft, another cluster)
	TLS       atomic.Uint64 // TLS handshake failed (no certificate, another CA, plaintext)
	Overload  atomic.Uint64 // too many handshakes at once
	Handshake atomic.Uint64 // timed out or broke off
}

// authStream is a raft.StreamLayer over TCP (and TLS if set) whose
// connections have passed the handshake above.
type authStream struct {
	ln      net.Listener
	adv     net.Addr
	key     []byte
	tls     *tls.Config // nil: plain TCP
	log     *slog.Logger
	refused *RaftRefusals
	limit   *limitedLog

	conns   chan net.Conn
	pending chan struct{}
	done    chan struct{}
	once    sync.Once
}

// newAuthStream listens on bind; adv is the address the others dial.
func newAuthStream(bind string, adv net.Addr, secret string, tlsCfg *tls.Config, log *slog.Logger, refused *RaftRefusals) (*authStream, error) {
	if secret == "" {
		return nil, errors.New("cluster: the raft transport needs the cluster secret")
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if adv == nil {
		adv = ln.Addr()
	}
	s := &authStream{ln: ln, adv: adv, key: []byte(secret), tls: tlsCfg, log: log, refused: refused,
		limit: newRateLimitedLog(log, 10*time.Second),
		conns: make(chan net.Conn), pending: make(chan struct{}, raftAuthPending), done: make(chan struct{})}
	go s.acceptLoop()
	return s, nil
}

// acceptLoop hands each accepted connection to a handshake of its own,
// until Close. A handshake ends within raftAuthTimeout.
func (s *authStream) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("accepting raft connections", "err", err)
			select {
			case <-s.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.pending <- struct{}{}:
		default:
			s.refused.Overload.Add(1)
			s.limit.warn("refused a raft connection: too many handshakes at once", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		go func() {
			defer func() { <-s.pending }()
			ac, err := s.serverHandshake(c)
			if err != nil {
				c.Close()
				return
			}
			select {
			case s.conns <- ac:
			case <-s.done:
				ac.Close()
			}
		}()
	}
}

// serverHandshake authenticates an accepted connection; it counts and
// logs (rate-limited) a refusal.
func (s *authStream) serverHandshake(c net.Conn) (net.Conn, error) {
	_ = c.SetDeadline(time.Now().Add(raftAuthTimeout))
	remote := c.RemoteAddr().String()
	if s.tls != nil {
		tc := tls.Server(c, s.tls)
		if err := tc.Handshake(); err != nil {
			s.refused.TLS.Add(1)
			s.limit.warn("refused a raft connection: TLS handshake failed", "remote", remote, "err", err)
			return nil, err
		}
		c = tc
	}
	var nonceS [32]byte
	_, _ = rand.Read(nonceS[:])
	if _, err := c.Write(append([]byte(raftAuthMagic), nonceS[:]...)); err != nil {
		s.refused.Handshake.Add(1)
		return nil, err
	}
	var in [32 + sha256.Size]byte
	if _, err := io.ReadFull(c, in[:]); err != nil {
		s.refused.Handshake.Add(1)
		s.limit.warn("refused a raft connection: no proof of the cluster secret", "remote", remote, "err", err)
		return nil, err
	}
	nonceC := in[:32]
	if !hmac.Equal(in[32:], raftMAC(s.key, "client", nonceS[:], nonceC)) {
		s.refused.Secret.Add(1)
		s.limit.warn("refused a raft connection: wrong proof of the cluster secret", "remote", remote)
		return nil, errRaftAuth
	}
	if _, err := c.Write(raftMAC(s.key, "server", nonceC, nonceS[:])); err != nil {
		s.refused.Handshake.Add(1)
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// Dial connects to a member and proves the secret (raft.StreamLayer).
func (s *authStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > raftAuthTimeout {
		timeout = raftAuthTimeout
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	ac, err := s.clientHandshake(c, string(address), time.Now().Add(timeout))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raft connection to %s: %w", address, err)
	}
	return ac, nil
}

func (s *authStream) clientHandshake(c net.Conn, address string, deadline time.Time) (net.Conn, error) {
	_ = c.SetDeadline(deadline)
	if s.tls != nil {
		cfg := s.tls.Clone()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	var hello [len(raftAuthMagic) + 32]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		return nil, err
	}
	if string(hello[:len(raftAuthMagic)]) != raftAuthMagic {
		return nil, errors.New("the peer does not speak the ecfs raft handshake")
	}
	nonceS := hello[len(raftAuthMagic):]
	var nonceC [32]byte
	_, _ = rand.Read(nonceC[:])
	if _, err := c.Write(append(nonceC[:], raftMAC(s.key, "client", nonceS, nonceC[:])...)); err != nil {
		return nil, err
	}
	var mac [sha256.Size]byte
	if _, err := io.ReadFull(c, mac[:]); err != nil {
		return nil, fmt.Errorf("refused by the peer (wrong cluster secret?): %w", err)
	}
	if !hmac.Equal(mac[:], raftMAC(s.key, "server", nonceC[:], nonceS)) {
		return nil, errRaftAuth
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func raftMAC(key []byte, role string, a, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(raftAuthMagic + " " + role))
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

// Accept returns the next authenticated connection (net.Listener).
func (s *authStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening; connections in the handshake are dropped.
func (s *authStream) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.ln.Close()
	})
	return err
}

// Addr is the address the other members dial (net.Listener).
func (s *authStream) Addr() net.Addr { return s.adv }
