package dbroute_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// An option of one role given where another is wanted does not compile.
// Each case is a statement; the test builds them all in a throw-away
// package inside the module and checks that the compiler refuses each one
// on its own line with "does not implement", and that the control
// statements (the right role, nil options) compile.
func TestOptionRolesDoNotMix(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package with the go command")
	}
	refused := map[string]string{
		"provisioner option to New":       `dbroute.New(nil, nil, provision.WithPrefix("x"))`,
		"router option to a provisioner":  `provision.NewDatabasePerSandbox("", provision.Migration{}, dbroute.WithMaxPools(1))`,
		"router option to the schemas":    `provision.NewSchemaPerSandbox("", provision.Migration{}, dbroute.WithRoutes(nil))`,
		"router option to Guard":          `dbroute.Guard(nil, dbroute.WithPoolConfig(nil))`,
		"router option to GuardConn":      `dbroute.GuardConn(nil, dbroute.WithIdleTimeout(0))`,
		"both-role option to provisioner": `provision.NewSchemaPerSandbox("", provision.Migration{}, dbroute.WithLogger(nil))`,
	}
	control := []string{
		`dbroute.New(nil, nil, dbroute.WithLogger(nil), dbroute.WithMaxPools(1), nil)`,
		`dbroute.Guard(nil, dbroute.WithLogger(nil), nil)`,
		`provision.NewDatabasePerSandbox("", provision.Migration{}, provision.WithPrefix("x"), provision.WithReapGrace(0), nil)`,
	}
	var src strings.Builder
	src.WriteString("package main\n\nimport (\n\t\"github.com/sandboxkit/sandboxkit/dbroute\"\n\t\"github.com/sandboxkit/sandboxkit/dbroute/provision\"\n)\n\nfunc main() {\n")
	line := 9 // the first statement's line
	lines := map[int]string{}
	for _, stmt := range control {
		fmt.Fprintf(&src, "\t%s\n", stmt)
		line++
	}
	for name, stmt := range refused {
		fmt.Fprintf(&src, "\t%s\n", stmt)
		lines[line] = name
		line++
	}
	src.WriteString("}\n")

	dir, err := os.MkdirTemp(".", "_compilefail-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-gcflags=-e", "-o", os.DevNull, "./"+filepath.Base(dir))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("options of the wrong role compiled:\n%s", src.String())
	}
	errLine := regexp.MustCompile(`main\.go:(\d+):\d+: (.*)`)
	got := map[int]string{}
	for _, m := range errLine.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		got[n] += m[2]
	}
	for n, msg := range got {
		if _, ok := lines[n]; !ok {
			t.Errorf("line %d, which should compile, does not: %s", n, msg)
		}
	}
	for n, name := range lines {
		if !strings.Contains(got[n], "does not implement") {
			t.Errorf("%s (line %d): compiler said %q, want \"does not implement\"", name, n, got[n])
		}
	}
	if t.Failed() {
		t.Logf("source:\n%s\ngo build:\n%s", src.String(), out)
	}
}
