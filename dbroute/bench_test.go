package dbroute_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/routes"
)

// benchRouter is the set-up of the benchmarks: the guarded baseline pool,
// and a router over it with a database per sandbox, limited to the route
// table, whose test database for "bench" is created and warm.
func benchRouter(b *testing.B) (*pgxpool.Pool, *dbroute.Router) {
	b.Helper()
	e := pgtest.Server(b)
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "bench"}})
	if err != nil {
		b.Fatal(err)
	}
	p, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
	if err != nil {
		b.Fatal(err)
	}
	base := e.Baseline(b)
	r := pgtest.Router(b, base, p, dbroute.WithRoutes(table))
	// Warm: connections open, statements described.
	var one int
	for range 20 {
		for _, ctx := range []context.Context{context.Background(), pgtest.SandboxCtx("bench")} {
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
	baseline, sandbox := context.Background(), pgtest.SandboxCtx("bench")
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
		{"sandbox", pgtest.SandboxCtx("bench")},
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

// BenchmarkBusySandboxes runs 16 busy sandboxes (a goroutine each, writing
// without pause through one router, schema per sandbox) with room for 16
// pools and with room for 4: the 4-pool figure must stay within 2x of the
// 16-pool one (no thrashing). busy=4 is the ceiling of pools=4: 4 busy
// sandboxes with room for 16 pools, the concurrency that 4 pools allow
// (each sandbox writes one statement at a time) without any swap. It
// reports swaps/kwrite (connections dialled per 1,000 writes, each a pool
// swap with pools=4) and in-flight (statements running on the server, on
// average, sampled each millisecond). It uses only API the previous
// version also has, so the two can be compared.
func BenchmarkBusySandboxes(b *testing.B) {
	e := pgtest.Server(b)
	base := e.Baseline(b)
	for _, c := range []struct {
		name             string
		sandboxes, pools int
	}{
		{"pools=16", 16, 16},
		{"pools=4", 16, 4},
		{"busy=4", 4, 16},
	} {
		b.Run(c.name, func(b *testing.B) {
			p, err := provision.NewSchemaPerSandbox(e.DSN(pgtest.SchemasDB()), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
			if err != nil {
				b.Fatal(err)
			}
			var dials, running atomic.Int64
			r := pgtest.Router(b, base, p, dbroute.WithMaxPools(c.pools), dbroute.WithPoolConfig(func(_ string, cfg *pgxpool.Config) {
				cfg.MaxConns = 3 // as pgtest.SmallPools
				cfg.AfterConnect = func(context.Context, *pgx.Conn) error { dials.Add(1); return nil }
				cfg.ConnConfig.Tracer = runningTracer{&running}
			}))
			ctxs := make([]context.Context, c.sandboxes)
			for i := range ctxs {
				ctxs[i] = pgtest.SandboxCtx(fmt.Sprintf("busy-%02d", i))
				if _, err := r.Exec(ctxs[i], "SELECT 1 FROM items"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			dials.Store(0)
			stop := make(chan struct{})
			var samples, sum atomic.Int64
			var sampler sync.WaitGroup
			sampler.Go(func() {
				t := time.NewTicker(time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						return
					case <-t.C:
						samples.Add(1)
						sum.Add(running.Load())
					}
				}
			})
			b.ResetTimer()
			var next, failed atomic.Int64
			var wg sync.WaitGroup
			for i := range c.sandboxes {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := r.Exec(ctxs[i], "INSERT INTO items (owner) VALUES ('busy')"); err != nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(stop)
			sampler.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
			b.ReportMetric(float64(failed.Load()), "failed")
			b.ReportMetric(1000*float64(dials.Load())/float64(b.N), "swaps/kwrite")
			if n := samples.Load(); n > 0 {
				b.ReportMetric(float64(sum.Load())/float64(n), "in-flight")
			}
		})
	}
}

// runningTracer counts the statements running on a pool's connections.
type runningTracer struct{ n *atomic.Int64 }

func (t runningTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t runningTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) { t.n.Add(-1) }
