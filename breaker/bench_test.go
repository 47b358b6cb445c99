package breaker_test

import (
	"context"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"golang.org/x/time/rate"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkAllow measures one admitted call (Allow and done) on a warm key,
// next to gobreaker's two-step breaker alone and with a rate limiter, the
// two pieces a key is built from.
func BenchmarkAllow(b *testing.B) {
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	budget := breaker.Budget{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1 << 20}

	b.Run("gobreaker", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{})
		b.ReportAllocs()
		for b.Loop() {
			done, err := cb.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(nil)
		}
	})
	b.Run("gobreaker+rate", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{})
		lim := rate.NewLimiter(rate.Limit(budget.Rate), budget.Burst)
		b.ReportAllocs()
		for b.Loop() {
			if !lim.AllowN(time.Now(), 1) {
				b.Fatal("throttled")
			}
			done, err := cb.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(nil)
		}
	})
	run := func(name string, g *breaker.Group, ctx context.Context) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				done, err := g.Allow(ctx)
				if err != nil {
					b.Fatal(err)
				}
				done(nil)
			}
		})
	}
	noopMP := breaker.WithMeterProvider(noop.NewMeterProvider())
	run("group", breaker.NewGroup(breaker.Settings{Budget: budget}, noopMP), ctx)
	run("group-nolimits", breaker.NewGroup(breaker.Settings{}, noopMP), ctx)
	sdk := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	run("group-sdkmetrics", breaker.NewGroup(breaker.Settings{Budget: budget}, breaker.WithMeterProvider(sdk)), ctx)
	run("baseline", breaker.NewGroup(breaker.Settings{Budget: budget}, noopMP), context.Background())
}

// BenchmarkAllowParallel is BenchmarkAllow from all CPUs on one key.
func BenchmarkAllowParallel(b *testing.B) {
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	budget := breaker.Budget{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1 << 20}
	b.Run("gobreaker", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := cb.Allow()
				if err != nil {
					b.Error(err)
					return
				}
				done(nil)
			}
		})
	})
	b.Run("group", func(b *testing.B) {
		g := breaker.NewGroup(breaker.Settings{Budget: budget}, breaker.WithMeterProvider(noop.NewMeterProvider()))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := g.Allow(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				done(nil)
			}
		})
	})
}
