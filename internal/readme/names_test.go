package readme

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// packageDirs are the library's packages the README names by their
// package name, and where their source is.
var packageDirs = map[string]string{
	"audit":       "audit",
	"breaker":     "breaker",
	"dbroute":     "dbroute",
	"etcdroutes":  "routes/etcdroutes",
	"grpcmw":      "grpcmw",
	"httpmw":      "httpmw",
	"kafkamw":     "kafkamw",
	"propagation": "propagation",
	"provision":   "dbroute/provision",
	"redisroute":  "redisroute",
	"routes":      "routes",
	"sqlroute":    "dbroute/sqlroute",
}

var qualified = regexp.MustCompile(`\b(audit|breaker|dbroute|etcdroutes|grpcmw|httpmw|kafkamw|propagation|provision|redisroute|routes|sqlroute)\.([A-Z]\w*)(\.[A-Z]\w*)?`)

// TestNamesExist: every package.Name (and package.Type.Method) the
// README's text, snippets and diagrams name is an exported declaration of
// that package, so that a reader who looks one up finds it. The snippets'
// compile test covers the code; this covers the prose and the diagrams.
func TestNamesExist(t *testing.T) {
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	decls := map[string]bool{} // "pkg.Name" and "pkg.Type.Method"
	for pkg, dir := range packageDirs {
		files, err := filepath.Glob(filepath.Join("../..", dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s: no Go files in %s (%v)", pkg, dir, err)
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if d.Recv == nil {
						decls[pkg+"."+d.Name.Name] = true
						continue
					}
					typ := d.Recv.List[0].Type
					if s, ok := typ.(*ast.StarExpr); ok {
						typ = s.X
					}
					if ix, ok := typ.(*ast.IndexExpr); ok {
						typ = ix.X
					}
					if id, ok := typ.(*ast.Ident); ok {
						decls[pkg+"."+id.Name+"."+d.Name.Name] = true
					}
				case *ast.GenDecl:
					for _, sp := range d.Specs {
						switch sp := sp.(type) {
						case *ast.TypeSpec:
							decls[pkg+"."+sp.Name.Name] = true
							// Fields of a struct are named as Type.Field (Counts.DeadLetterFailed).
							if st, ok := sp.Type.(*ast.StructType); ok {
								for _, fld := range st.Fields.List {
									for _, n := range fld.Names {
										decls[pkg+"."+sp.Name.Name+"."+n.Name] = true
									}
								}
							}
						case *ast.ValueSpec:
							for _, n := range sp.Names {
								decls[pkg+"."+n.Name] = true
							}
						}
					}
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, m := range qualified.FindAllStringSubmatch(string(src), -1) {
		name := m[1] + "." + m[2]
		if m[3] != "" && decls[name+m[3]] {
			continue
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		if !decls[name] {
			t.Errorf("README names %s, which package %s does not declare", m[0], m[1])
		}
	}
	if len(seen) < 20 {
		t.Fatalf("found %d qualified names in the README; the pattern is broken", len(seen))
	}
}
