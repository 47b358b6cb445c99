package sqlroute_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
)

// Postgres adapts dbroute/provision's database per sandbox to pgx's
// stdlib: the sandbox's rows land in its provisioned database, and the
// adapter stays a Reclaimer, so Destroy closes the router's *sql.DB first
// and the next request provisions afresh.
func TestPostgresProvisioner(t *testing.T) {
	e := pgtest.Server(t)
	p, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	baseDSN := e.CreateDB(t, e.Name("base"), pgtest.ItemsDDL)
	cfg, err := pgx.ParseConfig(baseDSN)
	if err != nil {
		t.Fatal(err)
	}
	base := sql.OpenDB(sqlroute.Guard(stdlib.GetConnector(*cfg)))
	defer base.Close()
	r, err := sqlroute.New(base, sqlroute.Postgres(p))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := sandboxCtx("pr-3")
	for range 2 {
		if _, err := r.ExecContext(ctx, "INSERT INTO items (owner) VALUES ($1)", "pr-3"); err != nil {
			t.Fatal(err)
		}
	}
	name, _ := p.Name("pr-3")
	if n := pgtest.Count(t, e.DSN(name), "SELECT count(*) FROM items WHERE owner = 'pr-3'"); n != 2 {
		t.Errorf("sandbox database holds %d rows, want 2", n)
	}
	if n := pgtest.Count(t, baseDSN, "SELECT count(*) FROM items"); n != 0 {
		t.Errorf("baseline holds %d rows, want 0", n)
	}
	if err := p.Destroy(context.Background(), "pr-3"); err != nil {
		t.Fatalf("Destroy with the router's *sql.DB open: %v", err)
	}
	if _, err := r.ExecContext(ctx, "INSERT INTO items (owner) VALUES ($1)", "pr-3"); err != nil {
		t.Fatalf("after Destroy: %v", err)
	}
	if n := pgtest.Count(t, e.DSN(name), "SELECT count(*) FROM items"); n != 1 {
		t.Errorf("fresh sandbox database holds %d rows, want 1", n)
	}
}
