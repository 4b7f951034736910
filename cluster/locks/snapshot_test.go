package locks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"testing/iotest"
)

// randomTable returns a table after steps random operations of the model
// harness (so with locks of both kinds, split ranges and queued requests).
func randomTable(t testing.TB, seed uint64, steps int) *Table {
	h := newHarness(t, seed)
	for h.step = 0; h.step < steps; h.step++ {
		h.randomOp()
	}
	return h.tb
}

func snapshot(t testing.TB, tb *Table) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := tb.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d", n, err, buf.Len())
	}
	return buf.Bytes()
}

// frame wraps a body as WriteTo does.
func frame(body []byte) []byte {
	b := append([]byte(magic), binary.BigEndian.AppendUint64(nil, uint64(len(body)))...)
	b = append(b, body...)
	sum := sha256.Sum256(body)
	return append(b, sum[:]...)
}

// body encodes values as varints.
func body(vals ...uint64) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func sameTables(t testing.TB, got, want *Table) {
	t.Helper()
	if got.Token() != want.Token() || got.Counts() != want.Counts() || got.Digest() != want.Digest() {
		t.Fatalf("tables differ: token %d/%d, counts %+v/%+v", got.Token(), want.Token(), got.Counts(), want.Counts())
	}
	for _, ino := range want.sortedInos() {
		if !slices.Equal(got.Locks(ino), want.Locks(ino)) || !slices.Equal(got.Waiters(ino), want.Waiters(ino)) {
			t.Fatalf("inode %d differs", ino)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	tables := map[string]*Table{"empty": New()}
	for seed := range 8 {
		tables[fmt.Sprintf("random-%d", seed)] = randomTable(t, uint64(seed), 200+100*seed)
	}
	onlyToken := New()
	mustSetLk(t, onlyToken, 1, alice, rg(0, 0), Write)
	mustSetLk(t, onlyToken, 1, alice, rg(0, 0), Unlock)
	tables["only the token counter"] = onlyToken

	for name, tb := range tables {
		t.Run(name, func(t *testing.T) {
			snap := snapshot(t, tb)
			if !bytes.Equal(snapshot(t, tb), snap) {
				t.Fatal("two snapshots of one state differ")
			}
			got, err := ReadTable(bytes.NewReader(snap))
			if err != nil {
				t.Fatalf("ReadTable: %v", err)
			}
			mustValid(t, got)
			sameTables(t, got, tb)
			if !bytes.Equal(snapshot(t, got), snap) {
				t.Fatal("the restored table's snapshot differs")
			}
			// Both go on the same way: queues and token included.
			for s := uint64(1); s <= 3; s++ {
				if g, w := got.ReleaseSession(s), tb.ReleaseSession(s); !slices.Equal(g, w) {
					t.Fatalf("ReleaseSession(%d): restored grants %+v, original %+v", s, g, w)
				}
				a, _ := got.SetLk(9, bob, rg(0, 0), Write, 0)
				b, _ := tb.SetLk(9, bob, rg(0, 0), Write, 0)
				if a.Token != b.Token {
					t.Fatalf("next token %d, original %d", a.Token, b.Token)
				}
			}
			sameTables(t, got, tb)
		})
	}
}

func TestSnapshotStream(t *testing.T) {
	a, b := randomTable(t, 1, 300), randomTable(t, 2, 300)
	var buf bytes.Buffer
	buf.Write(snapshot(t, a))
	buf.Write(snapshot(t, b))
	buf.WriteString("rest")
	for _, want := range []*Table{a, b} {
		got, err := ReadTable(iotest.OneByteReader(&buf))
		if err != nil {
			t.Fatal(err)
		}
		sameTables(t, got, want)
	}
	if buf.String() != "rest" {
		t.Fatalf("ReadTable read past its snapshot: %q left", buf.String())
	}
}

func TestDigest(t *testing.T) {
	build := func(typ LockType) *Table {
		tb := New()
		mustSetLk(t, tb, testIno, alice, rg(0, 9), Read)
		mustSetLk(t, tb, testIno, alice, rg(3, 4), typ)
		mustFlock(t, tb, 2, bob, Shared)
		mustWait(t, tb, carol, KindPosix, rg(0, 0), Write, 1, false)
		return tb
	}
	a, b := build(Write), build(Write)
	if a.Digest() != b.Digest() {
		t.Fatal("same operations, different digests")
	}
	if build(Write).Digest() == build(Read).Digest() {
		t.Fatal("different states, same digest")
	}
	tb := build(Write)
	d := tb.Digest()
	if _, err := tb.WriteTo(io.Discard); err != nil || tb.Digest() != d {
		t.Fatal("WriteTo changed the digest")
	}
	snap := snapshot(t, tb)
	if !bytes.Equal(snap[len(snap)-32:], d[:]) {
		t.Fatal("the snapshot's checksum is not the digest")
	}
	if New().Digest() == d {
		t.Fatal("empty table has the same digest")
	}
}

func TestSnapshotCorrupt(t *testing.T) {
	// A valid body: token 5; inode 7 with alice's write lock on 0..9 (token
	// 1), no flock, bob waiting to read 0..0 (request 9).
	valid := []uint64{5, 1, 7, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 0, 0, 1}
	if _, err := ReadTable(bytes.NewReader(frame(body(valid...)))); err != nil {
		t.Fatalf("the valid body: %v", err)
	}
	with := func(i int, v uint64) []byte {
		vals := slices.Clone(valid)
		vals[i] = v
		return body(vals...)
	}
	w := func(vals ...uint64) []byte { return body(vals...) }
	cases := []struct {
		name string
		body []byte
	}{
		{"token counter below a lock's", with(0, 0)},
		{"lock token 0", with(9, 0)},
		{"inode count too large", with(1, 2)},
		{"empty inode", w(5, 1, 7, 0, 0, 0)},
		{"inodes out of order", w(5, 2, 8, 0, 1, 1, 10, 1, 1, 0, 7, 0, 1, 2, 20, 1, 1, 0)},
		{"inode twice", w(5, 2, 7, 0, 1, 1, 10, 1, 1, 0, 7, 0, 1, 2, 20, 1, 1, 0)},
		{"inverted range", with(6, 20)},
		{"lock type unlock", with(8, uint64(Unlock))},
		{"lock type 0", with(8, 0)},
		{"lock type beyond a byte", with(8, 258)},
		{"own ranges overlap", w(5, 1, 7, 2, 1, 10, 0, 9, 2, 1, 1, 10, 5, 20, 1, 2, 0, 0)},
		{"own ranges not merged", w(5, 1, 7, 2, 1, 10, 0, 9, 2, 1, 1, 10, 10, 20, 2, 2, 0, 0)},
		{"own ranges out of order", w(5, 1, 7, 2, 1, 10, 20, 29, 2, 1, 1, 10, 0, 9, 1, 2, 0, 0)},
		{"owners out of order", w(5, 1, 7, 2, 2, 20, 0, 9, 1, 1, 1, 10, 20, 29, 1, 2, 0, 0)},
		{"conflicting owners", w(5, 1, 7, 2, 1, 10, 0, 9, 2, 1, 2, 20, 5, 5, 1, 2, 0, 0)},
		{"conflicting owners, write second", w(5, 1, 7, 2, 1, 10, 0, 9, 1, 1, 2, 20, 9, 12, 2, 2, 0, 0)},
		{"two exclusive flocks", w(5, 1, 7, 0, 2, 1, 10, 2, 1, 2, 20, 2, 2, 0)},
		{"exclusive beside shared", w(5, 1, 7, 0, 2, 1, 10, 1, 1, 2, 20, 2, 2, 0)},
		{"flocks out of order", w(5, 1, 7, 0, 2, 2, 20, 1, 1, 1, 10, 1, 2, 0)},
		{"flock type unlock", w(5, 1, 7, 0, 1, 1, 10, 3, 1, 0)},
		{"grantable waiter", w(5, 1, 7, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 20, 20, 1)},
		{"waiter of unknown kind", with(13, 3)},
		{"waiter of kind 0", with(13, 0)},
		{"waiter to unlock", with(18, uint64(Unlock))},
		{"waiter with an inverted range", w(5, 1, 7, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 5, 4, 1)},
		{"flock waiter with a range", w(5, 1, 7, 0, 1, 1, 10, 2, 1, 1, 9, 2, 2, 20, 0, 9, 1)},
		{"request id twice", w(5, 1, 7, 1, 1, 10, 0, 9, 2, 1, 0, 2, 9, 1, 2, 20, 0, 0, 1, 9, 1, 3, 30, 0, 0, 1)},
		{"request id twice on two inodes", w(5, 2, 7, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 0, 0, 1,
			8, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 0, 0, 1)},
		{"posix count beyond the body", with(3, 1000)},
		{"trailing byte", append(body(valid...), 0)},
		{"truncated", body(valid...)[:len(body(valid...))-1]},
		{"empty body", nil},
		{"varint not in shortest form", append([]byte{0x85, 0x00}, body(valid[1:]...)...)},
		{"varint overflow", append(bytes.Repeat([]byte{0xff}, 10), 0x01)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTable(bytes.NewReader(frame(tc.body)))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadTable = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestSnapshotCorruptFrame(t *testing.T) {
	snap := snapshot(t, randomTable(t, 3, 300))
	long := slices.Clone(snap)
	binary.BigEndian.PutUint64(long[len(magic):], maxBody+1)
	cases := map[string][]byte{
		"empty":              nil,
		"bad magic":          append([]byte("ecfslX\x00\x01"), snap[len(magic):]...),
		"unknown version":    append([]byte("ecfslk\x00\x02"), snap[len(magic):]...),
		"length beyond max":  long,
		"truncated header":   snap[:10],
		"truncated body":     snap[:len(snap)-40],
		"truncated checksum": snap[:len(snap)-1],
	}
	// Every flipped bit is caught.
	for i := range len(snap) * 8 {
		b := slices.Clone(snap)
		b[i/8] ^= 1 << (i % 8)
		cases[fmt.Sprintf("bit %d flipped", i)] = b
	}
	for name, b := range cases {
		_, err := ReadTable(bytes.NewReader(b))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: ReadTable = %v, want ErrCorrupt", name, err)
		}
	}

	// An error of the reader is not corruption.
	boom := errors.New("boom")
	if _, err := ReadTable(iotest.ErrReader(boom)); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Errorf("reader error: %v", err)
	}
	if _, err := randomTable(t, 3, 300).WriteTo(failWriter{boom}); !errors.Is(err, boom) {
		t.Errorf("writer error: %v", err)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// FuzzReadTable feeds arbitrary bytes to the decoder, as a whole snapshot and
// as a body in a valid frame (so that the checksum does not stop them). It
// must never panic; what it accepts must be a valid table whose encoding is
// exactly the input, and that keeps working.
func FuzzReadTable(f *testing.F) {
	f.Add([]byte{})
	f.Add(body(5, 1, 7, 1, 1, 10, 0, 9, 2, 1, 0, 1, 9, 1, 2, 20, 0, 0, 1))
	f.Add(frame(body(0, 0)))
	for seed := range 4 {
		tb := randomTable(f, uint64(seed), 60)
		f.Add(tb.encode())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if tb, err := ReadTable(bytes.NewReader(data)); err == nil {
			if snap := snapshot(t, tb); !bytes.HasPrefix(data, snap) {
				t.Fatal("accepted snapshot does not round-trip")
			}
		}
		tb, err := ReadTable(bytes.NewReader(frame(data)))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		mustValid(t, tb)
		if !bytes.Equal(tb.encode(), data) {
			t.Fatal("accepted body does not round-trip")
		}
		// The decoded table keeps working and valid.
		for _, ino := range tb.sortedInos() {
			for _, l := range tb.Locks(ino) {
				tb.GetLk(ino, l.Owner, l.Range, Write)
				tb.Holds(ino, l.Owner, l.Token)
			}
			for _, w := range tb.Waiters(ino) {
				tb.CancelWait(w.ReqID)
				mustValid(t, tb)
				break
			}
		}
		for _, ino := range tb.sortedInos() {
			if ls := tb.Locks(ino); len(ls) > 0 {
				tb.ReleaseSession(ls[0].Owner.Session)
				mustValid(t, tb)
			}
		}
	})
}
