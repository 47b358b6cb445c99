package propagation_test

import (
	"context"
	"net/http"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// fiveMembers is the baggage header every Extract benchmark reads: five
// members, ours among them.
const fiveMembers = "userid=alice,tenant=acme,sandbox.id=pr-42,region=eu-west-1,sandbox.actor=alice"

// BenchmarkExtract compares our strict extraction with OpenTelemetry's own
// Baggage propagator on the same header. Run:
//
//	go test ./propagation -run '^$' -bench Extract -benchmem
func BenchmarkExtract(b *testing.B) {
	c := propagation.Default()
	ctx := context.Background()
	run := func(name string, h http.Header, f func(context.Context, otelprop.TextMapCarrier) context.Context) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			carrier := otelprop.HeaderCarrier(h)
			for b.Loop() {
				f(ctx, carrier)
			}
		})
	}
	strict := func(ctx context.Context, cr otelprop.TextMapCarrier) context.Context {
		out, err := c.Extract(ctx, cr)
		if err != nil {
			panic(err)
		}
		return out
	}
	run("sandbox", http.Header{"Baggage": {fiveMembers}, "Sandbox-Id": {"pr-42"}}, strict)
	run("baseline", http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}, strict)
	run("baseline-foreign-baggage", http.Header{"Baggage": {"userid=alice,tenant=acme,region=eu-west-1,tier=gold,flag=on"}}, strict)
	run("otel-baggage", http.Header{"Baggage": {fiveMembers}}, otelprop.Baggage{}.Extract)
}

// BenchmarkInject measures writing a sandbox onto outgoing headers that
// already carry foreign baggage.
func BenchmarkInject(b *testing.B) {
	c := propagation.Default()
	sctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	b.Run("sandbox", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := http.Header{"Baggage": {"userid=alice,tenant=acme"}}
			c.Inject(sctx, otelprop.HeaderCarrier(h))
		}
	})
	b.Run("baseline", func(b *testing.B) {
		b.ReportAllocs()
		h := http.Header{"Baggage": {"userid=alice,tenant=acme"}}
		for b.Loop() {
			c.Inject(context.Background(), otelprop.HeaderCarrier(h))
		}
	})
}
