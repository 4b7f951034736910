package store

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"
)

func TestScrubFindsCorruptShards(t *testing.T) {
	s := newTestStore(t)
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(1, 2))
	sc := mustScheme(t, "2+1/1M")
	var keys []ShardKey
	for i := range 20 {
		k := ShardKey{Object: ObjectID(100 + i), Index: i % 3}
		putShard(t, c, s.addr, k, sc, int64(1+rng.IntN(1<<20)), rng)
		keys = append(keys, k)
	}
	bad := map[ShardKey]bool{keys[3]: true, keys[11]: true}
	for k := range bad {
		path := shardFilePath(t, s, k)
		h := fileHeader(t, path)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{0xff, 0x00, 0xff}, h.DataOffset()+h.ShardLen/2); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	n, nbad, err := s.srv.scrubPass(context.Background())
	if err != nil || n != len(keys) || nbad != len(bad) {
		t.Fatalf("scrub: checked %d, corrupt %d, err %v; want %d, %d", n, nbad, err, len(keys), len(bad))
	}
	got, err := c.Corrupt(testCtx(t), s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bad) {
		t.Fatalf("corrupt list %v, want %d entries", got, len(bad))
	}
	for _, cs := range got {
		k, err := ParseShardKey(cs.Key)
		if err != nil || !bad[k] {
			t.Fatalf("corrupt list names %q, not one of the damaged shards", cs.Key)
		}
	}
	// Rewriting a shard takes it off the list.
	putShard(t, c, s.addr, keys[3], sc, 1000, rng)
	if got, _ := c.Corrupt(testCtx(t), s.addr); len(got) != 1 {
		t.Fatalf("after rewriting one: %v", got)
	}
}
