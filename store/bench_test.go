package store

import (
	"context"
	"math/rand/v2"
	"testing"
)

// benchObjects writes n 4 MiB objects (4+2) over 6 in-process stores.
func benchObjects(b *testing.B, n int) (*Objects, []Object) {
	b.Helper()
	var addrs []string
	for range 6 {
		addrs = append(addrs, newTestStore(b).addr)
	}
	objs, err := NewObjects(ObjectsConfig{Client: newTestClient(b), Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	data := randBytes(rand.New(rand.NewPCG(1, 1)), 4<<20)
	sc := mustScheme(b, "4+2")
	var out []Object
	for j := range n {
		place := make([]string, 6)
		for i := range place {
			place[i] = addrs[(i+j)%6]
		}
		o := Object{ID: ObjectID(j + 1), Scheme: sc, Placement: place}
		if _, err := objs.Write(context.Background(), o, data, 0); err != nil {
			b.Fatal(err)
		}
		o.Length = int64(len(data))
		out = append(out, o)
	}
	return objs, out
}

// BenchmarkObjectRead reads whole 4 MiB objects from in-process stores: the
// cost of the read path itself (HTTP, checksums, copies) without a disk.
func BenchmarkObjectRead(b *testing.B) {
	objs, list := benchObjects(b, 128)
	b.SetBytes(4 << 20)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 4<<20)
		i := 0
		for pb.Next() {
			if _, _, err := objs.ReadAt(context.Background(), list[i%len(list)], p, 0); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
