package dbroute_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
)

// calls returns, per query method, a function that runs it on q (a pool or
// a router) and inserts a row owned by owner where the method can write.
func calls(q pooler, owner string) map[string]func(ctx context.Context) error {
	insert := "INSERT INTO items (owner) VALUES ($1)"
	return map[string]func(ctx context.Context) error{
		"Exec": func(ctx context.Context) error {
			_, err := q.Exec(ctx, insert, owner)
			return err
		},
		"Query": func(ctx context.Context) error {
			rows, err := q.Query(ctx, insert+" RETURNING id", owner)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		},
		"QueryRow": func(ctx context.Context) error {
			var id int64
			return q.QueryRow(ctx, insert+" RETURNING id", owner).Scan(&id)
		},
		"Begin": func(ctx context.Context) error {
			tx, err := q.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, insert, owner); err != nil {
				tx.Rollback(ctx)
				return err
			}
			return tx.Commit(ctx)
		},
		"BeginTx": func(ctx context.Context) error {
			tx, err := q.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, insert, owner); err != nil {
				tx.Rollback(ctx)
				return err
			}
			return tx.Commit(ctx)
		},
		"SendBatch": func(ctx context.Context) error {
			b := &pgx.Batch{}
			b.Queue(insert, owner)
			br := q.SendBatch(ctx, b)
			_, err := br.Exec()
			return errors.Join(err, br.Close())
		},
		"CopyFrom": func(ctx context.Context) error {
			_, err := q.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"owner"}, pgx.CopyFromRows([][]any{{owner}}))
			return err
		},
		"Acquire": func(ctx context.Context) error {
			c, err := q.Acquire(ctx)
			if err != nil {
				return err
			}
			defer c.Release()
			_, err = c.Exec(ctx, insert, owner)
			return err
		},
		"AcquireFunc": func(ctx context.Context) error {
			return q.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
				_, err := c.Exec(ctx, insert, owner)
				return err
			})
		},
		"Ping": func(ctx context.Context) error { return q.Ping(ctx) },
	}
}

// writers is how many rows a successful run of calls writes.
const writers = 9

// pooler is the query surface both *pgxpool.Pool and *dbroute.Router have.
type pooler interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
	BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
	AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error
	Ping(ctx context.Context) error
}

var (
	_ pooler = (*pgxpool.Pool)(nil)
	_ pooler = (*dbroute.Router)(nil)
)

func TestGuardRefusesSandboxOnEveryMethod(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	base := e.Baseline(t)
	sandbox := pgtest.SandboxCtx("pr-1")
	for name, call := range calls(base, "pr-1") {
		t.Run(name, func(t *testing.T) {
			err := call(sandbox)
			if !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
				t.Fatalf("err = %v, want ErrSandboxOnBaseline", err)
			}
		})
	}
	// Nothing was written, no connection leaked, and the pool still
	// serves production traffic.
	dsn, table := e.BaselineItems()
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table); n != 0 {
		t.Fatalf("baseline has %d rows from a sandbox context", n)
	}
	if n := base.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d connections still acquired after the refusals", n)
	}
	for name, call := range calls(base, "baseline") {
		if err := call(context.Background()); err != nil {
			t.Errorf("%s without a sandbox: %v", name, err)
		}
	}
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = 'baseline'"); n != writers {
		t.Errorf("baseline has %d rows, want %d", n, writers)
	}
}

func TestGuardKeepsExistingHooks(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	e.Baseline(t)
	for _, hook := range []string{"PrepareConn", "BeforeAcquire"} {
		t.Run(hook, func(t *testing.T) {
			cfg, err := pgxpool.ParseConfig(e.DSN(pgtest.BaselineDB()))
			if err != nil {
				t.Fatal(err)
			}
			cfg.MaxConns = 1
			var calls atomic.Int32
			refuse := errors.New("refused by the user's hook")
			switch hook {
			case "PrepareConn":
				cfg.PrepareConn = func(ctx context.Context, _ *pgx.Conn) (bool, error) {
					calls.Add(1)
					if ctx.Value(refuseKey{}) != nil {
						return true, refuse
					}
					return true, nil
				}
			case "BeforeAcquire":
				//lint:ignore SA1019 the guard must keep running a hook set with the deprecated field: this sets one
				cfg.BeforeAcquire = func(context.Context, *pgx.Conn) bool {
					calls.Add(1)
					return true
				}
			}
			dbroute.Guard(cfg)
			p, err := pgxpool.NewWithConfig(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("user's hook ran %d times for a baseline query, want 1", n)
			}
			if err := p.Ping(pgtest.SandboxCtx("pr-1")); !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
				t.Errorf("sandbox: err = %v", err)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("user's hook ran for a refused sandbox query")
			}
			if hook == "PrepareConn" {
				if err := p.Ping(context.WithValue(context.Background(), refuseKey{}, true)); !errors.Is(err, refuse) {
					t.Errorf("the user's hook error was lost: %v", err)
				}
			}
		})
	}
}

type refuseKey struct{}

func TestGuardNil(t *testing.T) {
	dbroute.Guard(nil) // must not panic
}
