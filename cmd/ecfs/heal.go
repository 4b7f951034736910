package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/codec"
	"google.golang.org/grpc/status"
)

// serviceFlags are the flags an admin command reaches the metadata
// service with.
type serviceFlags struct {
	meta, secretFile *string
	tls              tlsFlags
}

func addServiceFlags(fs *flag.FlagSet) serviceFlags {
	return serviceFlags{
		meta:       fs.String("meta", "", "comma-separated metadata service addresses; required"),
		secretFile: fs.String("secret-file", "", "file holding the cluster secret; required"),
		tls:        addTLSFlags(fs),
	}
}

// service is how an admin command reaches the metadata service.
type service struct {
	addrs  []string
	secret string
	tls    *tls.Config // nil: plaintext
}

// client returns a client of the members at addrs (default: all given).
func (s service) client(addrs ...string) (*cluster.Client, error) {
	if len(addrs) == 0 {
		addrs = s.addrs
	}
	return cluster.NewClient(addrs, s.secret, cluster.WithTLS(s.tls))
}

// resolve checks the flags and reads the secret (and TLS files).
func (f serviceFlags) resolve() (svc service, err error) {
	if *f.meta == "" {
		return svc, &usageError{"--meta is required"}
	}
	if svc.secret, err = readSecret(*f.secretFile); err != nil {
		return svc, err
	}
	if svc.tls, err = f.tls.load(); err != nil {
		return svc, err
	}
	svc.addrs = strings.Split(*f.meta, ",")
	return svc, nil
}

// admin sends one admin request to the leader.
func (f serviceFlags) admin(req *metapb.AdminReq) (_ *metapb.AdminResp, svc service, err error) {
	if svc, err = f.resolve(); err != nil {
		return nil, svc, err
	}
	c, err := svc.client()
	if err != nil {
		return nil, svc, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Admin(ctx, req)
	if st, ok := status.FromError(err); ok && err != nil {
		err = errors.New(st.Message()) // the service's words, not gRPC's
	}
	return res, svc, err
}

// addWaitFlags adds --wait (until what) and --timeout.
func addWaitFlags(fs *flag.FlagSet, until string) (wait *bool, timeout *time.Duration) {
	return fs.Bool("wait", false, "return only when "+until+", printing progress"),
		fs.Duration("timeout", 0, "with --wait: give up (exit 1) after this long; 0: never")
}

// waitProgress polls the status every second until done says so, printing
// progress when it changes (and at least every 10 s), or fails at timeout.
func waitProgress(stdout io.Writer, svc service, timeout time.Duration, done func(*statusReport) (string, bool)) error {
	deadline := time.Now().Add(timeout)
	var last string
	var printed time.Time
	for {
		rep, err := collectStatus(svc, 5*time.Second)
		if err == nil {
			line, ok := done(rep)
			if ok {
				fmt.Fprintln(stdout, line)
				return nil
			}
			if line != last || time.Since(printed) >= 10*time.Second {
				fmt.Fprintln(stdout, line)
				last, printed = line, time.Now()
			}
		}
		if timeout > 0 && time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("gave up after %s: %v", timeout, err)
			}
			return fmt.Errorf("gave up after %s: %s", timeout, last)
		}
		time.Sleep(time.Second) // polling an external service at a human pace
	}
}

func runHeal(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("heal", "--meta A1,A2,A3 --secret-file F [--wait [--timeout D]]\n\n"+
		"Wakes the leader's healer: shards that are missing, rotten or on down stores are rebuilt\n"+
		"and shards on draining stores moved, the objects with the fewest healthy shards first,\n"+
		"at the leader's --heal-rate. With --wait it prints progress and returns once nothing is\n"+
		"pending (objects that cannot be healed with the stores up now are reported, not waited for).", stdout)
	svc := addServiceFlags(fs)
	wait, timeout := addWaitFlags(fs, "nothing is pending")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	_, conn, err := svc.admin(&metapb.AdminReq{Op: &metapb.AdminReq_HealNow{HealNow: &metapb.HealNowReq{}}})
	if err != nil {
		return fmt.Errorf("waking the healer: %w", err)
	}
	if !*wait {
		fmt.Fprintln(stdout, "healer woken")
		return nil
	}
	return waitProgress(stdout, conn, *timeout, func(rep *statusReport) (string, bool) {
		line := "heal: " + rep.Heal.line()
		if rep.Heal.Pending > 0 {
			return line, false
		}
		line = fmt.Sprintf("nothing pending: %d objects, %d degraded, %d unreadable, %d corrupt shards",
			rep.Objects.Total, rep.Objects.Degraded, rep.Objects.Unreadable, rep.Heal.Corrupt)
		if rep.Objects.Degraded > 0 {
			line += " (degraded objects need more stores up to be made whole)"
		}
		return line, true
	})
}

func runDrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("drain", "--meta A1,A2,A3 --secret-file F [--wait [--timeout D]] [--cancel | --remove] STORE\n\n"+
		"Drains a store (its id or address, as ecfs status shows them): it gets no new shards,\n"+
		"and the healer moves every shard off it at the leader's --heal-rate. ecfs status shows\n"+
		"it draining with the shards left. At 0, stop its daemon and forget it with --remove\n"+
		"(which also forgets a dead store once the healer has rebuilt all its shards elsewhere).\n"+
		"--cancel takes a draining store back as a normal one.", stdout)
	svc := addServiceFlags(fs)
	wait, timeout := addWaitFlags(fs, "no shard is left on the store")
	cancelDrain := fs.Bool("cancel", false, "stop draining the store")
	remove := fs.Bool("remove", false, "forget the store: it must hold no shard and have stopped reporting for 10 s")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if *cancelDrain && *remove {
		return &usageError{"--cancel and --remove exclude each other"}
	}
	res, conn, err := svc.admin(&metapb.AdminReq{Op: &metapb.AdminReq_Drain{Drain: &metapb.DrainReq{Store: fs.Arg(0), Cancel: *cancelDrain, Remove: *remove}}})
	if err != nil {
		return err
	}
	if *remove {
		fmt.Fprintf(stdout, "store %s removed\n", res.Store)
		return nil
	}
	if *cancelDrain {
		fmt.Fprintf(stdout, "store %s is no longer draining\n", res.Store)
		return nil
	}
	fmt.Fprintf(stdout, "store %s is draining\n", res.Store)
	if rep, err := collectStatus(conn, 5*time.Second); err == nil {
		if warn := drainRoom(rep, res.Store); warn != "" {
			fmt.Fprintln(stdout, warn)
		}
	}
	if !*wait {
		return nil
	}
	return waitProgress(stdout, conn, *timeout, func(rep *statusReport) (string, bool) {
		for _, s := range rep.Stores {
			if s.ID != res.Store {
				continue
			}
			if s.State != cluster.StoreDraining {
				return fmt.Sprintf("store %s is %s, no longer draining", s.ID, s.State), false
			}
			if s.Shards == 0 {
				return fmt.Sprintf("store %s is drained: no shard recorded on it; it can be stopped and removed", s.ID), true
			}
			line := fmt.Sprintf("store %s: %d shards left; heal: %s", s.ID, s.Shards, rep.Heal.line())
			if warn := drainRoom(rep, s.ID); warn != "" {
				line += "\n" + warn
			}
			return line, false
		}
		return fmt.Sprintf("store %s is no longer known", res.Store), false
	})
}

// drainRoom warns when the stores left cannot take the shards of a drained
// store: an object's k+m shards need k+m distinct stores.
func drainRoom(rep *statusReport, draining string) string {
	sc, err := codec.ParseScheme(rep.Scheme)
	if err != nil {
		return ""
	}
	up := 0
	for _, s := range rep.Stores {
		if s.ID != draining && s.State == cluster.StoreUp {
			up++
		}
	}
	if up >= sc.Shards() {
		return ""
	}
	return fmt.Sprintf("warning: %d other stores are up and a %s object needs %d distinct stores: "+
		"shards can move only once more stores are added", up, sc, sc.Shards())
}
