package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
)

// statusReport is the JSON of `ecfs status --json`.
type statusReport struct {
	Leader  string         `json:"leader"`
	Scheme  string         `json:"scheme,omitempty"`
	Meta    []memberStatus `json:"meta"`
	Stores  []storeStatus  `json:"stores"`
	Objects objectStatus   `json:"objects"`
	Heal    healStatus     `json:"heal"`
	GC      gcStatus       `json:"gc"`
	// Packs: mounts pack small files into shared objects (every voter's
	// build announced it; a group with packed objects must not go back to
	// a build without it).
	Packs bool `json:"packs"`
}

type objectStatus struct {
	Total      uint64 `json:"total"`
	Degraded   uint64 `json:"degraded"`   // fewer than k+m shards on live stores
	Unreadable uint64 `json:"unreadable"` // fewer than k
}

// healStatus: pending counts the objects with fewer healthy shards than the
// up stores could hold (the healer's remaining work).
// healStatus is the healer's queue (from the state) and, when the leader
// answered, its progress.
type healStatus struct {
	Pending       uint64            `json:"pending"`       // objects the healer can still make whole or move
	PendingBytes  uint64            `json:"pending_bytes"` // their length
	Corrupt       uint64            `json:"corrupt"`       // shards known rotten or missing, not yet rebuilt
	PendingByRisk []uint64          `json:"pending_by_risk,omitempty"`
	Rate          float64           `json:"rate"`          // bytes/s read to rebuild, last 10 s
	ETA           *int64            `json:"eta,omitempty"` // seconds; absent when idle or unknown
	LastError     string            `json:"last_error,omitempty"`
	RebuiltShards uint64            `json:"rebuilt_shards"`
	RebuiltBytes  uint64            `json:"rebuilt_bytes"`
	ReadBytes     uint64            `json:"read_bytes"`
	MovedShards   uint64            `json:"moved_shards"`
	Failures      map[string]uint64 `json:"failures,omitempty"`
}

func newHealStatus(st *metapb.StatusResp) healStatus {
	h := healStatus{Pending: st.ObjectsHealPending}
	hs := st.Heal
	if hs == nil {
		return h
	}
	h.PendingBytes, h.Corrupt, h.PendingByRisk = hs.PendingBytes, hs.Corrupt, hs.PendingByRisk
	h.Rate, h.LastError, h.Failures = hs.Rate, hs.LastError, hs.Failures
	h.RebuiltShards, h.RebuiltBytes, h.ReadBytes, h.MovedShards = hs.RebuiltShards, hs.RebuiltBytes, hs.ReadBytes, hs.MovedShards
	if hs.EtaS > 0 && hs.Pending > 0 {
		eta := hs.EtaS
		h.ETA = &eta
	}
	return h
}

type gcStatus struct {
	Pending uint64 `json:"pending"`
}

type storeStatus struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Host  string `json:"host,omitempty"`
	Zone  string `json:"zone,omitempty"`
	State string `json:"state"` // up, suspect, down, draining
	Free  int64  `json:"free_bytes"`
	Total int64  `json:"total_bytes"`
	// Shards recorded on the store: what a drain still has to move.
	Shards uint64 `json:"shards"`
}

type memberStatus struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	State   string `json:"state"` // leader, follower, candidate, unreachable
	Applied uint64 `json:"applied_index,omitempty"`
	Error   string `json:"error,omitempty"`
	// Features its build announced (none: a build before them, or one
	// that has not announced itself yet).
	Features []string `json:"features"`
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "--meta A1,A2,A3 --secret-file F [--json]\n\n"+
		"Shows the metadata service's leader and members, each member's state as it reports\n"+
		"it itself (unreachable when it does not answer); the stores (state, free space, shards\n"+
		"recorded on each); the objects (total, degraded, unreadable); and the healer: objects\n"+
		"and bytes pending, shards known corrupt, rate, ETA, last error. --json adds the\n"+
		"healer's counters (rebuilt_shards, rebuilt_bytes, read_bytes, moved_shards, failures\n"+
		"by reason, pending_by_risk).", stdout)
	svc := addServiceFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each member")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	conn, err := svc.resolve()
	if err != nil {
		return err
	}
	rep, err := collectStatus(conn, *timeout)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "leader: %s\nscheme: %s\nmeta members:\n", orNone(rep.Leader), orNone(rep.Scheme))
	var without []string
	for _, m := range rep.Meta {
		features := strings.Join(m.Features, ",")
		if !slices.Contains(m.Features, "packs") {
			without = append(without, m.ID)
		}
		// The state stays last: scripts read it there.
		fmt.Fprintf(stdout, "  %-12s %-22s features %-8s %s\n", m.ID, m.Addr, orNone(features), m.State)
	}
	switch {
	case rep.Packs:
		fmt.Fprintf(stdout, "packing: on (no member may go back to a build without it)\n")
	case len(without) > 0:
		fmt.Fprintf(stdout, "packing: off until every member has it (not: %s)\n", strings.Join(without, ", "))
	default:
		fmt.Fprintf(stdout, "packing: off\n")
	}
	fmt.Fprintf(stdout, "objects: %d (%d degraded, %d unreadable); gc pending %d\n",
		rep.Objects.Total, rep.Objects.Degraded, rep.Objects.Unreadable, rep.GC.Pending)
	fmt.Fprintf(stdout, "heal: %s\n", rep.Heal.line())
	if rep.Heal.LastError != "" {
		fmt.Fprintf(stdout, "heal last error: %s\n", rep.Heal.LastError)
	}
	fmt.Fprintf(stdout, "stores:\n")
	for _, s := range rep.Stores {
		fmt.Fprintf(stdout, "  %-36s %-22s %-9s %d MiB free of %d, %d shards\n", s.ID, s.Addr, s.State, s.Free>>20, s.Total>>20, s.Shards)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// collectStatus asks every given address, then every member they name, for
// its own view.
func collectStatus(svc service, timeout time.Duration) (*statusReport, error) {
	addrs := svc.addrs
	ask := func(addr string) (*metapb.StatusResp, error) {
		c, err := svc.client(addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return c.StatusOf(ctx, 0)
	}
	rep := &statusReport{}
	seen := map[string]*metapb.StatusResp{}
	var members []*metapb.Member
	var authErr, lastErr error
	for _, a := range addrs {
		st, err := ask(a)
		if err != nil {
			if strings.Contains(err.Error(), "Unauthenticated") {
				authErr = err
			}
			lastErr = err
			continue
		}
		seen[a] = st
		if len(st.Members) > len(members) {
			members = st.Members
		}
		if rep.Leader == "" {
			rep.Leader = st.LeaderApi
		}
		if st.State == "leader" || rep.Stores == nil {
			rep.Scheme, rep.Packs = st.Scheme, st.Packs
			rep.Objects = objectStatus{Total: st.Objects, Degraded: st.ObjectsDegraded, Unreadable: st.ObjectsUnreadable}
			rep.Heal = newHealStatus(st)
			rep.GC = gcStatus{Pending: st.GcPending}
			rep.Stores = []storeStatus{}
			for _, s := range st.Stores {
				rep.Stores = append(rep.Stores, storeStatus{ID: s.Id, Addr: s.Addr, Host: s.Host, Zone: s.Zone,
					State: s.State, Free: s.FreeBytes, Total: s.TotalBytes, Shards: s.Shards})
			}
		}
	}
	if authErr != nil && len(seen) == 0 {
		return nil, errors.New("the metadata service refused the cluster secret")
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("no metadata service member answered at %s%s", strings.Join(addrs, ","), tlsHint(svc.tls != nil, lastErr))
	}
	for _, m := range members {
		ms := memberStatus{ID: m.Id, Addr: m.ApiAddr, State: "unreachable", Features: cluster.FeatureNames(m.Features)}
		st, ok := seen[m.ApiAddr]
		if !ok && m.ApiAddr != "" {
			var err error
			if st, err = ask(m.ApiAddr); err != nil {
				ms.Error = err.Error()
			}
		}
		if st != nil {
			ms.State, ms.Applied = st.State, st.AppliedIndex
		}
		rep.Meta = append(rep.Meta, ms)
	}
	return rep, nil
}

// line is the heal status in one line: pending work, corrupt shards, rate
// and ETA.
func (h healStatus) line() string {
	s := fmt.Sprintf("%d objects pending (%d MiB), %d corrupt shards", h.Pending, h.PendingBytes>>20, h.Corrupt)
	if h.Rate > 0 {
		s += fmt.Sprintf(", %.1f MiB/s", h.Rate/(1<<20))
	}
	if h.ETA != nil {
		s += fmt.Sprintf(", about %s left", (time.Duration(*h.ETA) * time.Second).String())
	}
	if h.RebuiltShards > 0 {
		s += fmt.Sprintf("; %d shards rebuilt so far (%d moved)", h.RebuiltShards, h.MovedShards)
	}
	return s
}

// tlsHint guesses from a failed call whether TLS is on one side only.
func tlsHint(withTLS bool, err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	switch {
	case !withTLS && (strings.Contains(msg, "server preface") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")):
		return " (if the cluster uses TLS, give --tls-cert, --tls-key and --tls-ca)"
	case withTLS && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return " (the service does not use TLS: leave out the --tls-* flags)"
	case withTLS && (strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:")):
		return " (TLS failed: is the certificate signed by the cluster's CA, for this address?)"
	}
	return ""
}
