package provision_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// kind is one provisioning strategy, with what the tests need to look at
// the server behind its back.
type kind struct {
	name string
	// newProvider builds a provider on e's server with prefix e.Prefix.
	newProvider func(t testing.TB, e *pgtest.Env, m provision.Migration, opts ...provision.ProvisionerOption) reclaimCloser
	// objects lists the databases or schemas whose names start with e.Prefix.
	objects func(t testing.TB, e *pgtest.Env) []string
	// foreign creates an object called name, with comment unless it is "",
	// holding a table keep with one row.
	foreign func(t testing.TB, e *pgtest.Env, name, comment string)
	// where returns the DSN and the qualified items table of the object
	// called name.
	where func(e *pgtest.Env, name string) (dsn, table string)
}

// expectedName is the documented naming rule, written out independently of
// the package.
func expectedName(e *pgtest.Env, id string) string {
	s := e.Prefix + strings.ReplaceAll(id, "-", "_")
	if len(s) <= 62 {
		return s
	}
	sum := sha256.Sum256([]byte(id))
	return s[:63-17] + "_" + hex.EncodeToString(sum[:8])
}

var kinds = []kind{
	{
		name: "database-per-sandbox",
		newProvider: func(t testing.TB, e *pgtest.Env, m provision.Migration, opts ...provision.ProvisionerOption) reclaimCloser {
			t.Helper()
			p, err := provision.NewDatabasePerSandbox(e.URL, m, append([]provision.ProvisionerOption{provision.WithPrefix(e.Prefix)}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		objects: func(t testing.TB, e *pgtest.Env) []string { return e.Databases(t) },
		foreign: func(t testing.TB, e *pgtest.Env, name, comment string) {
			e.CreateDB(t, name, `CREATE TABLE keep (v int)`, `INSERT INTO keep VALUES (1)`)
			if comment != "" {
				e.Exec(t, "COMMENT ON DATABASE "+pgx.Identifier{name}.Sanitize()+" IS '"+strings.ReplaceAll(comment, "'", "''")+"'")
			}
		},
		where: func(e *pgtest.Env, name string) (string, string) { return e.DSN(name), "items" },
	},
	{
		name: "schema-per-sandbox",
		newProvider: func(t testing.TB, e *pgtest.Env, m provision.Migration, opts ...provision.ProvisionerOption) reclaimCloser {
			t.Helper()
			p, err := provision.NewSchemaPerSandbox(e.DSN(pgtest.SchemasDB()), m, append([]provision.ProvisionerOption{provision.WithPrefix(e.Prefix)}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		objects: func(t testing.TB, e *pgtest.Env) []string {
			t.Helper()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, e.DSN(pgtest.SchemasDB()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			rows, _ := conn.Query(ctx, "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1", e.Prefix)
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			return names
		},
		foreign: func(t testing.TB, e *pgtest.Env, name, comment string) {
			t.Helper()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, e.DSN(pgtest.SchemasDB()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			s := pgx.Identifier{name}.Sanitize()
			stmts := []string{"CREATE SCHEMA " + s, "CREATE TABLE " + s + ".keep (v int)", "INSERT INTO " + s + ".keep VALUES (1)"}
			if comment != "" {
				stmts = append(stmts, "COMMENT ON SCHEMA "+s+" IS '"+strings.ReplaceAll(comment, "'", "''")+"'")
			}
			for _, q := range stmts {
				if _, err := conn.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
		},
		where: func(e *pgtest.Env, name string) (string, string) {
			return e.DSN(pgtest.SchemasDB()), pgx.Identifier{name, "items"}.Sanitize()
		},
	},
}

func TestProvision(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			clk := clocktest.New()
			var applied atomic.Int32
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", &applied), provision.WithClock(clk.Now))
			r := e.Router(t, p)
			long := strings.Repeat("a", 60) + "-01" // 63 bytes: the hashed form
			ids := []string{"pr-1", long}
			for i, id := range ids {
				for range i + 1 {
					if _, err := r.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id); err != nil {
						t.Fatalf("%s: %v", id, err)
					}
				}
			}
			if _, err := r.Exec(context.Background(), "INSERT INTO items (owner) VALUES ('baseline')"); err != nil {
				t.Fatal(err)
			}

			want := []string{expectedName(e, long), expectedName(e, "pr-1")}
			got := slices.DeleteFunc(k.objects(t, e), func(n string) bool { return strings.HasSuffix(n, "_template") })
			if !slices.Equal(got, want) {
				t.Fatalf("objects = %v, want %v", got, want)
			}
			for i, id := range ids {
				dsn, table := k.where(e, expectedName(e, id))
				if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = $1", id); n != i+1 {
					t.Errorf("%s: %d own rows, want %d", id, n, i+1)
				}
				if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner <> $1", id); n != 0 {
					t.Errorf("%s: %d rows of others", id, n)
				}
			}
			if dsn, table := e.BaselineItems(); pgtest.Count(t, dsn, "SELECT count(*) FROM "+table) != 1 {
				t.Errorf("baseline does not have exactly its one row")
			}
			wantApplied := int32(len(ids)) // one per schema
			if k.name == "database-per-sandbox" {
				wantApplied = 1 // the template, once
			}
			if n := applied.Load(); n != wantApplied {
				t.Errorf("migration applied %d times, want %d", n, wantApplied)
			}

			list, err := p.Provisioned(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var listed []string
			for _, pv := range list {
				listed = append(listed, pv.ID+"="+pv.Name)
				if !pv.Created.Equal(clk.Now()) {
					t.Errorf("%s created %v, want %v", pv.ID, pv.Created, clk.Now())
				}
			}
			wantListed := []string{long + "=" + want[0], "pr-1=" + want[1]}
			if !slices.Equal(listed, wantListed) {
				t.Errorf("Provisioned = %v, want %v", listed, wantListed)
			}
		})
	}
}

func TestProvisionRefusesInvalidIDs(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			r := e.Router(t, k.newProvider(t, e, pgtest.ItemsMigration("v1", nil)))
			for _, id := range []string{"", "Upper", "-x", "a_b", `x"; DROP DATABASE postgres; --`, strings.Repeat("a", 64)} {
				_, err := r.Exec(pgtest.SandboxCtx(id), "SELECT 1")
				if !errors.Is(err, dbroute.ErrNoTestDatabase) {
					t.Errorf("sandbox %q: err = %v, want ErrNoTestDatabase", id, err)
				}
			}
			if got := k.objects(t, e); len(got) != 0 {
				t.Errorf("objects created for invalid IDs: %v", got)
			}
		})
	}
}

func TestConcurrentCreation(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			base := e.Baseline(t)
			// Two routers with providers of their own: two processes.
			p1 := &countingProvider{reclaimCloser: k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))}
			p2 := &countingProvider{reclaimCloser: k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))}
			r1 := pgtest.Router(t, base, p1)
			r2 := pgtest.Router(t, base, p2)
			t.Cleanup(p1.Close)
			t.Cleanup(p2.Close)

			hammer := func(id string, routers ...*dbroute.Router) {
				t.Helper()
				const goroutines = 50
				start := make(chan struct{})
				var wg sync.WaitGroup
				errs := make(chan error, goroutines)
				for i := range goroutines {
					r := routers[i%len(routers)]
					wg.Go(func() {
						<-start
						if _, err := r.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner, n) VALUES ($1, $2)", id, i); err != nil {
							errs <- err
						}
					})
				}
				close(start)
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Errorf("%s: %v", id, err)
				}
				dsn, table := k.where(e, expectedName(e, id))
				if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = $1", id); n != goroutines {
					t.Errorf("%s: %d rows in its test database, want %d", id, n, goroutines)
				}
			}

			hammer("fresh-one", r1)
			if n := p1.opens.Load(); n != 1 {
				t.Errorf("one router, 50 goroutines: provider opened %d times, want 1", n)
			}
			hammer("fresh-two", r1, r2)
			if n1, n2 := p1.opens.Load(), p2.opens.Load(); n1 != 2 || n2 != 1 {
				t.Errorf("two routers: opens = %d, %d; want 2, 1 (one per router per sandbox)", n1, n2)
			}
			want := []string{expectedName(e, "fresh-one"), expectedName(e, "fresh-two")}
			got := slices.DeleteFunc(k.objects(t, e), func(n string) bool { return strings.HasSuffix(n, "_template") })
			if !slices.Equal(got, want) {
				t.Errorf("objects = %v, want exactly %v", got, want)
			}
			if dsn, table := e.BaselineItems(); pgtest.Count(t, dsn, "SELECT count(*) FROM "+table) != 0 {
				t.Errorf("baseline got sandbox rows")
			}
		})
	}
}

func TestForeignObjectsUntouched(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			clk := clocktest.New()
			table, err := routes.NewStatic([]routes.Sandbox{{ID: "ghost"}, {ID: "mine"}}, routes.WithClock(clk.Now))
			if err != nil {
				t.Fatal(err)
			}
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithClock(clk.Now), provision.WithReapGrace(time.Minute))
			r := e.Router(t, p, dbroute.WithRoutes(table))

			marker := func(id string) string {
				return fmt.Sprintf("sandboxkit/dbroute sandbox=%q created=%s", id, clk.Now().Add(-time.Hour).Format(time.RFC3339))
			}
			// (Comments that are almost markers are covered by TestMarkers;
			// databases are slow to make.)
			foreign := map[string]string{
				expectedName(e, "ghost"): "",                   // our name for a live sandbox, no marker
				expectedName(e, "alias"): marker("renamed"),    // a marker for another name
				e.Name("unprefixed"):     marker("unprefixed"), // a marker without the prefix
			}
			for name, comment := range foreign {
				k.foreign(t, e, name, comment)
			}
			if _, err := r.Exec(pgtest.SandboxCtx("mine"), "INSERT INTO items (owner) VALUES ('mine')"); err != nil {
				t.Fatal(err)
			}

			_, err = r.Exec(pgtest.SandboxCtx("ghost"), "SELECT 1")
			if !errors.Is(err, dbroute.ErrNoTestDatabase) || !errors.Is(err, dbroute.ErrNotOwned) {
				t.Errorf("using a foreign lookalike: err = %v, want ErrNoTestDatabase and ErrNotOwned", err)
			}
			for _, id := range []string{"ghost", "alias"} {
				if err := p.Destroy(context.Background(), id); !errors.Is(err, dbroute.ErrNotOwned) {
					t.Errorf("Destroy(%s) = %v, want ErrNotOwned", id, err)
				}
			}
			list, err := p.Provisioned(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].ID != "mine" {
				t.Errorf("Provisioned = %+v, want only mine", list)
			}
			// Everything but "mine" leaves the table and is old enough.
			if err := table.Update(nil); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Hour)
			dropped, err := p.Reap(context.Background(), table)
			if err != nil || !slices.Equal(dropped, []string{"mine"}) {
				t.Errorf("Reap = %v, %v; want [mine], nil", dropped, err)
			}
			for name := range foreign {
				dsn, tbl := k.where(e, name)
				tbl = strings.Replace(tbl, "items", "keep", 1)
				if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+tbl); n != 1 {
					t.Errorf("foreign %s: keep has %d rows, want 1", name, n)
				}
			}
			if got := k.objects(t, e); slices.Contains(got, expectedName(e, "mine")) {
				t.Errorf("mine was not dropped: %v", got)
			}
		})
	}
}

func TestDestroy(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))
			r := e.Router(t, p)
			ctx := context.Background()
			for _, id := range []string{"keep-me", "drop-me"} {
				if _, err := r.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id); err != nil {
					t.Fatal(err)
				}
			}
			// A transaction left open in the sandbox does not stop Destroy.
			tx, err := r.Begin(pgtest.SandboxCtx("drop-me"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO items (owner) VALUES ('drop-me')"); err != nil {
				t.Fatal(err)
			}
			if k.name == "schema-per-sandbox" {
				// DROP SCHEMA waits for the transaction's locks.
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Destroy(ctx, "drop-me"); err != nil {
				t.Fatal(err)
			}
			tx.Rollback(ctx) // fails for database-per-sandbox: its session was ended
			if got, want := k.objects(t, e), []string{expectedName(e, "keep-me")}; !slices.Equal(slices.DeleteFunc(got, func(n string) bool { return strings.HasSuffix(n, "_template") }), want) {
				t.Errorf("after Destroy: objects = %v, want %v", got, want)
			}
			if slices.Contains(r.OpenPools(), "drop-me") {
				t.Errorf("pool of the destroyed sandbox still open: %v", r.OpenPools())
			}
			if err := p.Destroy(ctx, "drop-me"); err != nil {
				t.Errorf("second Destroy = %v, want nil", err)
			}
			// The next request gets a fresh, empty test database.
			var n int
			if err := r.QueryRow(pgtest.SandboxCtx("drop-me"), "SELECT count(*) FROM items").Scan(&n); err != nil || n != 0 {
				t.Errorf("recreated sandbox: count = %d, %v; want 0, nil", n, err)
			}
			dsn, table := k.where(e, expectedName(e, "keep-me"))
			if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table); n != 1 {
				t.Errorf("keep-me has %d rows, want 1", n)
			}
		})
	}
}

func TestReap(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			clk := clocktest.New()
			t0 := clk.Now()
			expires := routes.Sandbox{ID: "expires", Expires: t0.Add(30 * time.Minute)}
			table, err := routes.NewStatic([]routes.Sandbox{{ID: "stays"}, expires}, routes.WithClock(clk.Now))
			if err != nil {
				t.Fatal(err)
			}
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithClock(clk.Now), provision.WithReapGrace(10*time.Minute))
			r := e.Router(t, p, dbroute.WithRoutes(table))
			insert := func(id string) error {
				_, err := r.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id)
				return err
			}
			for _, id := range []string{"stays", "expires"} {
				if err := insert(id); err != nil {
					t.Fatal(err)
				}
			}
			if err := insert("unknown"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
				t.Errorf("sandbox outside the table: err = %v, want ErrNoTestDatabase", err)
			}
			// "leaves" arrives 25 minutes in and leaves the table a minute
			// later.
			clk.Advance(25 * time.Minute)
			if err := table.Update([]routes.Sandbox{{ID: "stays"}, expires, {ID: "leaves"}}); err != nil {
				t.Fatal(err)
			}
			if err := insert("leaves"); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Minute)
			if err := table.Update([]routes.Sandbox{{ID: "stays"}, expires}); err != nil {
				t.Fatal(err)
			}
			// 26 minutes: "leaves" is gone but younger than the grace (a
			// lagging route table elsewhere must not cost it its data);
			// "expires" has not expired.
			dropped, err := p.Reap(context.Background(), table)
			if err != nil || len(dropped) != 0 {
				t.Fatalf("first Reap = %v, %v; want nothing", dropped, err)
			}
			// 40 minutes: "expires" expired, "leaves" is 15 minutes old.
			clk.Advance(14 * time.Minute)
			dropped, err = p.Reap(context.Background(), table)
			if err != nil || !slices.Equal(dropped, []string{"expires", "leaves"}) {
				t.Fatalf("second Reap = %v, %v; want [expires leaves]", dropped, err)
			}
			got := slices.DeleteFunc(k.objects(t, e), func(n string) bool { return strings.HasSuffix(n, "_template") })
			if want := []string{expectedName(e, "stays")}; !slices.Equal(got, want) {
				t.Errorf("objects after Reap = %v, want %v", got, want)
			}
			if got := r.OpenPools(); !slices.Equal(got, []string{"stays"}) {
				t.Errorf("open pools = %v, want [stays]", got)
			}
			dsn, tbl := k.where(e, expectedName(e, "stays"))
			if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+tbl); n != 1 {
				t.Errorf("stays has %d rows, want 1", n)
			}
			dropped, err = p.Reap(context.Background(), table)
			if err != nil || len(dropped) != 0 {
				t.Errorf("third Reap = %v, %v; want nothing", dropped, err)
			}
		})
	}
}

func TestMigrationFailure(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			bad := provision.Migration{Version: "broken", Apply: func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, pgtest.ItemsDDL); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "CREATE TABLE broken (")
				return err
			}}
			r := e.Router(t, k.newProvider(t, e, bad))
			_, err := r.Exec(pgtest.SandboxCtx("pr-1"), "SELECT 1")
			if !errors.Is(err, dbroute.ErrNoTestDatabase) || !strings.Contains(err.Error(), `migration "broken"`) {
				t.Fatalf("err = %v, want ErrNoTestDatabase naming the migration", err)
			}
			if got := k.objects(t, e); len(got) != 0 {
				t.Errorf("a failed migration left %v", got)
			}
			// A good migration afterwards works.
			r2 := e.Router(t, k.newProvider(t, e, pgtest.ItemsMigration("v1", nil)))
			if _, err := r2.Exec(pgtest.SandboxCtx("pr-1"), "INSERT INTO items (owner) VALUES ('pr-1')"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTemplateVersion(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	base := e.Baseline(t)
	ctx := context.Background()
	var v1, v2 atomic.Int32
	p1, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", &v1), provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	r1 := pgtest.Router(t, base, p1)
	if _, err := r1.Exec(pgtest.SandboxCtx("old"), "INSERT INTO items (owner) VALUES ('old')"); err != nil {
		t.Fatal(err)
	}
	tmplComment := func() string {
		var c string
		if err := e.Admin.QueryRow(ctx, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", p1.Template()).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := tmplComment(); c != `sandboxkit/dbroute template version="v1"` {
		t.Errorf("template comment = %q", c)
	}

	// A second process with the same version reuses the template.
	p1b, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", &v1), provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	r1b := pgtest.Router(t, base, p1b)
	if _, err := r1b.Exec(pgtest.SandboxCtx("same"), "INSERT INTO items (owner) VALUES ('same')"); err != nil {
		t.Fatal(err)
	}
	if n := v1.Load(); n != 1 {
		t.Errorf("v1 migration applied %d times, want 1", n)
	}

	// A new version rebuilds it.
	m2 := provision.Migration{Version: "v2", Apply: func(ctx context.Context, tx pgx.Tx) error {
		v2.Add(1)
		_, err := tx.Exec(ctx, pgtest.ItemsDDL+`; ALTER TABLE items ADD COLUMN note text DEFAULT 'v2'`)
		return err
	}}
	p2, err := provision.NewDatabasePerSandbox(e.URL, m2, provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	r2 := pgtest.Router(t, base, p2)
	if _, err := r2.Exec(pgtest.SandboxCtx("new"), "INSERT INTO items (owner) VALUES ('new')"); err != nil {
		t.Fatal(err)
	}
	var note string
	if err := r2.QueryRow(pgtest.SandboxCtx("new"), "SELECT note FROM items").Scan(&note); err != nil || note != "v2" {
		t.Errorf("new sandbox: note = %q, %v; want v2", note, err)
	}
	if c := tmplComment(); c != `sandboxkit/dbroute template version="v2"` {
		t.Errorf("template comment = %q after v2", c)
	}
	if n := v2.Load(); n != 1 {
		t.Errorf("v2 migration applied %d times, want 1", n)
	}
	// The old sandbox keeps its schema.
	if _, err := r1.Exec(pgtest.SandboxCtx("old"), "SELECT note FROM items"); err == nil {
		t.Error("old sandbox has the v2 column; it should keep the schema it was cloned with")
	}
}

// TestReapNeverLoadedTable: a route table that has never loaded from its
// source is empty, not a statement that no sandbox is live: Reap refuses
// it and drops nothing.
func TestReapNeverLoadedTable(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			live, err := routes.NewStatic([]routes.Sandbox{{ID: "live"}})
			if err != nil {
				t.Fatal(err)
			}
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithReapGrace(0))
			r := e.Router(t, p, dbroute.WithRoutes(live))
			if _, err := r.Exec(pgtest.SandboxCtx("live"), "INSERT INTO items (owner) VALUES ('live')"); err != nil {
				t.Fatal(err)
			}
			fresh := routes.New() // a source that has not answered yet
			dropped, err := p.Reap(context.Background(), fresh)
			if !errors.Is(err, dbroute.ErrUnavailable) || len(dropped) != 0 {
				t.Fatalf("Reap on a never-loaded table = %v, %v; want nothing and ErrUnavailable", dropped, err)
			}
			owned, err := p.Provisioned(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, o := range owned {
				found = found || o.ID == "live"
			}
			if !found {
				t.Fatalf("live's test database is gone after Reap on a never-loaded table: %v", owned)
			}
		})
	}
}
