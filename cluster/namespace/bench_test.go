package namespace

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkMemoryPerFile creates 1,000,000 empty files in 1,000 directories
// and reports the heap they take per inode (target: ≤ 300 B/inode). Run it
// once: go test -run='^$' -bench=MemoryPerFile -benchtime=1x
func BenchmarkMemoryPerFile(b *testing.B) {
	const dirs, perDir = 1000, 1000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		n := New(0o755, 0, 0, t0)
		ino := Ino(2)
		now := t0
		for d := range dirs {
			dir := ino
			ino++
			now++
			if _, e := n.Mkdir(RootIno, "d"+strconv.Itoa(d), 0o755, 0, 0, dir, now); e != 0 {
				b.Fatal(e)
			}
			for f := range perDir {
				now++
				if _, e := n.Create(dir, fmt.Sprintf("file%06d", f), TypeFile, 0o644, 1000, 1000, 0, ino, now, true); e != 0 {
					b.Fatal(e)
				}
				ino++
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		inodes, _ := n.Counts()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(inodes), "B/inode")
		runtime.KeepAlive(n)
	}
}

// BenchmarkCreate measures creating files in one big directory, and
// BenchmarkReadDir listing it a page at a time.
func BenchmarkCreate(b *testing.B) {
	n := New(0o755, 0, 0, t0)
	ino := Ino(2)
	for b.Loop() {
		if _, e := n.Create(RootIno, "f"+strconv.FormatUint(ino, 10), TypeFile, 0o644, 0, 0, 0, ino, t0, true); e != 0 {
			b.Fatal(e)
		}
		ino++
	}
}

func BenchmarkReadDir(b *testing.B) {
	n := New(0o755, 0, 0, t0)
	for ino := Ino(2); ino < 100_002; ino++ {
		n.Create(RootIno, "f"+strconv.FormatUint(ino, 10), TypeFile, 0o644, 0, 0, 0, ino, t0, true)
	}
	var cookie uint64
	for b.Loop() {
		ents, _ := n.ReadDir(RootIno, cookie, 100)
		if len(ents) == 0 {
			cookie = 0
			continue
		}
		cookie = ents[len(ents)-1].Cookie
	}
}
