package dbroute_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The router resolves each context to a pool: the baseline without a
// sandbox, the sandbox's test database with one, and an error — never the
// baseline — for a sandbox without a test database. (Pools connect lazily:
// nothing here talks to a server.)
func ExampleNew() {
	ctx := context.Background()
	baseline, _ := pgxpool.New(ctx, "postgres://app@db-prod:5432/shop")
	defer baseline.Close()
	provider, _ := dbroute.Static(map[string]string{
		"pr-42": "postgres://app@db-test:5432/shop_pr_42",
	})
	router, err := dbroute.New(baseline, provider)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer router.Close()

	for _, ctx := range []context.Context{
		ctx,
		propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-42"}),
		propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-7"}),
	} {
		pool, err := router.Pool(ctx)
		switch {
		case errors.Is(err, dbroute.ErrNoTestDatabase):
			fmt.Println("refused:", err)
		case pool == baseline:
			fmt.Println("baseline")
		default:
			fmt.Println("test database", pool.Config().ConnConfig.Database)
		}
	}
	// Output:
	// baseline
	// test database shop_pr_42
	// refused: dbroute: no test database for the sandbox: sandbox "pr-7" has none configured
}

// Guard makes the baseline pool itself refuse sandbox contexts, for code
// that holds the raw pool. Here the hook is called directly; a real pool
// calls it on every acquisition, so every query method fails.
func ExampleGuard() {
	cfg, _ := pgxpool.ParseConfig("postgres://app@db-prod:5432/shop")
	dbroute.Guard(cfg)
	// baseline, err := pgxpool.NewWithConfig(ctx, cfg)

	sandbox := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	_, err := cfg.PrepareConn(sandbox, nil)
	fmt.Println(errors.Is(err, dbroute.ErrSandboxOnBaseline))
	fmt.Println(err)
	_, err = cfg.PrepareConn(context.Background(), nil)
	fmt.Println(err)
	// Output:
	// true
	// dbroute: sandbox context on the baseline pool: sandbox "pr-42" (the baseline database only serves production traffic)
	// <nil>
}

// GuardConn refuses statements, not only acquisitions: pgx runs each
// statement with the context its tracer returns, and for a sandbox
// context the guard returns one that is already done with the refusal as
// its error, so pgconn sends nothing. Here the tracer is called directly,
// as pgx would.
func ExampleGuardConn() {
	cfg, _ := pgx.ParseConfig("postgres://app@db-prod:5432/shop")
	dbroute.GuardConn(cfg)
	// conn, err := pgx.ConnectConfig(ctx, cfg)

	sandbox := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	stmt := cfg.Tracer.TraceQueryStart(sandbox, nil, pgx.TraceQueryStartData{SQL: "INSERT INTO orders ..."})
	fmt.Println(errors.Is(stmt.Err(), dbroute.ErrSandboxOnBaseline))
	stmt = cfg.Tracer.TraceQueryStart(context.Background(), nil, pgx.TraceQueryStartData{SQL: "INSERT INTO orders ..."})
	fmt.Println(stmt.Err())
	// Output:
	// true
	// <nil>
}

// FromTable reads each sandbox's test database from the route table, and
// follows it when the entry changes or expires.
func ExampleFromTable() {
	table, _ := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Database: "postgres://app@db-test:5432/shop_pr_42"},
	})
	baseline, _ := pgxpool.New(context.Background(), "postgres://app@db-prod:5432/shop")
	defer baseline.Close()
	router, _ := dbroute.New(baseline, dbroute.FromTable(table))
	defer router.Close()

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	pool, _ := router.Pool(ctx)
	fmt.Println(pool.Config().ConnConfig.Database)

	table.Update([]routes.Sandbox{{ID: "pr-42", Database: "postgres://app@db-test:5432/shop_pr_42_v2"}})
	pool, _ = router.Pool(ctx)
	fmt.Println(pool.Config().ConnConfig.Database)

	table.Update(nil)
	_, err := router.Pool(ctx)
	fmt.Println(err)
	// Output:
	// shop_pr_42
	// shop_pr_42_v2
	// dbroute: no test database for the sandbox: sandbox "pr-42" is not in the route table
}
