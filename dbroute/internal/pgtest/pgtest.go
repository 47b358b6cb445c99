// Package pgtest is the real PostgreSQL server as the tests of dbroute and
// dbroute/provision see it: one run's shared databases, and a per-test
// environment whose every object carries the test's tag and is dropped
// when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Main runs the tests of a package (from its TestMain), then drops the
// shared test databases, closes the admin pool and checks for leaked
// goroutines.
func Main(m *testing.M) { goleak.VerifyTestMain(sharedCleanup{m}) }

type sharedCleanup struct{ m *testing.M }

func (c sharedCleanup) Run() int {
	code := c.m.Run()
	if err := closeShared(); err != nil {
		fmt.Fprintln(os.Stderr, "dbroute tests: cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres"

// shared is what the tests of one run share on the real server: the admin
// pool, a baseline database (each test gets a schema of its own in it) and
// a test database for the schema-per-sandbox provider. Creating databases
// is slow, so tests create only the ones they are about.
var shared struct {
	once     sync.Once
	err      error
	url      string
	admin    *pgxpool.Pool
	run      string // random, in the name of everything the run creates
	tests    atomic.Int32
	baseline string
	schemas  string
}

func setup() error {
	shared.url = os.Getenv("SANDBOXKIT_TEST_DATABASE_URL")
	if shared.url == "" {
		shared.url = defaultDatabaseURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(shared.url)
	if err != nil {
		return fmt.Errorf("SANDBOXKIT_TEST_DATABASE_URL: %w", err)
	}
	cfg.MaxConns = 4
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return err
	}
	b := make([]byte, 4)
	rand.Read(b)
	shared.admin = admin
	shared.run = hex.EncodeToString(b)
	shared.baseline = "x" + shared.run + "_baseline"
	shared.schemas = "x" + shared.run + "_schemas"
	for _, db := range []string{shared.baseline, shared.schemas} {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			return err
		}
	}
	return nil
}

func closeShared() error {
	if shared.admin == nil {
		return nil
	}
	defer shared.admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, _ := shared.admin.Query(ctx, "SELECT datname FROM pg_database WHERE position($1 in datname) > 0", shared.run)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, db := range names {
		if _, derr := shared.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return err
}

// env is one test's view of the real PostgreSQL server. Everything the test
// or the code under test creates has the test's tag in its name, and is
// dropped when the test ends.
type Env struct {
	URL     string
	Admin   *pgxpool.Pool
	Run     string
	Tag     string // run + test number + "_": in every name the test makes
	Prefix  string // provisioner prefix: "t" + tag
	BaseSch string // the test's schema in the shared baseline database
	base    *pgxpool.Pool
}

// Server connects to the test server, or skips the test loudly (fails it
// when SANDBOXKIT_REQUIRE_DATABASE=1).
func Server(t testing.TB) *Env {
	t.Helper()
	shared.once.Do(func() { shared.err = setup() })
	if err := shared.err; err != nil {
		if os.Getenv("SANDBOXKIT_REQUIRE_DATABASE") == "1" {
			t.Fatalf("PostgreSQL unreachable (SANDBOXKIT_REQUIRE_DATABASE=1): %v", err)
		}
		t.Skipf("SKIPPING: PostgreSQL unreachable: %v (set SANDBOXKIT_TEST_DATABASE_URL, or SANDBOXKIT_REQUIRE_DATABASE=1 to fail)", err)
	}
	tag := fmt.Sprintf("%s%03x_", shared.run, shared.tests.Add(1))
	e := &Env{URL: shared.url, Admin: shared.admin, Run: shared.run, Tag: tag, Prefix: "t" + tag, BaseSch: "b" + tag}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, db := range e.DatabasesMatching(t, e.Tag) {
			wg.Go(func() {
				if _, err := e.Admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
					t.Errorf("cleanup: dropping %s: %v", db, err)
				}
			})
		}
		wg.Wait()
		if left := e.DatabasesMatching(t, e.Tag); len(left) > 0 {
			t.Errorf("cleanup: databases left behind: %v", left)
		}
		for db, match := range map[string]string{shared.schemas: e.Tag, shared.baseline: e.Tag} {
			conn, err := pgx.Connect(ctx, e.DSN(db))
			if err != nil {
				t.Errorf("cleanup: %v", err)
				continue
			}
			rows, _ := conn.Query(ctx, "SELECT nspname FROM pg_namespace WHERE position($1 in nspname) > 0", match)
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, n := range names {
				if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{n}.Sanitize()+" CASCADE"); err != nil {
					t.Errorf("cleanup: dropping schema %s: %v", n, err)
				}
			}
			if err != nil {
				t.Errorf("cleanup: %v", err)
			}
			conn.Close(ctx)
		}
	})
	return e
}

// Name is the name of a database the test itself creates: it has the
// test's tag but not the provider prefix.
func (e *Env) Name(s string) string { return "x" + e.Tag + s }

// DSN is the server's connection string with database db.
func (e *Env) DSN(db string) string {
	if strings.HasPrefix(e.URL, "postgres://") || strings.HasPrefix(e.URL, "postgresql://") {
		u, err := url.Parse(e.URL)
		if err == nil {
			u.Path = "/" + db
			return u.String()
		}
	}
	return e.URL + " dbname='" + db + "'"
}

// Exec runs sql on the admin pool, failing the test on error.
func (e *Env) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := e.Admin.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// CreateDB creates database name, runs ddl in it, and returns its DSN.
func (e *Env) CreateDB(t testing.TB, name string, ddl ...string) string {
	t.Helper()
	e.Exec(t, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	dsn := e.DSN(name)
	if len(ddl) > 0 {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, s := range ddl {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	return dsn
}

// Baseline returns the test's guarded baseline pool: on a schema of its
// own, holding an items table, in the shared baseline database.
func (e *Env) Baseline(t testing.TB) *pgxpool.Pool {
	t.Helper()
	if e.base != nil {
		return e.base
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.DSN(shared.baseline))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sch := pgx.Identifier{e.BaseSch}.Sanitize()
	for _, q := range []string{"CREATE SCHEMA " + sch, "SET search_path TO " + sch, ItemsDDL} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cfg, err := pgxpool.ParseConfig(e.DSN(shared.baseline))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["search_path"] = sch
	dbroute.Guard(cfg)
	e.base, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.base.Close)
	return e.base
}

// BaselineItems returns the DSN and qualified items table of the baseline.
func (e *Env) BaselineItems() (dsn, table string) {
	return e.DSN(shared.baseline), pgx.Identifier{e.BaseSch, "items"}.Sanitize()
}

// DatabasesMatching lists the databases whose names contain s.
func (e *Env) DatabasesMatching(t testing.TB, s string) []string {
	t.Helper()
	rows, err := e.Admin.Query(context.Background(), "SELECT datname FROM pg_database WHERE position($1 in datname) > 0 ORDER BY 1", s)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// Databases lists the databases whose names start with the provider prefix.
func (e *Env) Databases(t testing.TB) []string {
	t.Helper()
	return slices.DeleteFunc(e.DatabasesMatching(t, e.Prefix), func(n string) bool { return !strings.HasPrefix(n, e.Prefix) })
}

// Count returns SELECT count(*) FROM table in the database dsn names, over
// a connection of its own.
func Count(t testing.TB, dsn, query string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// SandboxCtx is a context carrying sandbox id.
func SandboxCtx(id string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: "alice"})
}

// ItemsDDL creates the items table every test database holds.
const ItemsDDL = `CREATE TABLE items (id bigserial PRIMARY KEY, owner text NOT NULL, n int NOT NULL DEFAULT 0)`

// SchemasDB is the shared test database of the schema-per-sandbox
// provisioner and of test schemas.
func SchemasDB() string { return shared.schemas }

// BaselineDB is the shared baseline database.
func BaselineDB() string { return shared.baseline }

// ItemsMigration creates the items table, and counts its runs in applied.
func ItemsMigration(version string, applied *atomic.Int32) provision.Migration {
	return provision.Migration{
		Version: version,
		Apply: func(ctx context.Context, tx pgx.Tx) error {
			if applied != nil {
				applied.Add(1)
			}
			_, err := tx.Exec(ctx, ItemsDDL)
			return err
		},
	}
}

// Target creates schema name (with an items table) in the shared schemas
// database and returns a connection string that lands in it.
func (e *Env) Target(t testing.TB, name string) string {
	t.Helper()
	name = "s" + e.Tag + name
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.DSN(shared.schemas))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sch := pgx.Identifier{name}.Sanitize()
	for _, q := range []string{"CREATE SCHEMA " + sch, "SET search_path TO " + sch, ItemsDDL} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	dsn := WithSearchPath(t, e.DSN(shared.schemas), sch)
	// The providers take connection strings: check that pgx reads this one
	// as the schema in the schemas database, whichever form the server's
	// connection string has.
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("connection string of schema %s: %v", sch, err)
	}
	if got := cfg.ConnConfig.RuntimeParams["search_path"]; got != sch || cfg.ConnConfig.Database != shared.schemas {
		t.Fatalf("connection string of schema %s: pgx reads database %q, search_path %q", sch, cfg.ConnConfig.Database, got)
	}
	return dsn
}

// WithSearchPath adds the run-time parameter search_path=sch to dsn, a URL
// (as a query parameter) or a keyword/value connection string (as one
// more keyword).
func WithSearchPath(t testing.TB, dsn, sch string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("test database URL: %v", err)
		}
		q := u.Query()
		q.Set("search_path", sch)
		u.RawQuery = q.Encode()
		return u.String()
	}
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(sch)
	return dsn + " search_path='" + quoted + "'"
}

// TargetItems returns the DSN and qualified items table of Target name.
func (e *Env) TargetItems(name string) (dsn, table string) {
	return e.DSN(shared.schemas), pgx.Identifier{"s" + e.Tag + name, "items"}.Sanitize()
}

// DBState is what pg_database says about a database.
func (e *Env) DBState(t testing.TB, name string) (comment string, allow bool, limit int32, exists bool) {
	t.Helper()
	err := e.Admin.QueryRow(context.Background(), `SELECT coalesce(shobj_description(oid, 'pg_database'), ''), datallowconn, datconnlimit FROM pg_database WHERE datname = $1`, name).Scan(&comment, &allow, &limit)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return comment, allow, limit, true
}

// SmallPools keeps sandbox pools small: the server is shared.
func SmallPools() dbroute.RouterOption {
	return dbroute.WithPoolConfig(func(_ string, cfg *pgxpool.Config) { cfg.MaxConns = 3 })
}

// Router builds a router over base and p with small sandbox pools, closed
// when the test ends.
func Router(t testing.TB, base *pgxpool.Pool, p dbroute.Provider, opts ...dbroute.RouterOption) *dbroute.Router {
	t.Helper()
	r, err := dbroute.New(base, p, append([]dbroute.RouterOption{SmallPools()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// Router builds a router over the test's guarded baseline and p.
func (e *Env) Router(t testing.TB, p dbroute.Provider, opts ...dbroute.RouterOption) *dbroute.Router {
	t.Helper()
	return Router(t, e.Baseline(t), p, opts...)
}
