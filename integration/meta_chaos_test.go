package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/cluster/namespace"
)

// chaosClient creates, renames and unlinks files in its own directory and
// keeps a model of what the directory must hold.
type chaosClient struct {
	c      *cluster.Client
	dir    uint64
	model  map[string]bool // names that must exist
	failed []string        // operations reported failed
	ops    int
}

func (cc *chaosClient) apply(cmd *metapb.Command) (syscall.Errno, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cc.c.Apply(ctx, cmd)
	if err != nil {
		return 0, err
	}
	return syscall.Errno(r.Errno), nil
}

func (cc *chaosClient) run(stop <-chan struct{}, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	var names []string
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		cc.ops++
		switch {
		case len(names) == 0 || r.IntN(3) == 0:
			name := fmt.Sprint("f", i)
			e, err := cc.apply(&metapb.Command{Op: &metapb.Command_Create{Create: &metapb.CreateOp{
				Parent: cc.dir, Name: name, Type: uint32(namespace.TypeFile), Mode: 0o644, Excl: true}}})
			if err != nil || e != 0 {
				cc.failed = append(cc.failed, fmt.Sprintf("create %s: %v %v", name, e, err))
				continue
			}
			cc.model[name] = true
			names = append(names, name)
		case r.IntN(2) == 0:
			j := r.IntN(len(names))
			from, to := names[j], names[j]+"r"
			e, err := cc.apply(&metapb.Command{Op: &metapb.Command_Rename{Rename: &metapb.RenameOp{
				OldParent: cc.dir, OldName: from, NewParent: cc.dir, NewName: to}}})
			if err != nil || e != 0 {
				cc.failed = append(cc.failed, fmt.Sprintf("rename %s: %v %v", from, e, err))
				continue
			}
			delete(cc.model, from)
			cc.model[to] = true
			names[j] = to
		default:
			j := r.IntN(len(names))
			e, err := cc.apply(&metapb.Command{Op: &metapb.Command_Unlink{Unlink: &metapb.UnlinkOp{Parent: cc.dir, Name: names[j]}}})
			if err != nil || e != 0 {
				cc.failed = append(cc.failed, fmt.Sprintf("unlink %s: %v %v", names[j], e, err))
				continue
			}
			delete(cc.model, names[j])
			names = slices.Delete(names, j, j+1)
		}
	}
}

func listDir(t *testing.T, c *cluster.Client, dir uint64) []string {
	t.Helper()
	var names []string
	cookie := uint64(0)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := c.Read(ctx, &metapb.ReadReq{Op: &metapb.ReadReq_Readdir{Readdir: &metapb.ReadDirReq{Ino: dir, Cookie: cookie, Max: 100}}})
		cancel()
		if err != nil || r.Errno != 0 {
			t.Fatalf("readdir: %v errno %d", err, r.GetErrno())
		}
		if len(r.Entries) == 0 {
			return names
		}
		for _, e := range r.Entries {
			names = append(names, e.Name)
			cookie = e.Cookie
		}
	}
}

// TestMetaChaos: 8 clients create, rename and unlink for 20 s while the
// leader is SIGKILLed twice. Every acknowledged operation must be there
// exactly once, and a new leader must serve within 5 s each time.
func TestMetaChaos(t *testing.T) {
	g := newMetaGroup(t, 3)
	var clients []*chaosClient
	for i := range 8 {
		c := g.client()
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := c.Apply(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: namespace.RootIno, Name: fmt.Sprint("c", i), Mode: 0o755}}})
		cancel()
		if err != nil || r.Errno != 0 {
			t.Fatalf("mkdir: %v %v", r, err)
		}
		clients = append(clients, &chaosClient{c: c, dir: r.Attr.Ino, model: map[string]bool{}})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, cc := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); cc.run(stop, uint64(i)) }()
	}
	start := time.Now()
	probe := g.client()
	defer probe.Close()
	for kill := range 2 {
		for time.Since(start) < time.Duration(5+8*kill)*time.Second {
			time.Sleep(100 * time.Millisecond) // the schedule of the chaos, not synchronisation
		}
		old := g.leader()
		g.nodes[old].p.kill()
		killed := time.Now()
		// A new leader serves when a write through the survivors succeeds.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := probe.Apply(ctx, &metapb.Command{Op: &metapb.Command_Mkdir{Mkdir: &metapb.MkdirOp{Parent: namespace.RootIno, Name: fmt.Sprint("probe", kill), Mode: 0o755}}})
		cancel()
		took := time.Since(killed)
		if err != nil || r.Errno != 0 {
			t.Fatalf("no write after killing leader %s: %v %v", g.nodes[old].id, r, err)
		}
		t.Logf("kill %d: leader %s SIGKILLed; a new leader served a write after %v", kill+1, g.nodes[old].id, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("a new leader took %v to serve, want at most 5s", took)
		}
		g.launch(old)
		g.wait(old)
	}
	for time.Since(start) < 20*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	total := 0
	for i, cc := range clients {
		total += cc.ops
		if len(cc.failed) > 0 {
			t.Errorf("client %d: %d operations failed, first: %s", i, len(cc.failed), cc.failed[0])
		}
		got := listDir(t, probe, cc.dir)
		var want []string
		for n := range cc.model {
			want = append(want, n)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("client %d: directory holds %d names, the acknowledged operations leave %d (first difference near %v)", i, len(got), len(want), firstDiff(got, want))
		}
	}
	t.Logf("%d operations by 8 clients in 20 s", total)
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] + " / " + b[i]
		}
	}
	return fmt.Sprintf("lengths %d / %d", len(a), len(b))
}
