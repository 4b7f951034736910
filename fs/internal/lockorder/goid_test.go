//go:build lockcheck

package lockorder

import (
	"fmt"
	"sync"
	"testing"
)

func TestGoid(t *testing.T) {
	me := goid()
	if me != goid() {
		t.Fatal("goid differs between two calls")
	}
	ids := make(chan uint64, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { ids <- goid() })
	}
	wg.Wait()
	close(ids)
	seen := map[uint64]bool{me: true}
	for id := range ids {
		if seen[id] {
			t.Fatalf("goroutine id %d seen twice", id)
		}
		seen[id] = true
	}
}

func BenchmarkGoid(b *testing.B) {
	for _, depth := range []int{0, 20} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			deep(depth, func() {
				for i := 0; i < b.N; i++ {
					goid()
				}
			})
		})
	}
}

// deep calls f under n more frames.
//
//go:noinline
func deep(n int, f func()) {
	if n == 0 {
		f()
		return
	}
	deep(n-1, f)
}
