// Package cluster is the metadata service of ecfs: the Raft state machine
// (namespace, objects, sessions, locks, membership), the gRPC server and
// its client, and the leader's background work. It imports neither store
// nor codec.
package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Sentinel errors.
var (
	ErrNotLeader = errors.New("not the leader")
	ErrStopped   = errors.New("node stopped")
)

// NodeConfig configures one member of the Raft group.
type NodeConfig struct {
	// ID names the member; stable across restarts. Required.
	ID string
	// DataDir holds the Raft log, stable store and snapshots. Required.
	DataDir string
	// RaftAddr is where the Raft transport listens (host:port). Required
	// unless Transport is set.
	RaftAddr string
	// Transport replaces the TCP transport (tests use raft's in-memory one).
	Transport raft.Transport
	// Secret is the cluster secret: every Raft connection proves it before
	// a Raft message is read (raftauth.go). Required unless Transport is
	// set.
	Secret string
	// TLS, if set, wraps the Raft connections; it must hold the member's
	// certificate, and the CA in both RootCAs and ClientCAs with
	// ClientAuth = tls.RequireAndVerifyClientCert.
	TLS *tls.Config
	// Bootstrap starts a new group with this node as its only voter; it is
	// ignored when DataDir already holds state.
	Bootstrap bool
	// SnapshotInterval and SnapshotThreshold: how often raft checks, and how
	// many log entries since the last snapshot make one. Defaults 30s, 8192.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	// TrailingLogs is how many entries stay in the log after a snapshot, for
	// followers slightly behind; default 10240.
	TrailingLogs uint64
	// Fast uses short timeouts (tests on one machine).
	Fast bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate checks the configuration and fills in defaults.
func (c *NodeConfig) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("cluster: a node id is required")
	case c.DataDir == "" && c.Transport == nil:
		return errors.New("cluster: a data directory is required")
	case c.RaftAddr == "" && c.Transport == nil:
		return errors.New("cluster: a raft address is required")
	case c.Secret == "" && c.Transport == nil:
		return errors.New("cluster: the raft transport needs the cluster secret")
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 30 * time.Second
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Node is one running member: raft plus the state machine.
type Node struct {
	cfg     NodeConfig
	raft    *raft.Raft
	fsm     *FSM
	trans   raft.Transport
	log     *slog.Logger
	close   []func() error
	refused RaftRefusals // connections the Raft port refused
	// existing is whether the data dir held Raft state at start: such a
	// member is already in its group and neither bootstraps nor joins.
	existing bool
}

// NewNode opens (or creates) the member's state in cfg.DataDir and starts
// raft. With DataDir empty (tests) the log lives in memory.
func NewNode(cfg NodeConfig, fsm *FSM) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, fsm: fsm, log: cfg.Logger.With("component", "raft", "node", cfg.ID)}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: newSlogWriter(n.log)})
	if cfg.Fast {
		rc.HeartbeatTimeout = 200 * time.Millisecond
		rc.ElectionTimeout = 200 * time.Millisecond
		rc.LeaderLeaseTimeout = 100 * time.Millisecond
		rc.CommitTimeout = 5 * time.Millisecond
	}
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		err    error
	)
	if cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, &memSnapshots{}
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
		if err != nil {
			return nil, fmt.Errorf("cluster: opening the raft log: %w", err)
		}
		n.close = append(n.close, bolt.Close)
		logs, stable = bolt, bolt
		snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
		if err != nil {
			n.shutdown()
			return nil, fmt.Errorf("cluster: opening snapshots: %w", err)
		}
	}
	n.trans = cfg.Transport
	if n.trans == nil {
		addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			n.shutdown()
			return nil, fmt.Errorf("cluster: raft address %q: %w", cfg.RaftAddr, err)
		}
		if addr.IP == nil || addr.IP.IsUnspecified() {
			n.shutdown()
			return nil, fmt.Errorf("cluster: raft address %q: the others dial it, so it needs a host", cfg.RaftAddr)
		}
		stream, err := newAuthStream(cfg.RaftAddr, addr, cfg.Secret, cfg.TLS, n.log, &n.refused)
		if err != nil {
			n.shutdown()
			return nil, fmt.Errorf("cluster: raft transport: %w", err)
		}
		tcp := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: stream, MaxPool: 8, Timeout: 10 * time.Second, Logger: rc.Logger})
		n.trans = tcp
		n.close = append(n.close, tcp.Close)
	}
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		n.shutdown()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.existing = existing
	n.raft, err = raft.NewRaft(rc, fsm, logs, stable, snaps, n.trans)
	if err != nil {
		n.shutdown()
		return nil, fmt.Errorf("cluster: starting raft: %w", err)
	}
	if cfg.Bootstrap && !existing {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: n.trans.LocalAddr(),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.Close()
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}
	return n, nil
}

func (n *Node) shutdown() {
	for i := len(n.close) - 1; i >= 0; i-- {
		_ = n.close[i]()
	}
	n.close = nil
}

// Close stops raft and releases the stores.
func (n *Node) Close() error {
	var err error
	if n.raft != nil {
		err = n.raft.Shutdown().Error()
	}
	n.shutdown()
	return err
}

// RaftRefusals counts the connections the Raft port refused.
func (n *Node) RaftRefusals() *RaftRefusals { return &n.refused }

// HadState reports whether the member started from existing Raft state.
func (n *Node) HadState() bool { return n.existing }

// Raft exposes the raft instance (status, leadership, membership).
func (n *Node) Raft() *raft.Raft { return n.raft }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// AddVoter adds (or re-adds with a new address) a voting member; it is a
// no-op when the member is already there with that address.
func (n *Node) AddVoter(id, addr string) error {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr) {
			return nil
		}
	}
	err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error()
	if errors.Is(err, raft.ErrNotLeader) {
		return ErrNotLeader
	}
	return err
}

// RemoveServer removes a member.
func (n *Node) RemoveServer(id string) error {
	err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
	if errors.Is(err, raft.ErrNotLeader) {
		return ErrNotLeader
	}
	return err
}

// slogWriter adapts raft's hclog output to slog: the level and message
// are parsed out of hclog's line, a line that repeats (a dead member's
// "failed to heartbeat", twice a second) is logged at most once per
// raftLogEvery per message (its text before the keys) with the count
// left out, and what raft logs as a warning but is routine (the first
// election of a new group, a joining member catching up) as info.
type slogWriter struct{ limit *limitedLog }

const raftLogEvery = 30 * time.Second

func newSlogWriter(log *slog.Logger) *slogWriter {
	return &slogWriter{newRateLimitedLog(log, raftLogEvery)}
}

// hclogLine is hclog's "TIME [LEVEL] NAME: MESSAGE: key=value ...".
var hclogLine = regexp.MustCompile(`^\S+ \[(\w+)\]\s+(?:raft: )?(.*)$`)

// hclogKey cuts a message before its first key=value.
var hclogKey = regexp.MustCompile(`^(.*?)(?:: [A-Za-z_-]+=.*)?$`)

// routine are raft warnings that are not: they are logged as info.
var routine = []string{
	"heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=", // a new group's first election
	"appendEntries rejected, sending older logs",                                      // a new or restarted member catching up
	"failed to get previous log",                                                      // the same, on that member
}

func (w *slogWriter) Write(p []byte) (int, error) {
	line := string(trimNL(p))
	level, msg := slog.LevelWarn, line
	if m := hclogLine.FindStringSubmatch(line); m != nil {
		msg = m[2]
		switch m[1] {
		case "ERROR":
			level = slog.LevelError
		case "INFO":
			level = slog.LevelInfo
		case "DEBUG", "TRACE":
			level = slog.LevelDebug
		}
	}
	for _, r := range routine {
		if strings.HasPrefix(msg, r) {
			level = min(level, slog.LevelInfo)
		}
	}
	w.limit.logKey(level, hclogKey.FindStringSubmatch(msg)[1], msg)
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

var _ io.Writer = (*slogWriter)(nil)
