//go:build cluster

package fs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecfs/ecfs/cluster"
	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/store"
	"github.com/hashicorp/raft"
)

// The in-process real cluster (go test -tags cluster -run Cluster): one
// metadata member (a single-voter Raft group with its log in bolt under
// t.TempDir(), on raft's in-memory transport, serving the real gRPC API on
// 127.0.0.1) and six stores (4+2) serving the real shard API on 127.0.0.1.
// The tests named TestCluster... run on it, so that the real Meta
// (*cluster.Client) and Objects (*store.Objects) still meet the core.

const testSecret = "0123456789abcdef0123456789abcdef"

// newClusterEnv starts the cluster; everything stops when the test ends.
// Each mount gets its own metadata client and object layer, closed with
// the test.
func newClusterEnv(t *testing.T) *env {
	t.Helper()
	ctx := testCtx(t)
	log := quietLogger()
	e := &env{t: t}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metaAddr := ln.Addr().String()
	_, trans := raft.NewInmemTransport(raft.ServerAddress("meta-" + t.Name()))
	e.fsm = cluster.NewFSM()
	node, err := cluster.NewNode(cluster.NodeConfig{
		ID: "m1", DataDir: t.TempDir(), Transport: trans, Fast: true, Bootstrap: true, Logger: log,
	}, e.fsm)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := cluster.NewServer(node, e.fsm, metaAddr, testSecret, log)
	g := srv.GRPCServer()
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(ln) }()
	wctx, stopWorkers := context.WithCancel(context.Background())
	announced := make(chan struct{})
	go func() { defer close(announced); srv.AnnounceSelf(wctx) }()
	t.Cleanup(func() {
		stopWorkers()
		<-announced
		g.Stop()
		<-served
		srv.Close()
		if err := node.Close(); err != nil {
			t.Errorf("closing the raft node: %v", err)
		}
	})
	waitUntil(t, "a raft leader", 10*time.Second, node.IsLeader)
	if err := srv.Init(ctx, testScheme, 4, 2); err != nil {
		t.Fatalf("init: %v", err)
	}

	client := func() *cluster.Client {
		t.Helper()
		c, err := cluster.NewClient([]string{metaAddr}, testSecret)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	e.newClient = func() Meta { return client() }
	e.newObjects = func() Objects {
		t.Helper()
		sc := store.NewClient(store.ClientConfig{Secret: testSecret})
		t.Cleanup(sc.Close)
		o, err := store.NewObjects(store.ObjectsConfig{Client: sc, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	e.damage = func(id uint64, index int, missing bool) {
		t.Helper()
		path := shardFile(t, id, index)
		if missing {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			return
		}
		corruptShard(t, path)
	}

	mc := client()
	for i := range testStores {
		ss, err := store.NewServer(store.Config{DataDir: t.TempDir(), Secret: testSecret, ScrubInterval: -1, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		sln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := sln.Addr().String()
		hs := ss.HTTPServer(addr)
		done := make(chan struct{})
		go func() { defer close(done); _ = hs.Serve(sln) }()
		t.Cleanup(func() {
			if err := hs.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("closing store %d: %v", i, err)
			}
			<-done
		})
		c := ss.Capacity()
		if err := mc.Heartbeat(ctx, &metapb.StoreInfo{Id: ss.ID(), Addr: addr, Host: fmt.Sprint("h", i),
			TotalBytes: c.Total, FreeBytes: c.Free}); err != nil {
			t.Fatalf("registering store %d: %v", i, err)
		}
	}
	return e
}

// shardFile returns the path of the file of shard index of object id. The
// stores of the cluster each keep their disk in a t.TempDir() of the test
// that started it, and those share one parent: the shard's file is the one
// file below it named after the shard.
func shardFile(t *testing.T, id uint64, index int) string {
	t.Helper()
	name := store.ShardKey{Object: store.ObjectID(id), Index: index}.String()
	var found []string
	err := filepath.Walk(filepath.Dir(t.TempDir()), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() == name {
			found = append(found, p)
		}
		return nil // files of the raft log come and go
	})
	if err != nil || len(found) != 1 {
		t.Fatalf("looking for the file of shard %s: %v, found %q", name, err, found)
	}
	return found[0]
}

// corruptShard flips bytes in the data of a shard file (its first chunk).
func corruptShard(t *testing.T, path string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h, err := store.ReadShardHeader(fh, 1<<30)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var b [16]byte
	off := h.DataOffset() + 1000
	if _, err := fh.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xa5
	}
	if _, err := fh.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}
