package propagation_test

import (
	"context"
	"net/http"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTextMapPropagatorOrder: what an OpenTelemetry-only hop registered
// with NewTextMapPropagator forwards for unreadable markers holds no marker
// the next hop admits; with our propagator placed before Baggage{} (the
// mistake the constructor exists to prevent) it would forward pr-2.
func TestTextMapPropagatorOrder(t *testing.T) {
	hop := func(p otelprop.TextMapPropagator) (propagation.Markers, error) {
		in := http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=pr-2,tenant=acme"}}
		out := http.Header{}
		p.Inject(p.Extract(context.Background(), otelprop.HeaderCarrier(in)), otelprop.HeaderCarrier(out))
		return propagation.Default().Read(otelprop.HeaderCarrier(out))
	}
	if m, err := hop(propagation.NewTextMapPropagator(nil)); m.Found || err != nil {
		t.Errorf("NewTextMapPropagator: next hop reads %+v, %v; want no marker", m, err)
	}
	wrong := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, propagation.NewPropagator(nil), otelprop.Baggage{})
	if m, err := hop(wrong); err != nil || !m.Found || m.Sandbox.ID != "pr-2" {
		t.Errorf("wrong order: next hop reads %+v, %v; the test no longer shows the hazard it guards against", m, err)
	}
}
