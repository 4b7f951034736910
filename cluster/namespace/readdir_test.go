package namespace

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
)

func TestReadDir(t *testing.T) {
	f, m := tree(t)
	t.Run("root", func(t *testing.T) {
		ents, e := f.ReadDir(RootIno, 0, 100)
		mustOK(t, e)
		want := []DirEntry{
			{"d", m["/d"], TypeDir, 0}, {"e", m["/e"], TypeDir, 0}, {"f", m["/f"], TypeFile, 0},
			{"h", m["/h"], TypeFile, 0}, {"s", m["/s"], TypeSymlink, 0}, {"p", m["/p"], TypeFifo, 0},
		}
		if len(ents) != len(want) {
			t.Fatalf("ReadDir = %+v", ents)
		}
		for k, de := range ents {
			if de.Name != want[k].Name || de.Ino != want[k].Ino || de.Type != want[k].Type || de.Cookie < FirstCookie {
				t.Fatalf("entry %d = %+v, want %+v", k, de, want[k])
			}
			if k > 0 && de.Cookie <= ents[k-1].Cookie {
				t.Fatal("cookies not increasing")
			}
		}
	})
	t.Run("pages", func(t *testing.T) {
		var got []string
		var cookie uint64
		for {
			ents, e := f.ReadDir(RootIno, cookie, 4)
			mustOK(t, e)
			if len(ents) > 4 {
				t.Fatalf("page of %d", len(ents))
			}
			if len(ents) == 0 {
				break
			}
			for _, de := range ents {
				got = append(got, de.Name)
			}
			cookie = ents[len(ents)-1].Cookie
		}
		if !equal(got, []string{"d", "e", "f", "h", "s", "p"}) {
			t.Fatalf("paged = %q", got)
		}
	})
	for _, tc := range []struct {
		name   string
		ino    Ino
		cookie uint64
		max    int
		n      int
		errno  syscall.Errno
	}{
		{"cookie 1 and 2 start", RootIno, 2, 100, 6, 0},
		{"past end", RootIno, 1 << 40, 100, 0, 0},
		{"max zero", RootIno, 0, 0, 0, 0},
		{"empty dir", m["/e"], 0, 10, 0, 0},
		{"file", m["/f"], 0, 10, 0, syscall.ENOTDIR},
		{"missing", 99999, 0, 10, 0, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ents, e := f.ReadDir(tc.ino, tc.cookie, tc.max)
			wantErrno(t, e, tc.errno)
			if len(ents) != tc.n {
				t.Fatalf("ReadDir = %+v", ents)
			}
		})
	}
	t.Run("cookies never reused", func(t *testing.T) {
		f := newTFS(t)
		f.create(RootIno, "a")
		ents, _ := f.ReadDir(RootIno, 0, 10)
		_, e := f.Unlink(RootIno, "a", f.now())
		mustOK(t, e)
		f.create(RootIno, "a")
		ents2, _ := f.ReadDir(RootIno, 0, 10)
		if ents2[0].Cookie <= ents[0].Cookie {
			t.Fatalf("cookie %d reused after %d", ents2[0].Cookie, ents[0].Cookie)
		}
		f.roundTrip()
	})
}

// TestReadDirPagingUnderMutation pages through a 5,000-entry directory while
// entries are created and removed between pages: every entry present
// throughout must be seen exactly once, and no entry twice.
func TestReadDirPagingUnderMutation(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			f := newTFS(t)
			dir := f.mkdir(RootIno, "big")
			stable := map[string]bool{}
			var volatile []string
			for k := range 5000 {
				name := fmt.Sprintf("e%05d", k)
				f.create(dir, name)
				if rng.IntN(2) == 0 {
					stable[name] = true
				} else {
					volatile = append(volatile, name)
				}
			}
			seen := map[string]int{}
			var cookie uint64
			created := 0
			for page := 0; ; page++ {
				ents, e := f.ReadDir(dir, cookie, 1+rng.IntN(200))
				mustOK(t, e)
				if len(ents) == 0 {
					break
				}
				for _, de := range ents {
					if seen[de.Name]++; seen[de.Name] > 1 {
						t.Fatalf("%s seen twice", de.Name)
					}
				}
				cookie = ents[len(ents)-1].Cookie
				// Mutate: remove some volatile entries, create new ones,
				// and sometimes round-trip the namespace through a snapshot.
				for range rng.IntN(150) {
					if len(volatile) == 0 {
						break
					}
					k := rng.IntN(len(volatile))
					_, e := f.Unlink(dir, volatile[k], f.now())
					mustOK(t, e)
					volatile[k] = volatile[len(volatile)-1]
					volatile = volatile[:len(volatile)-1]
				}
				for range rng.IntN(100) {
					name := fmt.Sprintf("n%05d", created)
					created++
					f.create(dir, name)
					volatile = append(volatile, name)
				}
				if page%25 == 5 {
					f.Namespace = f.roundTrip()
				}
			}
			for name := range stable {
				if seen[name] != 1 {
					t.Fatalf("stable entry %s seen %d times", name, seen[name])
				}
			}
			if d := f.inodes[dir].ext.dir; len(d.ents) > 2*d.live()+minDead+1 {
				t.Fatalf("directory not compacted: %d slots for %d entries", len(d.ents), d.live())
			}
		})
	}
}

// TestDirCompaction removes entries in patterns that exercise the index,
// tombstones and compaction, checking Lookup and ReadDir against a map.
func TestDirCompaction(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	f := newTFS(t)
	want := map[string]Ino{}
	for step := range 20000 {
		name := fmt.Sprintf("x%d", rng.IntN(60))
		if _, ok := want[name]; ok {
			_, e := f.Unlink(RootIno, name, f.now())
			mustOK(t, e)
			delete(want, name)
		} else {
			want[name] = f.create(RootIno, name)
		}
		if step%97 == 0 {
			ents, _ := f.ReadDir(RootIno, 0, 1000)
			if len(ents) != len(want) {
				t.Fatalf("step %d: %d entries, want %d", step, len(ents), len(want))
			}
			for _, de := range ents {
				if want[de.Name] != de.Ino || f.lookup(RootIno, de.Name) != de.Ino {
					t.Fatalf("step %d: entry %+v", step, de)
				}
			}
			d := f.inodes[RootIno].ext.dir
			if d.index == nil && d.live() > smallDir {
				t.Fatalf("step %d: index %v with %d entries", step, d.index != nil, d.live())
			}
		}
	}
}
