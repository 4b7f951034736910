package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The shape of the core, checked: small files and types, no FUSE library,
// and calls between components that run only downward.

// layers ranks the core's components: a method of one may call methods of
// the components it holds only if they rank lower (FS, the façade, is the
// top). See FS's comment for what each does.
var layers = map[string]int{
	"budget": 0, "base": 0,
	"inode": 1, "inodeTable": 1,
	"pipeline": 2,
	"closer":   3, "objectCache": 3, "placer": 3, "reporter": 3, "releaser": 3, "packer": 3,
	"handleTable": 4,
	"readLeases":  5,
	"leaseTable":  6,
	"view":        7, "renewer": 7,
	"dataPlane": 8,
	"FS":        9,
}

// coreFiles parses the non-test Go files of dir.
func coreFiles(t *testing.T, dir string) (*token.FileSet, []*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return fset, files
}

func TestStructureSizes(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".pb.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if n := strings.Count(string(b), "\n"); n > 600 {
			t.Errorf("%s has %d lines: over 600", path, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{".", "fuse"} {
		_, files := coreFiles(t, dir)
		methods := map[string]int{}
		for _, f := range files {
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil {
					methods[recvType(fd)]++
				}
			}
		}
		// Methods promoted from embedded types count too.
		total := map[string]int{}
		for typ, n := range methods {
			total[typ] += n
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				if ts, ok := n.(*ast.TypeSpec); ok {
					if st, ok := ts.Type.(*ast.StructType); ok {
						for _, fl := range st.Fields.List {
							if len(fl.Names) == 0 {
								total[ts.Name.Name] += methods[typeName(fl.Type)]
							}
						}
					}
				}
				return true
			})
		}
		for typ, n := range total {
			if n > 40 {
				t.Errorf("%s: type %s has %d methods: over 40", dir, typ, n)
			}
		}
		if dir == "." && methods["FS"] == 0 {
			t.Fatal("found no methods of FS: the check reads the wrong files")
		}
	}
}

// TestStructureNoFUSEInCore: the core links no FUSE library; the adapter
// does.
func TestStructureNoFUSEInCore(t *testing.T) {
	deps := func(pkg string) string {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		return string(out)
	}
	if d := deps("."); strings.Contains(d, "go-fuse") {
		t.Errorf("the core depends on go-fuse:\n%s", d)
	}
	if d := deps("./fuse"); !strings.Contains(d, "github.com/hanwen/go-fuse/v2/fs") {
		t.Errorf("the adapter does not depend on go-fuse: the check is broken")
	}
}

// TestStructureCallsRunDownward: a component's methods call methods only
// of the components below it that it holds (recv.field.method, and deeper
// selectors through such a field), and no component holds a function it
// was handed from above (a callback up).
func TestStructureCallsRunDownward(t *testing.T) {
	_, files := coreFiles(t, ".")
	fields := map[string]map[string]string{} // type -> field -> type of field
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			m := map[string]string{}
			for _, fl := range st.Fields.List {
				typ := typeName(fl.Type)
				if _, isFunc := fl.Type.(*ast.FuncType); isFunc && layers[ts.Name.Name] > 0 {
					t.Errorf("component %s holds a function (%v): a call that may run upward", ts.Name.Name, fl.Names)
				}
				if len(fl.Names) == 0 { // embedded
					m[typ] = typ
				}
				for _, nm := range fl.Names {
					m[nm.Name] = typ
				}
			}
			fields[ts.Name.Name] = m
			return true
		})
	}
	edges := 0
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || fd.Body == nil || len(fd.Recv.List[0].Names) == 0 {
				continue
			}
			from := recvType(fd)
			rank, ranked := layers[from]
			if !ranked {
				continue
			}
			recv := fd.Recv.List[0].Names[0].Name
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				// The chain recv.f1.f2...method: the component is f1's type.
				var chain []string
				x := sel.X
				for {
					if s, ok := x.(*ast.SelectorExpr); ok {
						chain = append([]string{s.Sel.Name}, chain...)
						x = s.X
						continue
					}
					break
				}
				id, ok := x.(*ast.Ident)
				if !ok || id.Name != recv || len(chain) == 0 {
					return true
				}
				to, ok := fields[from][chain[0]]
				if !ok {
					return true
				}
				if r, ok := layers[to]; ok {
					edges++
					if r >= rank && to != from {
						t.Errorf("%s.%s calls %s.%s.%s: %s (layer %d) is not below %s (layer %d)",
							from, fd.Name.Name, recv, strings.Join(chain, "."), sel.Sel.Name, to, r, from, rank)
					}
				}
				return true
			})
		}
	}
	if edges < 20 {
		t.Fatalf("found only %d calls between components: the check reads the wrong code", edges)
	}
}

// fileOrder is the core's files from the bottom up: a file calls only
// functions and methods of the files before it (or its own).
var fileOrder = []string{
	"base.go", "budget.go", "buf.go", "inode.go", "journal.go", "pipeline.go", "objects.go",
	"closer.go", "pack.go", "report.go", "handles.go", "kernelcache.go", "readcopy.go", "readlist.go", "readopen.go", "readlease.go", "readchange.go", "leases.go", "leaseload.go", "leaseahead.go", "view.go", "wb.go", "notes.go",
	"session.go", "data.go", "prefetch.go", "health.go", "read.go", "write.go", "ops.go", "files.go", "fs.go",
}

// TestStructureFilesCallDownward: every call between the core's files goes
// from a file to one below it in fileOrder (a call through a method value
// or an interface is not seen; the components hold none of their own).
func TestStructureFilesCallDownward(t *testing.T) {
	fset, files := coreFiles(t, ".")
	rank := map[string]int{}
	for i, f := range fileOrder {
		rank[f] = i
	}
	funcs := map[string]string{}   // function -> file
	methods := map[string]string{} // type.method -> file
	fields := map[string]map[string]string{}
	fileOf := func(n ast.Node) string { return filepath.Base(fset.Position(n.Pos()).Filename) }
	for _, f := range files {
		name := fileOf(f)
		if _, ok := rank[name]; !ok && name != "locking.go" {
			t.Errorf("%s is not in fileOrder", name)
		}
		for _, d := range f.Decls {
			switch x := d.(type) {
			case *ast.FuncDecl:
				if x.Recv == nil {
					funcs[x.Name.Name] = name
				} else {
					methods[recvType(x)+"."+x.Name.Name] = name
				}
			case *ast.GenDecl:
				for _, sp := range x.Specs {
					ts, ok := sp.(*ast.TypeSpec)
					if !ok {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					m := map[string]string{}
					for _, fl := range st.Fields.List {
						if len(fl.Names) == 0 {
							m[typeName(fl.Type)] = typeName(fl.Type)
						}
						for _, nm := range fl.Names {
							m[nm.Name] = typeName(fl.Type)
						}
					}
					fields[ts.Name.Name] = m
				}
			}
		}
	}
	// method finds typ's method, also one promoted from an embedded field.
	method := func(typ, name string) string {
		if f := methods[typ+"."+name]; f != "" {
			return f
		}
		for field, ft := range fields[typ] {
			if field == ft {
				if f := methods[ft+"."+name]; f != "" {
					return f
				}
			}
		}
		return ""
	}
	edges := 0
	for _, f := range files {
		from := fileOf(f)
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			recv, rtype := "", ""
			if fd.Recv != nil && len(fd.Recv.List[0].Names) > 0 {
				recv, rtype = fd.Recv.List[0].Names[0].Name, recvType(fd)
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				to := ""
				switch fun := call.Fun.(type) {
				case *ast.Ident:
					to = funcs[fun.Name]
				case *ast.SelectorExpr:
					var chain []string
					x := fun.X
					for {
						s, ok := x.(*ast.SelectorExpr)
						if !ok {
							break
						}
						chain = append([]string{s.Sel.Name}, chain...)
						x = s.X
					}
					if id, ok := x.(*ast.Ident); ok && recv != "" && id.Name == recv {
						typ := rtype
						for _, c := range chain {
							typ = fields[typ][c]
						}
						to = method(typ, fun.Sel.Name)
					}
				}
				if to == "" || to == from {
					return true
				}
				edges++
				if rank[to] > rank[from] {
					t.Errorf("%s (%s) calls into %s, which is above it", from, fd.Name.Name, to)
				}
				return true
			})
		}
	}
	if edges < 40 {
		t.Fatalf("found only %d calls between files: the check reads the wrong code", edges)
	}
}

func recvType(fd *ast.FuncDecl) string { return typeName(fd.Recv.List[0].Type) }

// typeName is the name of a (pointer to a) named type, or "".
func typeName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return typeName(x.X)
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return x.Sel.Name
	}
	return ""
}
