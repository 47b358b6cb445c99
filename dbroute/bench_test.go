package dbroute_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// benchRouter is the set-up of the benchmarks: the guarded baseline pool,
// and a router over it with a database per sandbox, limited to the route
// table, whose test database for "bench" is created and warm.
func benchRouter(b *testing.B) (*pgxpool.Pool, *dbroute.Router) {
	b.Helper()
	e := server(b)
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "bench"}})
	if err != nil {
		b.Fatal(err)
	}
	p, err := dbroute.NewDatabasePerSandbox(e.url, itemsMigration("v1", nil), dbroute.WithPrefix(e.prefix))
	if err != nil {
		b.Fatal(err)
	}
	base := e.baseline(b)
	r := routerOn(b, base, p, dbroute.WithTable(table))
	// Warm: connections open, statements described.
	var one int
	for range 20 {
		for _, ctx := range []context.Context{context.Background(), sandboxCtx("bench")} {
			if err := r.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
	}
	return base, r
}

// BenchmarkQueryRow compares SELECT 1 directly on the baseline pool with
// the same query through the router, without and with a sandbox.
func BenchmarkQueryRow(b *testing.B) {
	base, r := benchRouter(b)
	baseline, sandbox := context.Background(), sandboxCtx("bench")
	run := func(b *testing.B, query func() error) {
		b.ReportAllocs()
		for b.Loop() {
			if err := query(); err != nil {
				b.Fatal(err)
			}
		}
	}
	var one int
	b.Run("pool", func(b *testing.B) {
		run(b, func() error { return base.QueryRow(baseline, "SELECT 1").Scan(&one) })
	})
	b.Run("router-baseline", func(b *testing.B) {
		run(b, func() error { return r.QueryRow(baseline, "SELECT 1").Scan(&one) })
	})
	b.Run("router-sandbox", func(b *testing.B) {
		run(b, func() error { return r.QueryRow(sandbox, "SELECT 1").Scan(&one) })
	})
}

// BenchmarkResolve measures the routing decision alone: which pool a
// context resolves to.
func BenchmarkResolve(b *testing.B) {
	_, r := benchRouter(b)
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{
		{"baseline", context.Background()},
		{"sandbox", sandboxCtx("bench")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Pool(c.ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
