package sqlroute_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
)

// Every method of the router sends a baseline context to the baseline
// and a sandbox context to its test database, and nowhere else.
func TestRouterMethods(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		r := w.router(t)
		ins := w.q("INSERT INTO items (owner, n) VALUES (?, ?)")
		for _, id := range append([]string{""}, sandboxes...) {
			ctx := context.Background()
			if id != "" {
				ctx = sandboxCtx(id)
			}
			owner := "by-" + id
			if _, err := r.ExecContext(ctx, ins, owner, 1); err != nil {
				t.Fatalf("%q: ExecContext: %v", id, err)
			}
			tx, err := r.BeginTx(ctx, nil)
			if err != nil {
				t.Fatalf("%q: BeginTx: %v", id, err)
			}
			if _, err := tx.ExecContext(ctx, ins, owner, 2); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			c, err := r.Conn(ctx)
			if err != nil {
				t.Fatalf("%q: Conn: %v", id, err)
			}
			if _, err := c.ExecContext(ctx, ins, owner, 3); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if err := r.PingContext(ctx); err != nil {
				t.Fatalf("%q: PingContext: %v", id, err)
			}
			var n int
			if err := r.QueryRowContext(ctx, w.q("SELECT COUNT(*) FROM items WHERE owner = ?"), owner).Scan(&n); err != nil || n != 3 {
				t.Fatalf("%q: QueryRowContext: %d, %v; want 3", id, n, err)
			}
			rows, err := r.QueryContext(ctx, "SELECT DISTINCT owner FROM items")
			if err != nil {
				t.Fatal(err)
			}
			var owners []string
			for rows.Next() {
				var o string
				if err := rows.Scan(&o); err != nil {
					t.Fatal(err)
				}
				owners = append(owners, o)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if len(owners) != 1 || owners[0] != owner {
				t.Errorf("%q: QueryContext sees owners %v, want only %q", id, owners, owner)
			}
		}
		for _, id := range append([]string{""}, sandboxes...) {
			if got, want := w.total(t, id), 3; got != want || w.count(t, id, "by-"+id) != want {
				t.Errorf("database of %q holds %d rows, want %d of its own", id, got, want)
			}
		}
	})
}

// Each class of failure is the dbroute sentinel, on every method,
// QueryRowContext's row included.
func TestRouterErrors(t *testing.T) {
	w := mariadbWorld(t)
	if _, err := sqlroute.StaticMySQL(map[string]string{"nodsn": "root@tcp(127.0.0.1:3306)/"}); !errors.Is(err, dbroute.ErrConfig) {
		t.Errorf("StaticMySQL without a database: %v, want ErrConfig", err)
	}
	unknown, err := sqlroute.StaticMySQL(map[string]string{
		"nodb": "root@tcp(127.0.0.1:3306)/sandboxkit_no_such_database",
		"down": "root@tcp(127.0.0.1:1)/x?timeout=2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := sqlroute.New(w.baseline, unknown)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	calls := map[string]func(ctx context.Context) error{
		"ExecContext": func(ctx context.Context) error { _, err := r.ExecContext(ctx, "SELECT 1"); return err },
		"QueryContext": func(ctx context.Context) error {
			rows, err := r.QueryContext(ctx, "SELECT 1")
			if err == nil {
				rows.Close()
			}
			return err
		},
		"QueryRowContext": func(ctx context.Context) error { var n int; return r.QueryRowContext(ctx, "SELECT 1").Scan(&n) },
		"BeginTx": func(ctx context.Context) error {
			tx, err := r.BeginTx(ctx, nil)
			if err == nil {
				tx.Rollback()
			}
			return err
		},
		"Conn": func(ctx context.Context) error {
			c, err := r.Conn(ctx)
			if err == nil {
				c.Close()
			}
			return err
		},
		"PingContext": func(ctx context.Context) error { return r.PingContext(ctx) },
	}
	cases := []struct {
		id   string
		want error
	}{
		{"unconfigured", dbroute.ErrNoTestDatabase},
		{"nodb", dbroute.ErrNoTestDatabase},
		{"down", dbroute.ErrUnavailable},
	}
	for _, c := range cases {
		for name, call := range calls {
			err := call(sandboxCtx(c.id))
			if !errors.Is(err, c.want) {
				t.Errorf("%s, sandbox %q: %v, want %v", name, c.id, err, c.want)
			}
		}
	}
	r.Close()
	for name, call := range calls {
		err := call(sandboxCtx("nodb"))
		if name == "QueryRowContext" && err != nil {
			continue // documented: database/sql's "database is closed"
		}
		if !errors.Is(err, dbroute.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if w.total(t, "") != 0 {
		t.Error("a refused sandbox request wrote to the baseline")
	}
}

// With one slot, a sandbox whose *sql.DB is in use (an open transaction)
// is not evicted: another sandbox waits, and fails with ErrPoolLimit when
// its context ends; once the transaction ends, it gets the slot.
func TestRouterPoolLimit(t *testing.T) {
	w := mariadbWorld(t)
	r := w.router(t, sqlroute.WithMaxPools(1))
	tx, err := r.BeginTx(sandboxCtx("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(sandboxCtx("b"), 50e6)
	defer cancel()
	_, err = r.ExecContext(ctx, "SELECT 1")
	if !errors.Is(err, dbroute.ErrPoolLimit) || !errors.Is(err, dbroute.ErrUnavailable) {
		t.Fatalf("second sandbox with the slot in use: %v, want ErrPoolLimit and ErrUnavailable", err)
	}
	if _, err := tx.ExecContext(sandboxCtx("a"), "INSERT INTO items (owner) VALUES ('a')"); err != nil {
		t.Fatalf("the transaction of the first sandbox was broken: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ExecContext(sandboxCtx("b"), "INSERT INTO items (owner) VALUES ('b')"); err != nil {
		t.Fatalf("second sandbox once the slot is free: %v", err)
	}
	if w.count(t, "a", "a") != 1 || w.count(t, "b", "b") != 1 || w.total(t, "") != 0 {
		t.Error("rows not where they belong")
	}
}

func TestNewConfig(t *testing.T) {
	w := mariadbWorld(t)
	cases := map[string]struct {
		base *sql.DB
		p    sqlroute.Provider
		opts []sqlroute.RouterOption
	}{
		"nil baseline":     {nil, w.provider, nil},
		"nil provider":     {w.baseline, nil, nil},
		"WithMaxPools(0)":  {w.baseline, w.provider, []sqlroute.RouterOption{sqlroute.WithMaxPools(0)}},
		"WithIdleTimeout":  {w.baseline, w.provider, []sqlroute.RouterOption{sqlroute.WithIdleTimeout(-1)}},
		"WithOpenTimeout0": {w.baseline, w.provider, []sqlroute.RouterOption{sqlroute.WithOpenTimeout(0)}},
		// A nil table would resolve every sandbox, not none (as dbroute's).
		"WithRoutes(nil)": {w.baseline, w.provider, []sqlroute.RouterOption{sqlroute.WithRoutes(nil)}},
	}
	for name, c := range cases {
		if _, err := sqlroute.New(c.base, c.p, c.opts...); !errors.Is(err, dbroute.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	r, err := sqlroute.New(w.baseline, w.provider, nil, sqlroute.WithLogger(nil), nil)
	if err != nil {
		t.Fatalf("nil options: %v", err)
	}
	r.Close()
	if sqlroute.Guard(nil) != nil {
		t.Error("Guard(nil) is not nil")
	}
}

// A test database that is the baseline database, as the servers report
// them, is refused whatever the connection string says: another host
// name, or another address (a TCP proxy) in front of the same server.
func TestNotTheBaseline(t *testing.T) {
	t.Run("mariadb", func(t *testing.T) {
		w := mariadbWorld(t)
		e := mytest.Server(t)
		var baseDB string
		if err := w.direct[""].QueryRowContext(context.Background(), "SELECT DATABASE()").Scan(&baseDB); err != nil {
			t.Fatal(err)
		}
		proxy := e.NewProxy(t)
		local := e.Config(baseDB)
		local.Addr = strings.Replace(local.Addr, "127.0.0.1", "localhost", 1)
		p, err := sqlroute.StaticMySQL(map[string]string{
			"proxied": proxy.DSN(e, baseDB),
			"local":   local.FormatDSN(),
			"other":   w.dsn["a"],
		})
		if err != nil {
			t.Fatal(err)
		}
		checkNotBaseline(t, w, p)
	})
	t.Run("postgres", func(t *testing.T) {
		w := postgresWorld(t)
		p, err := dbroute.Static(map[string]string{
			"local": strings.Replace(w.dsn[""], "127.0.0.1", "localhost", 1),
			"other": w.dsn["a"],
		})
		if err != nil {
			t.Fatal(err)
		}
		checkNotBaseline(t, w, sqlroute.Postgres(p))
	})
}

func checkNotBaseline(t *testing.T, w *world, p sqlroute.Provider) {
	t.Helper()
	r, err := sqlroute.New(w.baseline, p, sqlroute.WithMaxPools(8))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, id := range []string{"proxied", "local"} {
		if w.dialect == "postgres" && id == "proxied" {
			continue
		}
		_, err := r.ExecContext(sandboxCtx(id), w.q("INSERT INTO items (owner) VALUES (?)"), id)
		if !errors.Is(err, dbroute.ErrNoTestDatabase) {
			t.Errorf("%s spelling of the baseline: %v, want ErrNoTestDatabase", id, err)
		}
	}
	if _, err := r.ExecContext(sandboxCtx("other"), w.q("INSERT INTO items (owner) VALUES (?)"), "other"); err != nil {
		t.Errorf("another database on the same server: %v", err)
	}
	if n := w.total(t, ""); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline", n)
	}
}
