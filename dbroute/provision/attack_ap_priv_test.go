package provision_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// role creates a login role of the test with attrs (such as "CREATEDB"),
// dropped at the end of the test with the databases it owns (all of which
// carry the test's tag), and returns a connection string for it.
func role(t *testing.T, e *pgtest.Env, suffix, attrs string) string {
	t.Helper()
	name := e.Name(suffix)
	e.Exec(t, "CREATE ROLE "+pgx.Identifier{name}.Sanitize()+" LOGIN "+attrs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rows, _ := e.Admin.Query(ctx, "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = $1)", name)
		dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, db := range dbs {
			if !strings.Contains(db, e.Tag) {
				t.Errorf("role %s owns %s, which the test did not make", name, db)
				continue
			}
			if _, err := e.Admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if err == nil {
			_, err = e.Admin.Exec(ctx, "DROP ROLE "+pgx.Identifier{name}.Sanitize())
		}
		if err != nil {
			t.Errorf("cleanup: role %s: %v", name, err)
		}
	})
	return strings.Replace(e.DSN("postgres"), "postgres@", name+"@", 1)
}

// A role that may not create databases gets a clear refusal, classed as
// ErrNoTestDatabase (not transient), and leaves nothing behind; a role
// that may create them but does not own the ones another role made cannot
// drop those: Destroy and Reap say so, and the databases keep their data.
// A role with CREATEDB alone runs the whole cycle on its own databases.
func TestAttackUnprivilegedRole(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	ctx := context.Background()
	clk := clocktest.New()
	newProvider := func(dsn string) *provision.DatabasePerSandbox {
		p, err := provision.NewDatabasePerSandbox(dsn, pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix),
			provision.WithClock(clk.Now), provision.WithReapGrace(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}

	weak := newProvider(role(t, e, "weak", ""))
	_, err := weak.Open(ctx, "pr-1", "")
	if !errors.Is(err, dbroute.ErrNoTestDatabase) || errors.Is(err, dbroute.ErrUnavailable) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Open without CREATEDB: err = %v, want ErrNoTestDatabase saying permission denied", err)
	}
	if got := e.DatabasesMatching(t, e.Prefix); len(got) != 0 {
		t.Errorf("Open without CREATEDB left %v", got)
	}

	// The superuser's provisioner makes pr-1 and its template.
	super := newProvider(e.URL)
	r := e.Router(t, super)
	if _, err := r.Exec(pgtest.SandboxCtx("pr-1"), "INSERT INTO items (owner) VALUES ('pr-1')"); err != nil {
		t.Fatal(err)
	}
	creator := newProvider(role(t, e, "creator", "CREATEDB"))
	if err := creator.Destroy(ctx, "pr-1"); err == nil || !strings.Contains(err.Error(), "must be owner") {
		t.Errorf("Destroy of another role's database: err = %v, want one saying it must be the owner", err)
	}
	clk.Advance(time.Hour)
	table, err := routes.NewStatic(nil, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if dropped, err := creator.Reap(ctx, table); len(dropped) != 0 || err == nil || !strings.Contains(err.Error(), "must be owner") {
		t.Errorf("Reap of another role's database = %v, %v; want nothing dropped and an error saying why", dropped, err)
	}
	if n := pgtest.Count(t, e.DSN(expectedName(e, "pr-1")), "SELECT count(*) FROM items"); n != 1 {
		t.Errorf("pr-1 has %d rows after the failed drops, want 1", n)
	}
	// Cloning the superuser's template is refused too, clearly.
	if _, err := creator.Open(ctx, "pr-2", ""); !errors.Is(err, dbroute.ErrNoTestDatabase) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Open cloning another role's template: err = %v, want ErrNoTestDatabase saying permission denied", err)
	}
	if _, _, _, exists := e.DBState(t, expectedName(e, "pr-2")); exists {
		t.Error("the refused clone left a database")
	}

	// A CREATEDB role with its own prefix: the whole cycle.
	own, err := provision.NewDatabasePerSandbox(role(t, e, "own", "CREATEDB"), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix+"o_"),
		provision.WithClock(clk.Now), provision.WithReapGrace(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ro := e.Router(t, own)
	for _, id := range []string{"pr-3", "pr-4"} {
		if _, err := ro.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id); err != nil {
			t.Fatalf("CREATEDB role, %s: %v", id, err)
		}
	}
	if err := own.Destroy(ctx, "pr-3"); err != nil {
		t.Errorf("CREATEDB role, Destroy: %v", err)
	}
	clk.Advance(time.Hour)
	if dropped, err := own.Reap(ctx, table); err != nil || !slices.Equal(dropped, []string{"pr-4"}) {
		t.Errorf("CREATEDB role, Reap = %v, %v; want [pr-4]", dropped, err)
	}
}
