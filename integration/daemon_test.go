package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// runEcfs runs ecfs to completion and returns its exit code and output.
func runEcfs(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(ecfsBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func TestStoreCommandLine(t *testing.T) {
	dir := t.TempDir()
	secret, _ := writeSecret(t, dir)
	busy, err := net.Listen("tcp", "127.0.0.30:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"store", "--bogus"}, 2, "flag provided but not defined"},
		{"no data dir", []string{"store", "--secret-file", secret}, 2, "--data-dir is required"},
		{"no secret", []string{"store", "--data-dir", dir + "/s"}, 2, "--secret-file is required"},
		{"missing secret file", []string{"store", "--data-dir", dir + "/s", "--secret-file", dir + "/nope"}, 1, "no such file"},
		{"empty secret", []string{"store", "--data-dir", dir + "/s", "--secret-file", empty}, 1, "at least 16 characters"},
		{"bad addr", []string{"store", "--data-dir", dir + "/s", "--secret-file", secret, "--addr", "nonsense"}, 2, "--addr"},
		{"port in use", []string{"store", "--data-dir", dir + "/s", "--secret-file", secret, "--addr", busy.Addr().String(), "--http-addr", ""}, 1, "address already in use"},
		{"stray argument", []string{"store", "extra"}, 2, "unexpected argument"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"dev with a file for a mount point", []string{"dev", empty}, 1, "not a directory"},
		{"dev with a mount point that cannot be made", []string{"dev", empty + "/mnt"}, 1, "mount point"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runEcfs(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.msg) {
				t.Errorf("stderr %q does not say %q", stderr, tc.msg)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
				t.Errorf("stderr has %d lines, want one: %q", n+1, stderr)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		for _, cmd := range []string{"store", "keygen", "dev", "version"} {
			code, stdout, _ := runEcfs(t, cmd, "--help")
			if code != 0 || !strings.Contains(stdout, "Usage: ecfs "+cmd) {
				t.Errorf("ecfs %s --help: code %d, output %q", cmd, code, stdout)
			}
		}
	})
}

func TestStoreAuthHealthAndMetrics(t *testing.T) {
	c := newStores(t, 1)
	s := c.stores[0]
	bad := store.NewClient(store.ClientConfig{Secret: strings.Repeat("0", 64)})
	defer bad.Close()
	_, err := bad.Capacity(context.Background(), s.addr)
	if !errors.Is(err, store.ErrUnauthenticated) {
		t.Fatalf("wrong secret: got %v, want Unauthenticated", err)
	}
	resp, err := http.Get("http://" + s.addr + "/v1/capacity")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Ecfs-Code") != "Unauthenticated" {
		t.Fatalf("no secret: %s %q", resp.Status, resp.Header.Get("X-Ecfs-Code"))
	}
	resp, err = http.Get("http://" + s.http + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cap, err := c.client.Capacity(context.Background(), s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), cap.StoreID) {
		t.Fatalf("healthz: %s %s", resp.Status, body)
	}
	resp, err = http.Get("http://" + s.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "ecfs_store_auth_failures_total 2") {
		t.Fatalf("metrics do not count the 2 rejected calls:\n%s", grepLines(string(body), "ecfs_store"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// putLoop stores 1 MiB shards from 8 writers until stop is closed and
// returns the keys every acknowledged Put stored.
func putLoop(c *testCluster, addr string, stop <-chan struct{}, started chan<- struct{}) (acked []store.ShardKey, failures int64) {
	scheme := codec.Scheme{K: 1, M: 1, BlockSize: 1 << 20}
	data := objData(3, 1<<20)
	sums := codec.Checksums(data)
	var mu sync.Mutex
	var next atomic.Uint64
	var failed atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := store.ShardKey{Object: store.ObjectID(next.Add(1)), Index: 0}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := c.client.Put(ctx, addr, k, scheme, int64(len(data)), data, sums)
				cancel()
				if err != nil {
					failed.Add(1)
					time.Sleep(time.Millisecond) // a dead store refuses at once: don't spin
					continue
				}
				mu.Lock()
				acked = append(acked, k)
				if len(acked) == 20 {
					once.Do(func() { close(started) })
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acked, failed.Load()
}

// checkShards reads back every key and checks the data and that no temp
// file is left on the store's disk.
func checkShards(t *testing.T, c *testCluster, i int, keys []store.ShardKey) {
	t.Helper()
	want := objData(3, 1<<20)
	for _, k := range keys {
		r, err := c.client.Get(context.Background(), c.stores[i].addr, k, 0, -1)
		if err != nil {
			t.Fatalf("acknowledged shard %s: %v", k, err)
		}
		if !bytes.Equal(r.Data, want) {
			t.Fatalf("acknowledged shard %s: wrong bytes", k)
		}
	}
	left, _ := os.ReadDir(filepath.Join(c.stores[i].dataDir, "disk", "tmp"))
	if len(left) != 0 {
		t.Fatalf("%d temp files left after restart", len(left))
	}
}

func TestStoreStopsCleanlyAndKeepsAcknowledgedWrites(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			c := newStores(t, 1)
			s := c.stores[0]
			id, err := c.client.Capacity(context.Background(), s.addr)
			if err != nil {
				t.Fatal(err)
			}
			stop, started := make(chan struct{}), make(chan struct{})
			var acked []store.ShardKey
			var failures int64
			done := make(chan struct{})
			go func() { acked, failures = putLoop(c, s.addr, stop, started); close(done) }()
			<-started
			if err := s.p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			<-s.p.exited
			close(stop)
			<-done
			if sig == syscall.SIGTERM && s.p.err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", s.p.err, s.p.logs.String())
			}
			t.Logf("%d writes acknowledged, %d failed, before and after the %v", len(acked), failures, sig)
			c.start(0)
			id2, err := c.client.Capacity(context.Background(), s.addr)
			if err != nil {
				t.Fatal(err)
			}
			if id2.StoreID != id.StoreID {
				t.Fatalf("store id changed across restart: %s -> %s", id.StoreID, id2.StoreID)
			}
			checkShards(t, c, 0, acked)
		})
	}
}

// TestSecondStoreOnAHost: two stores of one host with the README's flags
// (their own --addr and --http-addr) both serve; a second left at the
// default --http-addr is refused with a line saying what to do.
func TestSecondStoreOnAHost(t *testing.T) {
	dir := t.TempDir()
	secret, _ := writeSecret(t, dir)
	first := startProc(t, "store", "--data-dir", dir+"/s1", "--secret-file", secret, "--addr", freeAddr(t, "127.0.0.31"))
	waitFor(t, "the first store", 10*time.Second, func() error {
		if !first.running() {
			t.Fatalf("the first store exited: %v\n%s", first.err, first.logs.String())
		}
		c, err := net.Dial("tcp", "127.0.0.1:9300")
		if err == nil {
			c.Close()
		}
		return err
	})
	code, _, errs := runEcfs(t, "store", "--data-dir", dir+"/s2", "--secret-file", secret, "--addr", freeAddr(t, "127.0.0.31"))
	if code == 0 || !strings.Contains(errs, "give each store its own --http-addr") {
		t.Errorf("a second store at the default --http-addr: exit %d: %s", code, errs)
	}
	second := startProc(t, "store", "--data-dir", dir+"/s2", "--secret-file", secret, "--addr", freeAddr(t, "127.0.0.31"), "--http-addr", freeAddr(t, "127.0.0.31"))
	waitFor(t, "the second store", 10*time.Second, func() error {
		if !second.running() {
			t.Fatalf("the second store exited: %v\n%s", second.err, second.logs.String())
		}
		if !strings.Contains(second.logs.String(), "store serving") {
			return fmt.Errorf("not serving yet")
		}
		return nil
	})
}
