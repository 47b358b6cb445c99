package dbroute_test

import (
	"errors"
	"testing"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRouteTableNotLoadedIsUnavailable: before its route table has ever
// loaded, the router cannot say whether a sandbox exists, and a sandbox
// request is ErrUnavailable (transient, audited as not synced, as httpmw,
// grpcmw, redisroute and sqlroute say), not ErrNoTestDatabase "not in the
// route table", which told callers (and kafkamw.Run, which gives up on
// such messages) the sandbox had no test database for good. Through
// WithRoutes and through FromTable alike; once the table loads, the
// sandbox is served and one it does not know is ErrNoTestDatabase.
func TestRouteTableNotLoadedIsUnavailable(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	target, base := e.Target(t, "one"), e.Baseline(t)
	for name, mk := range map[string]func(*routes.Table) (dbroute.Provider, []dbroute.RouterOption){
		"WithRoutes": func(table *routes.Table) (dbroute.Provider, []dbroute.RouterOption) {
			p, err := dbroute.Static(map[string]string{"a": target, "b": target})
			if err != nil {
				t.Fatal(err)
			}
			return p, []dbroute.RouterOption{dbroute.WithRoutes(table)}
		},
		"FromTable": func(table *routes.Table) (dbroute.Provider, []dbroute.RouterOption) {
			return dbroute.FromTable(table), nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			rec, logger := audittest.New()
			table := routes.New()
			provider, opts := mk(table)
			r := pgtest.Router(t, base, provider, append(opts, dbroute.WithLogger(logger))...)
			insert := func(id string) error {
				_, err := r.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id)
				return err
			}
			if err := insert("a"); !errors.Is(err, dbroute.ErrUnavailable) || errors.Is(err, dbroute.ErrNoTestDatabase) {
				t.Errorf("a table that never loaded: %v, want ErrUnavailable (not ErrNoTestDatabase)", err)
			}
			var reasons []any
			for _, rc := range rec.Records() {
				if rc[pub.KeyDecision] == string(pub.Rejected) {
					reasons = append(reasons, rc[pub.KeyReason])
				}
			}
			if len(reasons) != 1 || reasons[0] != pub.ReasonNotSynced {
				t.Errorf("audit reasons %q, want one %q", reasons, pub.ReasonNotSynced)
			}
			if err := table.Update([]routes.Sandbox{{ID: "a", Database: target}}); err != nil {
				t.Fatal(err)
			}
			if err := insert("a"); err != nil {
				t.Errorf("after the table loaded: %v", err)
			}
			if err := insert("b"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
				t.Errorf("a sandbox the loaded table does not know: %v, want ErrNoTestDatabase", err)
			}
		})
	}
}
