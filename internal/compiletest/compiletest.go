// Package compiletest type-checks Go snippets against the library as it is
// built, for tests that show that a misuse does not compile (an option
// given to a constructor that cannot use it). It reads the packages'
// export data from `go list -export`, so a check costs a parse and a type
// check, not a build.
package compiletest

import (
	"bytes"
	"errors"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Checker type-checks one Go file at a time.
type Checker struct {
	t       testing.TB
	exports map[string]string // import path -> export data file
}

// New returns a Checker for files that import pkgs (and what they
// import). It runs `go list -export -deps` once, which builds the packages
// if the build cache does not hold them yet.
func New(t testing.TB, pkgs ...string) *Checker {
	t.Helper()
	args := append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}"}, pkgs...)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	exports := map[string]string{}
	for line := range strings.Lines(string(out)) {
		path, file, _ := strings.Cut(strings.TrimSpace(line), "\t")
		exports[path] = file
	}
	return &Checker{t: t, exports: exports}
}

// Check type-checks src, a whole Go file, and returns its type errors
// joined, or nil when it compiles. A file that does not parse fails the
// test: the snippet itself is wrong.
func (c *Checker) Check(src string) error {
	c.t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "snippet.go", src, 0)
	if err != nil {
		c.t.Fatalf("snippet does not parse: %v\n%s", err, src)
	}
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file, ok := c.exports[path]
		if !ok || file == "" {
			return nil, errors.New("compiletest: no export data for " + path)
		}
		return os.Open(file)
	})
	var errs []error
	conf := types.Config{Importer: imp, Error: func(err error) { errs = append(errs, err) }}
	conf.Check("snippet", fset, []*ast.File{f}, nil)
	return errors.Join(errs...)
}

// Expect checks src as [Checker.Check] does and fails the test, naming
// the case, unless src compiles when want is "" or fails with an error
// that contains want otherwise.
func (c *Checker) Expect(name, src, want string) {
	c.t.Helper()
	err := c.Check(src)
	switch {
	case want == "" && err != nil:
		c.t.Errorf("%s: %v, want it to compile", name, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		c.t.Errorf("%s: %v, want a compile error with %q", name, err, want)
	}
}
