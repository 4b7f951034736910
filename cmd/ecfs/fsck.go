package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fsckReport is the JSON of `ecfs fsck --json`.
type fsckReport struct {
	Objects      uint64            `json:"objects"`
	Files        uint64            `json:"files"`
	ShardsListed uint64            `json:"shards_listed"`
	YoungOrphans uint64            `json:"young_orphans"`
	Counts       map[string]uint64 `json:"counts"`
	Problems     []fsckProblem     `json:"problems"`
	Repaired     uint64            `json:"repaired"`
	Skipped      []string          `json:"skipped"`
}

type fsckProblem struct {
	Kind     string `json:"kind"`
	Object   string `json:"object"` // 16 hex digits
	Index    int32  `json:"index"`  // shard index; -1: the whole object
	Store    string `json:"store,omitempty"`
	Ino      uint64 `json:"ino,omitempty"`
	Detail   string `json:"detail"`
	Repaired bool   `json:"repaired"`
}

// fsckConnectWait bounds how long fsck keeps trying to reach a leader.
const fsckConnectWait = 30 * time.Second

func runFsck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fsck", "--meta A1,A2,A3 --secret-file F [--repair] [--verify] [--json] [--timeout 30m]\n\n"+
		"Checks the filesystem on the metadata leader: the files' slices against the object\n"+
		"records, and the records against the shards the stores that are up or draining hold.\n"+
		"Problems (kinds):\n"+
		"  missing       a record places a shard on a store that does not have it\n"+
		"  length        a shard of the wrong size for its object\n"+
		"  rotten        a shard its store found corrupt (its scrub or a read; with --verify, every\n"+
		"                shard is read and checked now)\n"+
		"  orphan        a shard no record places on its store, older than the meta's --orphan-grace\n"+
		"  dangling      a file's slice names an object with no record: that data is lost\n"+
		"  unreferenced  an object record no file references and GC does not know\n"+
		"Shards the healer already knows (marked bad, unplaced, or on a store that is down or\n"+
		"suspect) are not problems: ecfs status shows them. With --repair, missing, length and\n"+
		"rotten shards are reported bad (the healer rewrites them), orphans are deleted and\n"+
		"unreferenced records queued for GC; dangling slices are only reported.\n\n"+
		"Prints a count per kind, the problems (at most 1000: a share of each kind), and the\n"+
		"stores not checked. --json prints one object with the keys objects, files,\n"+
		"shards_listed, young_orphans (unrecorded shards within the orphan grace: writes in\n"+
		"flight), counts (by kind), problems (each kind, object as 16 hex digits, index (-1:\n"+
		"the whole object), store, ino, detail, repaired), repaired and skipped (\"STORE (ADDR):\n"+
		"why\").\n\n"+
		"Exit status: 0 no problems, 1 problems found (repaired or not), 2 bad flags or no\n"+
		"answer from the metadata service.", stdout)
	svc := addServiceFlags(fs)
	repair := fs.Bool("repair", false, "queue what can be fixed for the healer and the GC, delete orphan shards")
	verify := fs.Bool("verify", false, "also have every store read and check each shard recorded on it (reads all the data once; finds rot the stores' scrub has not reached)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long the check may take")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *timeout <= 0 {
		return &usageError{"--timeout must be positive"}
	}
	conn, err := svc.resolve()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := callFsck(ctx, conn, &metapb.FsckReq{Repair: *repair, Verify: *verify})
	if err != nil {
		return &usageError{err.Error()}
	}
	rep := newFsckReport(resp)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printFsck(stdout, rep)
	}
	var total uint64
	for _, n := range rep.Counts {
		total += n
	}
	if total > 0 {
		return fmt.Errorf("%d problem(s) found, %d repaired", total, rep.Repaired)
	}
	return nil
}

// callFsck asks the metadata service to check the filesystem. It calls
// the members itself rather than through cluster.Client, whose attempts
// last a few seconds: a check may take minutes. A member that has no
// leader, or does not answer, is left for the next for up to
// fsckConnectWait.
func callFsck(ctx context.Context, svc service, req *metapb.FsckReq) (*metapb.FsckResp, error) {
	addrs := svc.addrs
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, a := range addrs {
		c, err := grpc.NewClient(a, cluster.DialCredentials(svc.tls), grpc.WithPerRPCCredentials(secretCreds(svc.secret)))
		if err != nil {
			return nil, fmt.Errorf("metadata service address %q: %v", a, err)
		}
		conns = append(conns, c)
	}
	give := time.Now().Add(fsckConnectWait)
	backoff := 100 * time.Millisecond
	for i := 0; ; i++ {
		r, err := metapb.NewMetaClient(conns[i%len(conns)]).Admin(ctx,
			&metapb.AdminReq{Op: &metapb.AdminReq_Fsck{Fsck: req}})
		if err == nil {
			if r.Fsck == nil {
				return nil, errors.New("the metadata service answered without a report")
			}
			return r.Fsck, nil
		}
		switch {
		case status.Code(err) == codes.Unauthenticated:
			return nil, fmt.Errorf("the metadata service refused the cluster secret: %v", status.Convert(err).Message())
		case ctx.Err() != nil:
			return nil, fmt.Errorf("no answer within --timeout from the metadata service at %s: %v", strings.Join(addrs, ","), status.Convert(err).Message())
		case status.Code(err) != codes.Unavailable:
			return nil, fmt.Errorf("metadata service: %s", status.Convert(err).Message())
		case time.Now().After(give):
			return nil, fmt.Errorf("no metadata service leader answered at %s: %v", strings.Join(addrs, ","), status.Convert(err).Message())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// secretCreds sends the cluster secret with every call.
type secretCreds string

func (s secretCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(s)}, nil
}

func (secretCreds) RequireTransportSecurity() bool { return false }

func newFsckReport(r *metapb.FsckResp) *fsckReport {
	rep := &fsckReport{Objects: r.Objects, Files: r.Files, ShardsListed: r.ShardsListed, YoungOrphans: r.YoungOrphans,
		Counts: map[string]uint64{}, Problems: []fsckProblem{}, Repaired: r.Repaired, Skipped: []string{}}
	for _, k := range cluster.FsckKinds {
		rep.Counts[k] = 0
	}
	for k, n := range r.Counts {
		rep.Counts[k] = n
	}
	for _, p := range r.Problems {
		rep.Problems = append(rep.Problems, fsckProblem{Kind: p.Kind, Object: fmt.Sprintf("%016x", p.Object), Index: p.Index,
			Store: p.Store, Ino: p.Ino, Detail: p.Detail, Repaired: p.Repaired})
	}
	rep.Skipped = append(rep.Skipped, r.Skipped...)
	return rep
}

// printFsck prints a report for people.
func printFsck(w io.Writer, r *fsckReport) {
	fmt.Fprintf(w, "checked %d objects, %d files, %d shards on the stores; %d young orphan shards (within the orphan grace)\n",
		r.Objects, r.Files, r.ShardsListed, r.YoungOrphans)
	var total uint64
	kinds := slices.Clone(cluster.FsckKinds)
	for _, k := range slices.Sorted(maps.Keys(r.Counts)) {
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k) // a kind a newer service knows
		}
	}
	for _, k := range kinds {
		fmt.Fprintf(w, "  %-12s %d\n", k, r.Counts[k])
		total += r.Counts[k]
	}
	if len(r.Problems) > 0 {
		if uint64(len(r.Problems)) < total {
			fmt.Fprintf(w, "problems (%d of %d):\n", len(r.Problems), total)
		} else {
			fmt.Fprintf(w, "problems:\n")
		}
	}
	for _, p := range r.Problems {
		shard, store, ino, rep := "-", "-", "-", ""
		if p.Index >= 0 {
			shard = fmt.Sprint(p.Index)
		}
		if p.Store != "" {
			store = p.Store
		}
		if p.Ino != 0 {
			ino = fmt.Sprint(p.Ino)
		}
		if p.Repaired {
			rep = " repaired"
		}
		fmt.Fprintf(w, "  %-12s %s shard=%s store=%s ino=%s%s: %s\n", p.Kind, p.Object, shard, store, ino, rep, p.Detail)
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "stores not checked:\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	if total == 0 {
		fmt.Fprintf(w, "no problems found\n")
	} else {
		fmt.Fprintf(w, "%d problem(s) found, %d repaired\n", total, r.Repaired)
	}
}
