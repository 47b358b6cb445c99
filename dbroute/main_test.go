package dbroute_test

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
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestMain checks for leaked goroutines after the shared test databases
// are dropped and the admin pool is closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(sharedCleanup{m}) }

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
type env struct {
	url     string
	admin   *pgxpool.Pool
	run     string
	tag     string // run + test number + "_": in every name the test makes
	prefix  string // provider prefix: "t" + tag
	baseSch string // the test's schema in the shared baseline database
	base    *pgxpool.Pool
}

// server connects to the test server, or skips the test loudly (fails it
// when SANDBOXKIT_REQUIRE_DATABASE=1).
func server(t testing.TB) *env {
	t.Helper()
	shared.once.Do(func() { shared.err = setup() })
	if err := shared.err; err != nil {
		if os.Getenv("SANDBOXKIT_REQUIRE_DATABASE") == "1" {
			t.Fatalf("PostgreSQL unreachable (SANDBOXKIT_REQUIRE_DATABASE=1): %v", err)
		}
		t.Skipf("SKIPPING: PostgreSQL unreachable: %v (set SANDBOXKIT_TEST_DATABASE_URL, or SANDBOXKIT_REQUIRE_DATABASE=1 to fail)", err)
	}
	tag := fmt.Sprintf("%s%03x_", shared.run, shared.tests.Add(1))
	e := &env{url: shared.url, admin: shared.admin, run: shared.run, tag: tag, prefix: "t" + tag, baseSch: "b" + tag}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, db := range e.databasesMatching(t, e.tag) {
			wg.Go(func() {
				if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
					t.Errorf("cleanup: dropping %s: %v", db, err)
				}
			})
		}
		wg.Wait()
		if left := e.databasesMatching(t, e.tag); len(left) > 0 {
			t.Errorf("cleanup: databases left behind: %v", left)
		}
		for db, match := range map[string]string{shared.schemas: e.tag, shared.baseline: e.tag} {
			conn, err := pgx.Connect(ctx, e.dsn(db))
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

// name is the name of a database the test itself creates: it has the
// test's tag but not the provider prefix.
func (e *env) name(s string) string { return "x" + e.tag + s }

// dsn is the server's connection string with database db.
func (e *env) dsn(db string) string {
	if strings.HasPrefix(e.url, "postgres://") || strings.HasPrefix(e.url, "postgresql://") {
		u, err := url.Parse(e.url)
		if err == nil {
			u.Path = "/" + db
			return u.String()
		}
	}
	return e.url + " dbname='" + db + "'"
}

func (e *env) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := e.admin.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// createDB creates database name, runs ddl in it, and returns its DSN.
func (e *env) createDB(t testing.TB, name string, ddl ...string) string {
	t.Helper()
	e.exec(t, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	dsn := e.dsn(name)
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

// baseline returns the test's guarded baseline pool: on a schema of its
// own, holding an items table, in the shared baseline database.
func (e *env) baseline(t testing.TB) *pgxpool.Pool {
	t.Helper()
	if e.base != nil {
		return e.base
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn(shared.baseline))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sch := pgx.Identifier{e.baseSch}.Sanitize()
	for _, q := range []string{"CREATE SCHEMA " + sch, "SET search_path TO " + sch, itemsDDL} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cfg, err := pgxpool.ParseConfig(e.dsn(shared.baseline))
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

// baselineItems returns the DSN and qualified items table of the baseline.
func (e *env) baselineItems() (dsn, table string) {
	return e.dsn(shared.baseline), pgx.Identifier{e.baseSch, "items"}.Sanitize()
}

func (e *env) databasesMatching(t testing.TB, s string) []string {
	t.Helper()
	rows, err := e.admin.Query(context.Background(), "SELECT datname FROM pg_database WHERE position($1 in datname) > 0 ORDER BY 1", s)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// databases lists the databases whose names start with the provider prefix.
func (e *env) databases(t testing.TB) []string {
	t.Helper()
	return slices.DeleteFunc(e.databasesMatching(t, e.prefix), func(n string) bool { return !strings.HasPrefix(n, e.prefix) })
}

// count returns SELECT count(*) FROM table in the database dsn names, over
// a connection of its own.
func count(t testing.TB, dsn, query string, args ...any) int {
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

func sandboxCtx(id string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: "alice"})
}

// smallPools keeps sandbox pools small: the server is shared.
func smallPools() dbroute.Option {
	return dbroute.WithPoolConfig(func(_ string, cfg *pgxpool.Config) { cfg.MaxConns = 3 })
}

// countingProvider counts Open calls of the provider it wraps.
type countingProvider struct {
	reclaimCloser
	opens atomic.Int32
}

type reclaimCloser interface {
	dbroute.Reclaimer
	Close()
}

func (c *countingProvider) Open(ctx context.Context, id, key string) (*pgxpool.Config, error) {
	c.opens.Add(1)
	return c.reclaimCloser.Open(ctx, id, key)
}

const itemsDDL = `CREATE TABLE items (id bigserial PRIMARY KEY, owner text NOT NULL, n int NOT NULL DEFAULT 0)`

// itemsMigration creates the items table, and counts its runs in applied.
func itemsMigration(version string, applied *atomic.Int32) dbroute.Migration {
	return dbroute.Migration{
		Version: version,
		Apply: func(ctx context.Context, tx pgx.Tx) error {
			if applied != nil {
				applied.Add(1)
			}
			_, err := tx.Exec(ctx, itemsDDL)
			return err
		},
	}
}
