package provision_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// DROP SCHEMA ... CASCADE drops whatever depends on the schema, wherever
// it is: a view that someone else made over a sandbox's table in another
// schema of the shared test database, the foreign key of their table, a
// trigger of theirs calling a function in the sandbox's schema. Destroy
// and Reap must refuse, naming them, and drop nothing; once they are gone,
// the schema drops. (Failed before the fix: Destroy returned nil and the
// other schema's view, constraint and trigger were gone with the
// sandbox's.)
func TestAttackSchemaDependents(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	ctx := context.Background()
	clk := clocktest.New()
	p, err := provision.NewSchemaPerSandbox(e.DSN(pgtest.SchemasDB()), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix),
		provision.WithClock(clk.Now), provision.WithReapGrace(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Open(ctx, "pr-1", ""); err != nil {
		t.Fatal(err)
	}
	name, _ := p.Name("pr-1")
	schemaKind := kinds[slices.IndexFunc(kinds, func(k kind) bool { return k.name == "schema-per-sandbox" })]
	conn, err := pgx.Connect(ctx, e.DSN(pgtest.SchemasDB()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string) {
		t.Helper()
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	sch := pgx.Identifier{name}.Sanitize()
	foreign := pgx.Identifier{e.Name("foreign")}.Sanitize()
	exec("CREATE SCHEMA " + foreign)
	exec("CREATE TABLE " + foreign + ".keep (item bigint CONSTRAINT keep_item_fkey REFERENCES " + sch + ".items (id))")
	exec("CREATE VIEW " + foreign + ".v AS SELECT * FROM " + sch + ".items")
	exec("CREATE FUNCTION " + sch + ".f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
	exec("CREATE TRIGGER keep_tr BEFORE INSERT ON " + foreign + ".keep FOR EACH ROW EXECUTE FUNCTION " + sch + ".f()")
	foreignObjects := func() int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_views WHERE schemaname = $1)
			+ (SELECT count(*) FROM pg_constraint WHERE conname = 'keep_item_fkey' AND connamespace = $1::regnamespace)
			+ (SELECT count(*) FROM pg_trigger WHERE tgname = 'keep_tr')`, e.Name("foreign")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	err = p.Destroy(ctx, "pr-1")
	for _, what := range []string{"view " + e.Name("foreign") + ".v", "keep_item_fkey", "keep_tr"} {
		if err == nil || !strings.Contains(err.Error(), what) {
			t.Errorf("Destroy with dependents outside the schema: err = %v, want it to name %s", err, what)
		}
	}
	clk.Advance(time.Hour)
	table, terr := routes.NewStatic(nil, routes.WithClock(clk.Now))
	if terr != nil {
		t.Fatal(terr)
	}
	if dropped, err := p.Reap(ctx, table); len(dropped) != 0 || err == nil {
		t.Errorf("Reap with dependents outside the schema = %v, %v; want nothing dropped, an error", dropped, err)
	}
	if n := foreignObjects(); n != 3 {
		t.Errorf("%d of the 3 foreign objects left", n)
	}
	if !hasObject(t, schemaKind, e, name) {
		t.Fatal("the schema is gone")
	}
	exec("DROP TABLE " + foreign + ".keep")
	exec("DROP VIEW " + foreign + ".v")
	if err := p.Destroy(ctx, "pr-1"); err != nil {
		t.Errorf("Destroy once nothing outside depends on the schema: %v", err)
	}
	if hasObject(t, schemaKind, e, name) {
		t.Error("the schema is still there")
	}
}
