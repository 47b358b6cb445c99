package dbroute_test

import (
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/internal/compiletest"
)

// An option of one role given where another is wanted does not compile;
// the right role, and nil options, do.
func TestOptionRolesDoNotMix(t *testing.T) {
	c := compiletest.New(t, "github.com/sandboxkit/sandboxkit/dbroute", "github.com/sandboxkit/sandboxkit/dbroute/provision")
	file := func(stmt string) string {
		return "package p\n\nimport (\n\t\"github.com/sandboxkit/sandboxkit/dbroute\"\n\t\"github.com/sandboxkit/sandboxkit/dbroute/provision\"\n)\n\n" +
			"var _ = dbroute.New\nvar _ = provision.WithPrefix\n\nfunc f() {\n\t" + stmt + "\n}\n"
	}
	for name, stmt := range map[string]string{
		"provisioner option to New":       `dbroute.New(nil, nil, provision.WithPrefix("x"))`,
		"router option to a provisioner":  `provision.NewDatabasePerSandbox("", provision.Migration{}, dbroute.WithMaxPools(1))`,
		"router option to the schemas":    `provision.NewSchemaPerSandbox("", provision.Migration{}, dbroute.WithRoutes(nil))`,
		"router option to Guard":          `dbroute.Guard(nil, dbroute.WithPoolConfig(nil))`,
		"router option to GuardConn":      `dbroute.GuardConn(nil, dbroute.WithIdleTimeout(0))`,
		"both-role option to provisioner": `provision.NewSchemaPerSandbox("", provision.Migration{}, dbroute.WithLogger(nil))`,
	} {
		if err := c.Check(file(stmt)); err == nil || !strings.Contains(err.Error(), "does not implement") {
			t.Errorf("%s: %s type-checks (%v); want \"does not implement\"", name, stmt, err)
		}
	}
	for _, stmt := range []string{
		`dbroute.New(nil, nil, dbroute.WithLogger(nil), dbroute.WithMaxPools(1), nil)`,
		`dbroute.Guard(nil, dbroute.WithLogger(nil), nil)`,
		`provision.NewDatabasePerSandbox("", provision.Migration{}, provision.WithPrefix("x"), provision.WithReapGrace(0), nil)`,
	} {
		if err := c.Check(file(stmt)); err != nil {
			t.Errorf("%s: %v", stmt, err)
		}
	}
}
