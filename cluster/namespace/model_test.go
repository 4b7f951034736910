package namespace

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// model is a deliberately simple reference: a map from full paths to inode
// numbers plus the inodes. Link counts are derived by counting paths, moves
// rewrite every path under the moved one, and nothing is incremental.
type model struct {
	paths   map[string]Ino
	nodes   map[Ino]*mnode
	handles map[uint64]mhandle
}

type mnode struct {
	typ  FileType
	mode uint32
	size uint64
}

type mhandle struct {
	ino     Ino
	session uint64
}

func newModel() *model {
	return &model{
		paths:   map[string]Ino{"/": RootIno},
		nodes:   map[Ino]*mnode{RootIno: {typ: TypeDir, mode: 0o755}},
		handles: map[uint64]mhandle{},
	}
}

func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func parentPath(p string) string {
	k := strings.LastIndexByte(p, '/')
	if k == 0 {
		return "/"
	}
	return p[:k]
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func (m *model) sortedPaths() []string {
	ps := make([]string, 0, len(m.paths))
	for p := range m.paths {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// pathOf returns the path of a directory, "" if it has none (removed).
func (m *model) pathOf(ino Ino) string {
	for p, i := range m.paths {
		if i == ino {
			return p
		}
	}
	return ""
}

func (m *model) nlink(ino Ino) uint32 {
	var n uint32
	if m.nodes[ino].typ == TypeDir {
		p := m.pathOf(ino)
		if p == "" {
			return 0
		}
		n = 2
		for q, i := range m.paths {
			if q != "/" && parentPath(q) == p && m.nodes[i].typ == TypeDir {
				n++
			}
		}
		return n
	}
	for _, i := range m.paths {
		if i == ino {
			n++
		}
	}
	return n
}

func (m *model) children(dir string) map[string]Ino {
	out := map[string]Ino{}
	for q, i := range m.paths {
		if q != "/" && parentPath(q) == dir {
			out[q[strings.LastIndexByte(q, '/')+1:]] = i
		}
	}
	return out
}

func (m *model) open(ino Ino) bool {
	for _, h := range m.handles {
		if h.ino == ino {
			return true
		}
	}
	return false
}

// maybeFree removes ino if it has no link and no handle.
func (m *model) maybeFree(ino Ino) bool {
	if m.nlink(ino) > 0 || m.open(ino) {
		return false
	}
	delete(m.nodes, ino)
	return true
}

func modelName(name string) syscall.Errno {
	switch {
	case name == "" || strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case len(name) > 255:
		return syscall.ENAMETOOLONG
	}
	return 0
}

// dir resolves a parent: its path ("" if removed) or ENOENT / ENOTDIR.
func (m *model) dir(ino Ino) (string, syscall.Errno) {
	n := m.nodes[ino]
	if n == nil {
		return "", syscall.ENOENT
	}
	if n.typ != TypeDir {
		return "", syscall.ENOTDIR
	}
	return m.pathOf(ino), 0
}

// newEntry checks a name to create in parent and returns its path.
func (m *model) newEntry(parent Ino, name string) (string, syscall.Errno) {
	dp, e := m.dir(parent)
	if e != 0 {
		return "", e
	}
	if name == "." || name == ".." {
		return "", syscall.EEXIST
	}
	if e := modelName(name); e != 0 {
		return "", e
	}
	if dp == "" {
		return "", syscall.ENOENT
	}
	return join(dp, name), 0
}

func (m *model) create(parent Ino, name string, typ FileType, mode uint32, ino Ino, excl bool) (Ino, syscall.Errno) {
	p, e := m.newEntry(parent, name)
	if e != 0 {
		return 0, e
	}
	if old, ok := m.paths[p]; ok {
		if !excl && typ == TypeFile && m.nodes[old].typ == TypeFile {
			return old, 0
		}
		return 0, syscall.EEXIST
	}
	if m.nodes[ino] != nil {
		return 0, syscall.EINVAL
	}
	mode &= 0o7777
	if typ == TypeDir && m.nodes[parent].mode&syscall.S_ISGID != 0 {
		mode |= syscall.S_ISGID
	}
	size := uint64(0)
	if typ == TypeSymlink {
		mode, size = 0o777, 1
	}
	m.nodes[ino] = &mnode{typ: typ, mode: mode, size: size}
	m.paths[p] = ino
	return ino, 0
}

func (m *model) link(ino, parent Ino, name string) syscall.Errno {
	if m.nodes[ino] == nil {
		return syscall.ENOENT
	}
	p, e := m.newEntry(parent, name)
	switch {
	case e != 0:
		return e
	case m.paths[p] != 0:
		return syscall.EEXIST
	case m.nodes[ino].typ == TypeDir:
		return syscall.EPERM
	case m.nlink(ino) == 0:
		return syscall.ENOENT
	}
	m.paths[p] = ino
	return 0
}

// remove is Unlink (dir false) and Rmdir (dir true).
func (m *model) remove(parent Ino, name string, dir bool) (Ino, bool, syscall.Errno) {
	dp, e := m.dir(parent)
	if e != 0 {
		return 0, false, e
	}
	if name == "." || name == ".." {
		switch {
		case !dir:
			return 0, false, syscall.EISDIR
		case name == ".":
			return 0, false, syscall.EINVAL
		}
		return 0, false, syscall.ENOTEMPTY
	}
	if e := modelName(name); e != 0 {
		return 0, false, e
	}
	p := join(dp, name)
	ino, ok := m.paths[p]
	if dp == "" || !ok {
		return 0, false, syscall.ENOENT
	}
	isDir := m.nodes[ino].typ == TypeDir
	switch {
	case !dir && isDir:
		return 0, false, syscall.EISDIR
	case dir && !isDir:
		return 0, false, syscall.ENOTDIR
	case dir && len(m.children(p)) > 0:
		return 0, false, syscall.ENOTEMPTY
	}
	delete(m.paths, p)
	return ino, m.maybeFree(ino), 0
}

func (m *model) rename(op Ino, on string, np Ino, nn string, flags uint32) (RenameResult, syscall.Errno) {
	var res RenameResult
	if flags > 2 {
		return res, syscall.EINVAL
	}
	odp, e := m.dir(op)
	if e != 0 {
		return res, e
	}
	ndp, e := m.dir(np)
	if e != 0 {
		return res, e
	}
	if on == "." || on == ".." {
		return res, syscall.EBUSY
	}
	if nn == "." || nn == ".." {
		if flags == RenameNoReplace {
			return res, syscall.EEXIST
		}
		return res, syscall.EBUSY
	}
	if e := modelName(on); e != 0 {
		return res, e
	}
	if e := modelName(nn); e != 0 {
		return res, e
	}
	sp, tp := join(odp, on), join(ndp, nn)
	sino, ok := m.paths[sp]
	if odp == "" || !ok {
		return res, syscall.ENOENT
	}
	tino, texists := m.paths[tp]
	texists = texists && ndp != ""
	switch {
	case texists && flags == RenameNoReplace:
		return res, syscall.EEXIST
	case !texists && flags == RenameExchange:
		return res, syscall.ENOENT
	case ndp == "":
		return res, syscall.ENOENT
	}
	sDir := m.nodes[sino].typ == TypeDir
	tDir := texists && m.nodes[tino].typ == TypeDir
	if sDir && under(ndp, sp) {
		return res, syscall.EINVAL
	}
	if tDir && under(odp, tp) {
		if flags == RenameExchange {
			return res, syscall.EINVAL
		}
		return res, syscall.ENOTEMPTY
	}
	if texists && sino == tino {
		return res, 0
	}
	if flags == RenameExchange {
		moved := map[string]Ino{}
		for p, i := range m.paths {
			switch {
			case under(p, sp):
				moved[tp+p[len(sp):]] = i
				delete(m.paths, p)
			case under(p, tp):
				moved[sp+p[len(tp):]] = i
				delete(m.paths, p)
			}
		}
		for p, i := range moved {
			m.paths[p] = i
		}
		return res, 0
	}
	if texists {
		switch {
		case sDir && !tDir:
			return res, syscall.ENOTDIR
		case !sDir && tDir:
			return res, syscall.EISDIR
		case tDir && len(m.children(tp)) > 0:
			return res, syscall.ENOTEMPTY
		}
		delete(m.paths, tp)
		res.Replaced = tino
	}
	moved := map[string]Ino{}
	for p, i := range m.paths {
		if under(p, sp) {
			moved[tp+p[len(sp):]] = i
			delete(m.paths, p)
		}
	}
	for p, i := range moved {
		m.paths[p] = i
	}
	if texists {
		res.Freed = m.maybeFree(tino)
	}
	return res, 0
}

func (m *model) closeHandle(h uint64) []Ino {
	ino := m.handles[h].ino
	delete(m.handles, h)
	if m.nodes[ino] != nil && m.maybeFree(ino) {
		return []Ino{ino}
	}
	return nil
}

// modelRun drives the namespace and the model with the same random
// operations and compares every result.
type modelRun struct {
	t       *testing.T
	rng     *rand.Rand
	f       *tfs
	m       *model
	step    int
	known   []Ino // every inode number ever used, plus some never used
	handle  uint64
	object  uint64
	owner   map[uint64]Ino  // object -> inode it was committed to
	freedOb map[uint64]bool // objects returned for GC
}

var modelNames = []string{"a", "b", "c"}

func (r *modelRun) name() string {
	if r.rng.IntN(50) == 0 {
		return []string{".", "..", "", "x/y", "n\x00", strings.Repeat("l", 256)}[r.rng.IntN(6)]
	}
	return modelNames[r.rng.IntN(len(modelNames))]
}

// ino picks an inode: mostly that of an existing path, sometimes an open
// one or any inode number ever used (freed ones included).
func (r *modelRun) ino() Ino {
	switch r.rng.IntN(8) {
	case 0:
		return r.known[r.rng.IntN(len(r.known))]
	case 1: // an open inode, maybe an orphan
		if hs := slices.Sorted(maps.Keys(r.m.handles)); len(hs) > 0 {
			return r.m.handles[hs[r.rng.IntN(len(hs))]].ino
		}
	}
	ps := r.m.sortedPaths()
	return r.m.paths[ps[r.rng.IntN(len(ps))]]
}

// dirIno is like ino but prefers directories.
func (r *modelRun) dirIno() Ino {
	for range 3 {
		if ino := r.ino(); r.m.nodes[ino] != nil && r.m.nodes[ino].typ == TypeDir {
			return ino
		}
	}
	return r.ino()
}

func (r *modelRun) newIno() Ino {
	if r.rng.IntN(30) == 0 {
		return r.known[r.rng.IntN(len(r.known))] // maybe in use: EINVAL
	}
	r.f.next++
	r.known = append(r.known, r.f.next)
	return r.f.next
}

func (r *modelRun) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("step %d: %s", r.step, fmt.Sprintf(format, args...))
}

func (r *modelRun) errno(op string, got, want syscall.Errno) bool {
	r.t.Helper()
	if got != want {
		r.fail("%s: errno %v, model %v", op, got, want)
	}
	return got == 0
}

// attr compares an Attr with the model's inode.
func (r *modelRun) attr(op string, a Attr) {
	r.t.Helper()
	n := r.m.nodes[a.Ino]
	if n == nil {
		r.fail("%s: inode %d not in the model", op, a.Ino)
	}
	if a.Type != n.typ || a.Mode != n.mode || a.Size != n.size || a.Nlink != r.m.nlink(a.Ino) {
		r.fail("%s: attr %+v, model %+v nlink %d", op, a, *n, r.m.nlink(a.Ino))
	}
}

// gcObjects records objects handed back for GC.
func (r *modelRun) gcObjects(op string, objs []uint64) {
	r.t.Helper()
	if !slices.IsSorted(objs) {
		r.fail("%s: objects not sorted: %v", op, objs)
	}
	for _, o := range objs {
		if _, ok := r.owner[o]; !ok || r.freedOb[o] {
			r.fail("%s: object %d freed twice or never committed", op, o)
		}
		r.freedOb[o] = true
	}
}

// freed checks that every object of a freed inode has gone to GC.
func (r *modelRun) freed(op string, ino Ino) {
	r.t.Helper()
	for o, i := range r.owner {
		if i == ino && !r.freedOb[o] {
			r.fail("%s: inode %d freed but object %d not returned", op, ino, o)
		}
	}
}

func (r *modelRun) op() {
	f, m, rng := r.f, r.m, r.rng
	now := f.now()
	switch k := rng.IntN(100); {
	case k < 12: // Create / mknod
		parent, name, excl := r.dirIno(), r.name(), rng.IntN(2) == 0
		typ := []FileType{TypeFile, TypeFile, TypeFifo, TypeSocket}[rng.IntN(4)]
		ino := r.newIno()
		a, e := f.Create(parent, name, typ, 0o644, 0, 0, 0, ino, now, excl)
		want, we := m.create(parent, name, typ, 0o644, ino, excl)
		if r.errno("Create", e, we) {
			if a.Ino != want {
				r.fail("Create: ino %d, model %d", a.Ino, want)
			}
			r.attr("Create", a)
		}
	case k < 20:
		parent, name, ino := r.dirIno(), r.name(), r.newIno()
		a, e := f.Mkdir(parent, name, 0o755, 0, 0, ino, now)
		_, we := m.create(parent, name, TypeDir, 0o755, ino, true)
		if r.errno("Mkdir", e, we) {
			r.attr("Mkdir", a)
		}
	case k < 23:
		parent, name, ino := r.dirIno(), r.name(), r.newIno()
		a, e := f.Symlink(parent, name, "t", 0, 0, ino, now)
		_, we := m.create(parent, name, TypeSymlink, 0o777, ino, true)
		if r.errno("Symlink", e, we) {
			r.attr("Symlink", a)
		}
	case k < 28:
		ino, parent, name := r.ino(), r.dirIno(), r.name()
		a, e := f.Link(ino, parent, name, now)
		if r.errno("Link", e, m.link(ino, parent, name)) {
			r.attr("Link", a)
		}
	case k < 42:
		parent, name := r.dirIno(), r.name()
		res, e := f.Unlink(parent, name, now)
		ino, freed, we := m.remove(parent, name, false)
		if r.errno("Unlink", e, we) {
			if res.Ino != ino || res.Freed != freed {
				r.fail("Unlink: %+v, model ino %d freed %v", res, ino, freed)
			}
			r.gcObjects("Unlink", res.Objects)
			if freed {
				r.freed("Unlink", ino)
			}
		}
	case k < 50:
		parent, name := r.dirIno(), r.name()
		e := f.Rmdir(parent, name, now)
		_, _, we := m.remove(parent, name, true)
		r.errno("Rmdir", e, we)
	case k < 66:
		op, on, np, nn := r.dirIno(), r.name(), r.dirIno(), r.name()
		flags := []uint32{0, 0, 0, RenameNoReplace, RenameExchange, 3}[rng.IntN(6)]
		res, e := f.Rename(op, on, np, nn, flags, now)
		want, we := m.rename(op, on, np, nn, flags)
		if r.errno(fmt.Sprintf("Rename(%d %q %d %q %d)", op, on, np, nn, flags), e, we) {
			if res.Replaced != want.Replaced || res.Freed != want.Freed {
				r.fail("Rename: %+v, model %+v", res, want)
			}
			r.gcObjects("Rename", res.Objects)
			if res.Freed {
				r.freed("Rename", res.Replaced)
			}
		}
	case k < 72: // truncate or chmod
		ino := r.ino()
		in := SetAttrIn{Valid: SetMode, Mode: uint32(rng.IntN(0o10000))}
		if rng.IntN(2) == 0 {
			in = SetAttrIn{Valid: SetSize, Size: uint64(rng.IntN(3 << 20))}
		}
		a, objs, e := f.SetAttr(ino, in, now)
		n := m.nodes[ino]
		var we syscall.Errno
		switch {
		case n == nil:
			we = syscall.ENOENT
		case in.Valid == SetSize && n.typ == TypeDir:
			we = syscall.EISDIR
		case in.Valid == SetSize && n.typ != TypeFile:
			we = syscall.EINVAL
		case in.Valid == SetSize:
			n.size = in.Size
		default:
			n.mode = in.Mode
		}
		if r.errno("SetAttr", e, we) {
			r.attr("SetAttr", a)
			r.gcObjects("SetAttr", objs)
		}
	case k < 80: // write
		ino := r.ino()
		var ws []BlockWrite
		for range 1 + rng.IntN(2) {
			r.object++
			off := uint32(rng.IntN(1 << 20))
			ws = append(ws, BlockWrite{Block: uint64(rng.IntN(3)), Slice: Slice{Off: off, Len: 1 + uint32(rng.IntN(3<<20)), Object: r.object}})
		}
		a, objs, e := f.CommitSlices(ino, ws, 0, now)
		n := m.nodes[ino]
		var we syscall.Errno
		switch {
		case n == nil:
			we = syscall.ENOENT
		case n.typ == TypeDir:
			we = syscall.EISDIR
		case n.typ != TypeFile:
			we = syscall.EINVAL
		default:
			for _, w := range ws {
				n.size = max(n.size, w.Block<<22+uint64(w.Slice.Off)+uint64(w.Slice.Len))
				r.owner[w.Slice.Object] = ino
			}
		}
		if r.errno("CommitSlices", e, we) {
			r.attr("CommitSlices", a)
			r.gcObjects("CommitSlices", objs)
		}
	case k < 86:
		ino := r.ino()
		r.handle++
		h := r.handle
		if rng.IntN(20) == 0 && h > 1 {
			h = 1 + uint64(rng.IntN(int(h-1))) // maybe in use
		}
		session := 1 + uint64(rng.IntN(3))
		e := f.Open(ino, h, session)
		var we syscall.Errno
		switch _, used := m.handles[h]; {
		case m.nodes[ino] == nil:
			we = syscall.ENOENT
		case used:
			we = syscall.EINVAL
		default:
			m.handles[h] = mhandle{ino, session}
		}
		r.errno("Open", e, we)
	case k < 92:
		h := 1 + uint64(rng.IntN(int(r.handle)+1))
		if hs := slices.Sorted(maps.Keys(m.handles)); len(hs) > 0 && rng.IntN(4) > 0 {
			h = hs[rng.IntN(len(hs))]
		}
		res, e := f.Close(h)
		var we syscall.Errno
		var want []Ino
		if _, ok := m.handles[h]; !ok {
			we = syscall.EBADF
		} else {
			want = m.closeHandle(h)
		}
		if r.errno("Close", e, we) {
			if !equal(res.Inos, want) || res.Freed != (len(want) > 0) {
				r.fail("Close: %+v, model %v", res, want)
			}
			r.gcObjects("Close", res.Objects)
			for _, ino := range want {
				r.freed("Close", ino)
			}
		}
	case k < 93:
		session := 1 + uint64(rng.IntN(3))
		res := f.CloseSession(session)
		var want []Ino
		for _, h := range slices.Sorted(maps.Keys(m.handles)) {
			if m.handles[h].session == session {
				want = append(want, m.closeHandle(h)...)
			}
		}
		slices.Sort(want)
		if !equal(res.Inos, want) {
			r.fail("CloseSession: %+v, model %v", res, want)
		}
		r.gcObjects("CloseSession", res.Objects)
		for _, ino := range want {
			r.freed("CloseSession", ino)
		}
	default:
		parent, name := r.dirIno(), r.name()
		a, e := f.Lookup(parent, name)
		dp, we := m.dir(parent)
		var want Ino
		if we == 0 {
			switch {
			case name == ".":
				want = parent
			case name == "..":
				if dp == "" {
					we = syscall.ENOENT
				} else {
					want = m.paths[parentPath(dp)]
				}
			default:
				we = modelName(name)
				if we == 0 {
					var ok bool
					if want, ok = m.paths[join(dp, name)]; dp == "" || !ok {
						we = syscall.ENOENT
					}
				}
			}
		}
		if r.errno("Lookup", e, we) {
			if a.Ino != want {
				r.fail("Lookup: ino %d, model %d", a.Ino, want)
			}
			r.attr("Lookup", a)
		}
	}
}

// compareAll checks every inode and every directory listing.
func (r *modelRun) compareAll() {
	f, m := r.f, r.m
	if in, d := f.Counts(); in != uint64(len(m.nodes)) {
		r.fail("Counts: %d inodes, model %d", in, len(m.nodes))
	} else {
		var dirs uint64
		for _, n := range m.nodes {
			if n.typ == TypeDir {
				dirs++
			}
		}
		if d != dirs {
			r.fail("Counts: %d dirs, model %d", d, dirs)
		}
	}
	for _, ino := range r.known {
		a, e := f.GetAttr(ino)
		if m.nodes[ino] == nil {
			r.errno(fmt.Sprintf("GetAttr(%d)", ino), e, syscall.ENOENT)
			continue
		}
		r.errno(fmt.Sprintf("GetAttr(%d)", ino), e, 0)
		r.attr("GetAttr", a)
		if m.nodes[ino].typ != TypeDir {
			continue
		}
		ents, e := f.ReadDir(ino, 0, 1<<20)
		r.errno("ReadDir", e, 0)
		want := map[string]Ino{}
		if p := m.pathOf(ino); p != "" {
			want = m.children(p)
		}
		if len(ents) != len(want) {
			r.fail("ReadDir(%d): %d entries, model %v", ino, len(ents), want)
		}
		for _, de := range ents {
			if want[de.Name] != de.Ino || m.nodes[de.Ino].typ != de.Type {
				r.fail("ReadDir(%d): entry %+v, model %v", ino, de, want)
			}
		}
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	r := &modelRun{
		t:       t,
		rng:     rand.New(rand.NewPCG(seed, 0xecf5)),
		f:       newTFS(t),
		m:       newModel(),
		known:   []Ino{RootIno, 99999},
		owner:   map[uint64]Ino{},
		freedOb: map[uint64]bool{},
	}
	for r.step = 0; r.step < steps; r.step++ {
		r.op()
		if r.step%100 == 99 {
			r.compareAll()
		}
		if r.step%1000 == 999 {
			r.f.Namespace = r.f.roundTrip()
		}
	}
	r.compareAll()
	r.f.roundTrip()
	// Everything still referenced has not gone to GC; closing every session
	// and removing everything frees every object exactly once.
	for o, ino := range r.owner {
		if r.m.nodes[ino] == nil && !r.freedOb[o] {
			t.Fatalf("object %d of freed inode %d never returned", o, ino)
		}
	}
}

func TestModel(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, seed, 4000) })
	}
}
