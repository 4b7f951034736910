package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ecfs/ecfs/codec"
)

// TestDeleteRemovesEmptyFanoutDirs: deleting every shard leaves no
// directory behind under shards/, and puts racing with deletes in the same
// fan-out directories all land.
func TestDeleteRemovesEmptyFanoutDirs(t *testing.T) {
	root := t.TempDir()
	d, err := openDisks([]string{root}, "3f1c2a9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	sc := codec.Scheme{K: 4, M: 2, BlockSize: 4 << 20}
	put := func(k ShardKey) error {
		data := bytes.Repeat([]byte{byte(k.Object)}, 1000)
		h := &ShardHeader{Key: k, Scheme: sc, ObjectLen: 4000, ShardLen: int64(len(data)), Sums: codec.Checksums(data)}
		return d.put(h, bytes.NewReader(data))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				k := ShardKey{Object: ObjectID(w*1000 + i), Index: i % 6}
				if err := put(k); err != nil {
					errs <- fmt.Errorf("put %s: %w", k, err)
					return
				}
				if i%2 == 0 { // half are deleted at once, racing other puts
					if err := d.remove(k); err != nil {
						errs <- fmt.Errorf("remove %s: %w", k, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := range 8 {
		for i := 1; i < 50; i += 2 {
			k := ShardKey{Object: ObjectID(w*1000 + i), Index: i % 6}
			if _, err := os.Stat(d.shardPath(root, k)); err != nil {
				t.Fatalf("shard %s put and kept is gone: %v", k, err)
			}
			if err := d.remove(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	var left []string
	filepath.WalkDir(filepath.Join(root, "shards"), func(p string, e os.DirEntry, err error) error {
		if err == nil && p != filepath.Join(root, "shards") {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("left behind under shards/: %v", left)
	}
	if err := d.remove(ShardKey{Object: 1, Index: 0}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing a removed shard: %v", err)
	}
}
