package propagation_test

import (
	"context"
	"net/http"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkPropagatorExtract measures the README's composite propagator
// (trace context, OpenTelemetry's Baggage, ours) extracting a sandbox, with
// and without a ticket, and a request without markers.
func BenchmarkPropagatorExtract(b *testing.B) {
	p := propagation.NewTextMapPropagator(nil)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, bc := range []struct {
		name string
		h    http.Header
	}{
		{"baseline", http.Header{"Traceparent": {tp}, "Baggage": {"tenant=acme,region=eu"}}},
		{"sandbox", http.Header{"Traceparent": {tp}, "Baggage": {"tenant=acme,sandbox.id=pr-42,sandbox.actor=alice"}}},
		{"ticket", http.Header{"Traceparent": {tp}, "Baggage": {"tenant=acme,sandbox.id=pr-42,sandbox.actor=alice,sandbox.ticket=v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			carrier := otelprop.HeaderCarrier(bc.h)
			for b.Loop() {
				p.Extract(context.Background(), carrier)
			}
		})
	}
}
