package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
}

type objectStatus struct {
	Total      uint64 `json:"total"`
	Degraded   uint64 `json:"degraded"`   // fewer than k+m shards on live stores
	Unreadable uint64 `json:"unreadable"` // fewer than k
}

// healStatus: pending counts the objects with fewer healthy shards than the
// up stores could hold (the healer's remaining work).
type healStatus struct {
	Pending uint64 `json:"pending"`
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
}

type memberStatus struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	State   string `json:"state"` // leader, follower, candidate, unreachable
	Applied uint64 `json:"applied_index,omitempty"`
	Error   string `json:"error,omitempty"`
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "--meta A1,A2,A3 --secret-file F [--json]\n\n"+
		"Shows the metadata service's leader and members, each member's state as it reports\n"+
		"it itself (unreachable when it does not answer).", stdout)
	meta := fs.String("meta", "", "comma-separated metadata service addresses; required")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret; required")
	asJSON := fs.Bool("json", false, "print one JSON object")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each member")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *meta == "" {
		return &usageError{"--meta is required"}
	}
	secret, err := readSecret(*secretFile)
	if err != nil {
		return err
	}
	rep, err := collectStatus(strings.Split(*meta, ","), secret, *timeout)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "leader: %s\nscheme: %s\nmeta members:\n", orNone(rep.Leader), orNone(rep.Scheme))
	for _, m := range rep.Meta {
		fmt.Fprintf(stdout, "  %-12s %-22s %s\n", m.ID, m.Addr, m.State)
	}
	fmt.Fprintf(stdout, "objects: %d (%d degraded, %d unreadable); heal pending %d; gc pending %d\n",
		rep.Objects.Total, rep.Objects.Degraded, rep.Objects.Unreadable, rep.Heal.Pending, rep.GC.Pending)
	fmt.Fprintf(stdout, "stores:\n")
	for _, s := range rep.Stores {
		fmt.Fprintf(stdout, "  %-36s %-22s %-9s %d MiB free of %d\n", s.ID, s.Addr, s.State, s.Free>>20, s.Total>>20)
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
func collectStatus(addrs []string, secret string, timeout time.Duration) (*statusReport, error) {
	ask := func(addr string) (*metapb.StatusResp, error) {
		c, err := cluster.NewClient([]string{addr}, secret)
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
	var authErr error
	for _, a := range addrs {
		st, err := ask(a)
		if err != nil {
			if strings.Contains(err.Error(), "Unauthenticated") {
				authErr = err
			}
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
			rep.Scheme = st.Scheme
			rep.Objects = objectStatus{Total: st.Objects, Degraded: st.ObjectsDegraded, Unreadable: st.ObjectsUnreadable}
			rep.Heal = healStatus{Pending: st.ObjectsHealPending}
			rep.GC = gcStatus{Pending: st.GcPending}
			rep.Stores = []storeStatus{}
			for _, s := range st.Stores {
				rep.Stores = append(rep.Stores, storeStatus{ID: s.Id, Addr: s.Addr, Host: s.Host, Zone: s.Zone,
					State: s.State, Free: s.FreeBytes, Total: s.TotalBytes})
			}
		}
	}
	if authErr != nil && len(seen) == 0 {
		return nil, errors.New("the metadata service refused the cluster secret")
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("no metadata service member answered at %s", strings.Join(addrs, ","))
	}
	for _, m := range members {
		ms := memberStatus{ID: m.Id, Addr: m.ApiAddr, State: "unreachable"}
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
