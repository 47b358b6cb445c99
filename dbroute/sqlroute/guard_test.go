package sqlroute_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
)

// The guarded baseline refuses a sandbox context on every path a
// statement can take through database/sql — including connections,
// transactions and prepared statements obtained with a baseline context —
// writes nothing, keeps the connection usable, and audits each refusal.
func TestGuardEveryStatementPath(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		rec, logger := audittest.New()
		w := mk(t, sqlroute.WithLogger(logger))
		db := w.baseline
		bg := context.Background()
		sb := sandboxCtx("a")
		ins := w.q("INSERT INTO items (owner, n) VALUES (?, ?)")
		// Warm: a connection exists, so refusals are the statement's, not
		// the connect's.
		if err := db.PingContext(bg); err != nil {
			t.Fatal(err)
		}
		paths := map[string]func() error{
			"DB.ExecContext": func() error { _, err := db.ExecContext(sb, ins, "sandbox", 1); return err },
			"DB.QueryContext": func() error {
				rows, err := db.QueryContext(sb, "SELECT owner FROM items")
				if err == nil {
					rows.Close()
				}
				return err
			},
			"DB.QueryRowContext": func() error { var s string; return db.QueryRowContext(sb, "SELECT owner FROM items").Scan(&s) },
			"DB.BeginTx": func() error {
				tx, err := db.BeginTx(sb, nil)
				if err == nil {
					tx.Rollback()
				}
				return err
			},
			"DB.PrepareContext": func() error {
				st, err := db.PrepareContext(sb, ins)
				if err == nil {
					st.Close()
				}
				return err
			},
			"DB.PingContext": func() error { return db.PingContext(sb) },
			"Conn (baseline) then ExecContext (sandbox)": func() error {
				c, err := db.Conn(bg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, err = c.ExecContext(sb, ins, "sandbox", 2)
				if _, err2 := c.ExecContext(bg, "SELECT 1"); err2 != nil {
					t.Errorf("the connection is unusable after a refusal: %v", err2)
				}
				return err
			},
			"Conn (baseline) then QueryContext (sandbox)": func() error {
				c, err := db.Conn(bg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				rows, err := c.QueryContext(sb, "SELECT owner FROM items")
				if err == nil {
					rows.Close()
				}
				return err
			},
			"Conn (baseline) then BeginTx (sandbox)": func() error {
				c, err := db.Conn(bg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				tx, err := c.BeginTx(sb, nil)
				if err == nil {
					tx.Rollback()
				}
				return err
			},
			"Conn (baseline) then PrepareContext (sandbox)": func() error {
				c, err := db.Conn(bg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				st, err := c.PrepareContext(sb, ins)
				if err == nil {
					st.Close()
				}
				return err
			},
			"Tx (baseline) then ExecContext (sandbox), committed": func() error {
				tx, err := db.BeginTx(bg, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, err = tx.ExecContext(sb, ins, "sandbox", 3)
				if cerr := tx.Commit(); cerr != nil {
					t.Errorf("commit: %v", cerr)
				}
				return err
			},
			"Tx (baseline) then QueryRowContext (sandbox)": func() error {
				tx, err := db.BeginTx(bg, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				var s string
				return tx.QueryRowContext(sb, "SELECT owner FROM items").Scan(&s)
			},
			"Tx (baseline) then PrepareContext (sandbox)": func() error {
				tx, err := db.BeginTx(bg, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				_, err = tx.PrepareContext(sb, ins)
				return err
			},
			"Stmt (prepared baseline) then ExecContext (sandbox)": func() error {
				st, err := db.PrepareContext(bg, ins)
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				_, err = st.ExecContext(sb, "sandbox", 4)
				return err
			},
			"Stmt (prepared baseline) then QueryContext (sandbox)": func() error {
				st, err := db.PrepareContext(bg, "SELECT owner FROM items")
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				rows, err := st.QueryContext(sb)
				if err == nil {
					rows.Close()
				}
				return err
			},
			"Tx.StmtContext (sandbox) of a baseline Stmt": func() error {
				st, err := db.PrepareContext(bg, ins)
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				tx, err := db.BeginTx(bg, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				_, err = tx.StmtContext(sb, st).ExecContext(sb, "sandbox", 5)
				return err
			},
		}
		refusals := 0
		for name, path := range paths {
			err := path()
			if !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
				t.Errorf("%s: %v, want ErrSandboxOnBaseline", name, err)
			}
			refusals++
		}
		if n := w.count(t, "", "sandbox"); n != 0 {
			t.Errorf("%d sandbox rows reached the baseline", n)
		}
		// Baseline contexts pass, on every path.
		if _, err := db.ExecContext(bg, ins, "prod", 1); err != nil {
			t.Fatal(err)
		}
		st, err := db.PrepareContext(bg, ins)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.ExecContext(bg, "prod", 2); err != nil {
			t.Fatal(err)
		}
		st.Close()
		if n := w.count(t, "", "prod"); n != 2 {
			t.Errorf("baseline holds %d production rows, want 2", n)
		}
		got := 0
		for _, r := range rec.Records() {
			if r[pub.KeyDecision] == string(pub.Rejected) && r[pub.KeyProtocol] == pub.SQL && r[pub.KeyID] == "a" {
				got++
			}
		}
		if got < refusals {
			t.Errorf("%d audit records of refusals, want at least %d", got, refusals)
		}
	})
}

// Guard leaves the driver's argument conversion alone: values the driver
// checks itself (a driver.Valuer, time) reach it as without the guard.
func TestGuardArguments(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		q := "SELECT CAST(? AS SIGNED)"
		if w.dialect == "postgres" {
			q = "SELECT CAST($1 AS bigint)"
		}
		var n sql.NullInt64
		if err := w.baseline.QueryRowContext(context.Background(), q, sql.NullInt64{Int64: 7, Valid: true}).Scan(&n); err != nil || n.Int64 != 7 {
			t.Fatalf("%v, %v", n, err)
		}
	})
}
