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

// BenchmarkHeaderRead measures Go itself, without the codec: what it costs
// to learn whether a small http.Header holds some names. "lookups-2" is
// what a request without markers cost before issue 13 (Sandbox-Id and
// Baggage looked up); "lookups-5" looks up the five names Codec.Extract
// needs now (those two and sandbox.id as a header in three forms);
// "range" is a bare pass over the keys, whatever the number of names,
// which Go starts at a random slot (two runtime.rand calls). The headers
// are those of BenchmarkExtract/baseline (1 key) and
// BenchmarkHandler/baseline in httpmw (4 keys). The gap between
// "lookups-2" and "range" is the floor of the no-marker hot path's cost
// over its pre-#13 cost.
func BenchmarkHeaderRead(b *testing.B) {
	for _, hc := range []struct {
		name string
		h    http.Header
	}{
		{"1-key", http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}},
		{"4-keys", http.Header{
			"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			"Accept":      {"application/json"}, "User-Agent": {"bench/1.0"},
			"Baggage": {"tenant=acme,region=eu-west-1"},
		}},
	} {
		h := hc.h
		lookups := func(names ...string) func(b *testing.B) {
			return func(b *testing.B) {
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					for _, k := range names {
						n += len(h[k])
					}
				}
				benchSink = n
			}
		}
		b.Run(hc.name+"/lookups-2", lookups("Sandbox-Id", "Baggage"))
		b.Run(hc.name+"/lookups-5", lookups("Sandbox-Id", "Baggage", "Sandbox.id", "Uberctx-Sandbox.id", "Ot-Baggage-Sandbox.id"))
		b.Run(hc.name+"/range", func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				for k := range h {
					n += len(k)
				}
			}
			benchSink = n
		})
	}
}

var benchSink int

// BenchmarkQuiet measures the whole of the check for a request without
// markers, as middleware calls it first: a small header (one pass), a
// browser's 14 headers (past smallHeader), and a small header with a key
// under grpc-gateway's prefix that is not ours.
func BenchmarkQuiet(b *testing.B) {
	c := propagation.Default()
	small := http.Header{
		"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Accept":      {"application/json"}, "User-Agent": {"bench/1.0"},
		"Baggage": {"tenant=acme,region=eu-west-1"},
	}
	browser := small.Clone()
	for k, v := range map[string]string{
		"Accept-Encoding": "gzip, deflate, br", "Accept-Language": "en-GB,en;q=0.9",
		"Cache-Control": "no-cache", "Connection": "keep-alive", "Cookie": "session=abc123; theme=dark",
		"Origin": "https://shop.example.com", "Referer": "https://shop.example.com/cart",
		"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin", "X-Request-Id": "f3a9c2e1",
	} {
		browser[k] = []string{v}
	}
	gw := small.Clone()
	gw["Grpc-Metadata-X-User"] = []string{"u1"}
	for _, hc := range []struct {
		name string
		h    http.Header
	}{{"4-keys", small}, {"14-keys", browser}, {"gateway-header", gw}} {
		b.Run(hc.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if c.Quiet(hc.h) {
					n++
				}
			}
			benchSink = n
		})
	}
}
