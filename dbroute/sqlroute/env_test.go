package sqlroute_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// world is a guarded baseline database and two sandboxes' test databases
// ("a", "b") on one real server, each with an items table, and direct
// (unguarded, unrouted) handles on each to check what landed where.
type world struct {
	dialect  string
	baseline *sql.DB // guarded
	provider sqlroute.Provider
	direct   map[string]*sql.DB // "" (baseline), "a", "b"
	dsn      map[string]string  // their connection strings
	// q rewrites a statement written with ? placeholders for the dialect.
	q func(string) string
}

var sandboxes = []string{"a", "b"}

func mariadbWorld(t testing.TB, guard ...sqlroute.GuardOption) *world {
	t.Helper()
	e := mytest.Server(t)
	w := &world{dialect: "mariadb", direct: map[string]*sql.DB{}, dsn: map[string]string{}, q: func(s string) string { return s }}
	dsns := map[string]string{}
	for _, id := range append([]string{""}, sandboxes...) {
		name := e.Name("db" + id)
		e.CreateDB(t, name, mytest.ItemsDDL)
		w.direct[id] = e.Open(t, name)
		w.dsn[id] = e.DSN(name)
		if id != "" {
			dsns[id] = e.DSN(name)
		}
	}
	var err error
	if w.provider, err = sqlroute.StaticMySQL(dsns); err != nil {
		t.Fatal(err)
	}
	w.baseline = sql.OpenDB(sqlroute.Guard(e.Connector(t, e.Name("db")), guard...))
	mariadbConnector = func(t testing.TB) driver.Connector { return e.Connector(t, e.Name("db")) }
	t.Cleanup(func() { w.baseline.Close() })
	return w
}

func postgresWorld(t testing.TB, guard ...sqlroute.GuardOption) *world {
	t.Helper()
	e := pgtest.Server(t)
	w := &world{dialect: "postgres", direct: map[string]*sql.DB{}, dsn: map[string]string{}, q: dollars}
	dsns := map[string]string{}
	var baseDSN string
	for _, id := range append([]string{""}, sandboxes...) {
		dsn := e.CreateDB(t, e.Name("db"+id), pgtest.ItemsDDL)
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		w.direct[id] = db
		w.dsn[id] = dsn
		if id == "" {
			baseDSN = dsn
		} else {
			dsns[id] = dsn
		}
	}
	p, err := dbroute.Static(dsns)
	if err != nil {
		t.Fatal(err)
	}
	w.provider = sqlroute.Postgres(p)
	cfg, err := pgx.ParseConfig(baseDSN)
	if err != nil {
		t.Fatal(err)
	}
	w.baseline = sql.OpenDB(sqlroute.Guard(stdlib.GetConnector(*cfg), guard...))
	t.Cleanup(func() { w.baseline.Close() })
	return w
}

// worlds runs f on each server.
func worlds(t *testing.T, f func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world)) {
	t.Run("mariadb", func(t *testing.T) { f(t, mariadbWorld) })
	t.Run("postgres", func(t *testing.T) { f(t, postgresWorld) })
}

// dollars numbers ? placeholders as $1, $2...
func dollars(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (w *world) router(t testing.TB, opts ...sqlroute.RouterOption) *sqlroute.Router {
	t.Helper()
	r, err := sqlroute.New(w.baseline, w.provider, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// count returns how many items of owner the database of id holds.
func (w *world) count(t testing.TB, id, owner string) int {
	t.Helper()
	var n int
	if err := w.direct[id].QueryRowContext(context.Background(), w.q("SELECT COUNT(*) FROM items WHERE owner = ?"), owner).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// total returns how many items the database of id holds.
func (w *world) total(t testing.TB, id string) int {
	t.Helper()
	var n int
	if err := w.direct[id].QueryRowContext(context.Background(), "SELECT COUNT(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var sandboxCtx = pgtest.SandboxCtx

// mariadbConnector is an unguarded connector of the last mariadbWorld's
// baseline database (for the benchmarks).
var mariadbConnector func(t testing.TB) driver.Connector
