package sqlroute_test

import (
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/internal/compiletest"
)

// An option of one role given where another is wanted does not compile;
// the right role, and nil options, do.
func TestOptionRolesDoNotMix(t *testing.T) {
	c := compiletest.New(t, "github.com/sandboxkit/sandboxkit/dbroute", "github.com/sandboxkit/sandboxkit/dbroute/sqlroute", "github.com/sandboxkit/sandboxkit/dbroute/provision")
	file := func(stmt string) string {
		return "package p\n\nimport (\n\t\"github.com/sandboxkit/sandboxkit/dbroute\"\n\t\"github.com/sandboxkit/sandboxkit/dbroute/provision\"\n\t\"github.com/sandboxkit/sandboxkit/dbroute/sqlroute\"\n)\n\n" +
			"var _ = dbroute.New\nvar _ = provision.WithPrefix\nvar _ = sqlroute.New\n\nfunc f() {\n\t" + stmt + "\n}\n"
	}
	for name, stmt := range map[string]string{
		"router option to Guard":            `sqlroute.Guard(nil, sqlroute.WithMaxPools(1))`,
		"dbroute's router option to New":    `sqlroute.New(nil, nil, dbroute.WithMaxPools(1))`,
		"provisioner option to New":         `sqlroute.New(nil, nil, provision.WithPrefix("x"))`,
		"router option to the provisioner":  `provision.NewMySQLDatabasePerSandbox("", provision.MySQLMigration{}, sqlroute.WithRoutes(nil))`,
		"both-role option to a provisioner": `provision.NewMySQLDatabasePerSandbox("", provision.MySQLMigration{}, sqlroute.WithLogger(nil))`,
		"dbroute's guard option to Guard":   `sqlroute.Guard(nil, dbroute.WithLogger(nil))`,
	} {
		if err := c.Check(file(stmt)); err == nil || !strings.Contains(err.Error(), "does not implement") {
			t.Errorf("%s: %s type-checks (%v); want \"does not implement\"", name, stmt, err)
		}
	}
	for _, stmt := range []string{
		`sqlroute.New(nil, nil, sqlroute.WithLogger(nil), sqlroute.WithMaxPools(1), sqlroute.WithDBConfig(nil), nil)`,
		`sqlroute.Guard(nil, sqlroute.WithLogger(nil), nil)`,
		`provision.NewMySQLDatabasePerSandbox("", provision.MySQLMigration{}, provision.WithPrefix("x"), nil)`,
	} {
		if err := c.Check(file(stmt)); err != nil {
			t.Errorf("%s: %v", stmt, err)
		}
	}
}
