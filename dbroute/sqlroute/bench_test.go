package sqlroute_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
)

// nullConnector is a driver that answers every statement at once without
// I/O, so that the benchmarks and allocation tests measure the router and
// the guard, not a server's round trip (the real-server benchmarks are
// beside them).
type nullConnector struct{}

func (nullConnector) Connect(context.Context) (driver.Conn, error) { return nullConn{}, nil }
func (nullConnector) Driver() driver.Driver                        { return nil }

type nullConn struct{}

func (nullConn) Prepare(string) (driver.Stmt, error) { return nil, driver.ErrSkip }
func (nullConn) Close() error                        { return nil }
func (nullConn) Begin() (driver.Tx, error)           { return nullConn{}, nil }
func (nullConn) Commit() error                       { return nil }
func (nullConn) Rollback() error                     { return nil }
func (nullConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}
func (nullConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return &nullRows{}, nil
}

type nullRows struct{ done bool }

func (*nullRows) Columns() []string { return []string{"n"} }
func (*nullRows) Close() error      { return nil }
func (r *nullRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}

// nullDBs returns a bare and a guarded *sql.DB on the null driver, and a
// router over the guarded one.
func nullDBs(tb testing.TB) (bare, guarded *sql.DB, r *sqlroute.Router) {
	bare = sql.OpenDB(nullConnector{})
	guarded = sql.OpenDB(sqlroute.Guard(nullConnector{}))
	p, err := sqlroute.StaticMySQL(nil)
	if err != nil {
		tb.Fatal(err)
	}
	r, err = sqlroute.New(guarded, p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close(); guarded.Close(); bare.Close() })
	return bare, guarded, r
}

// execer is the method the benchmarks and allocation tests call.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// The router's baseline path allocates nothing beyond what the bare
// *sql.DB allocates for the same statement.
func TestBaselinePathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under the race detector (it drops sync.Pool items at random); the test runs without -race")
	}
	bare, guarded, r := nullDBs(t)
	ctx := context.Background()
	allocs := func(e execer) float64 {
		return testing.AllocsPerRun(200, func() {
			if _, err := e.ExecContext(ctx, "UPDATE t SET n = ?", 1); err != nil {
				t.Fatal(err)
			}
		})
	}
	b, g, rt := allocs(bare), allocs(guarded), allocs(r)
	if g != b || rt != b {
		t.Errorf("allocations per ExecContext: bare %v, guarded %v, router over guarded %v; want them equal", b, g, rt)
	}
}

// BenchmarkBaselineOverhead runs the same statement on the bare *sql.DB,
// on the guarded one, and through the router (over the guarded one)
// without a sandbox: on the null driver (the overhead itself) and on the
// real MariaDB server (the overhead next to a round trip).
func BenchmarkBaselineOverhead(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, e execer, q string) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.ExecContext(ctx, q, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	bare, guarded, r := nullDBs(b)
	q := "UPDATE t SET n = ?"
	b.Run("null/bare", func(b *testing.B) { run(b, bare, q) })
	b.Run("null/guarded", func(b *testing.B) { run(b, guarded, q) })
	b.Run("null/router", func(b *testing.B) { run(b, r, q) })

	w := mariadbWorld(b)
	rr := w.router(b)
	plain := sql.OpenDB(mariadbConnector(b))
	b.Cleanup(func() { plain.Close() })
	q = "DO ?"
	b.Run("mariadb/bare", func(b *testing.B) { run(b, plain, q) })
	b.Run("mariadb/guarded", func(b *testing.B) { run(b, w.baseline, q) })
	b.Run("mariadb/router", func(b *testing.B) { run(b, rr, q) })
}

// TestBaselinePathAllocsOnServers: on the real servers, a statement with
// an argument (which go-sql-driver/mysql makes database/sql prepare, exec
// and close) costs the guarded *sql.DB and the router no allocation more
// than the bare *sql.DB.
func TestBaselinePathAllocsOnServers(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under the race detector (it drops sync.Pool items at random); the test runs without -race")
	}
	ctx := context.Background()
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		bare := w.direct[""]
		r := w.router(t)
		q := w.q("SELECT COUNT(*) FROM items WHERE id > ?")
		allocs := func(name string, e execer) float64 {
			e.ExecContext(ctx, q, 1) // warm the pool
			return testing.AllocsPerRun(100, func() {
				if _, err := e.ExecContext(ctx, q, 1); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			})
		}
		b, g, rt := allocs("bare", bare), allocs("guarded", w.baseline), allocs("router", r)
		if g != b || rt != b {
			t.Errorf("allocations per ExecContext: bare %v, guarded %v, router over guarded %v; want them equal", b, g, rt)
		}
	})
}
