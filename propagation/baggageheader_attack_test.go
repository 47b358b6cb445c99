package propagation_test

import (
	"net/http"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestBaggageHeaderForms: Jaeger carries each baggage item in a header
// "uberctx-<key>", OpenTracing's OT format in "ot-baggage-<key>", and the
// OpenTelemetry Jaeger and OT propagators (Java, JS, Python) extract them
// into OpenTelemetry baggage, which that hop's W3C Baggage propagator then
// sends on as "baggage: sandbox.id=pr-1". The codec already treats
// Signadot's key in these forms as a routing key; ours in them are markers
// too: unreadable from anyone, removed by Strip.
func TestBaggageHeaderForms(t *testing.T) {
	c := propagation.Default()
	for _, key := range c.Keys() {
		for _, name := range []string{"uberctx-" + key, "ot-baggage-" + key} {
			// Beside a readable marker, and alone, on a map carrier (gRPC
			// metadata and Kafka headers read alike) and an http.Header.
			for _, withID := range []bool{true, false} {
				mc := otelprop.MapCarrier{name: "pr-1"}
				h := http.Header{}
				h.Set(name, "pr-1")
				if withID {
					mc["sandbox-id"] = "pr-1"
					h.Set("Sandbox-Id", "pr-1")
				}
				if m, err := c.Read(mc); !m.Found || err == nil {
					t.Errorf("map carrier %v: found %v, err %v; want an unreadable marker", mc, m.Found, err)
				}
				if withID {
					// http.Header is looked up only beside other markers
					// (see Codec.Read); alone it is httpmw's to look.
					if m, err := c.Read(otelprop.HeaderCarrier(h)); !m.Found || err == nil {
						t.Errorf("http.Header %v: found %v, err %v; want an unreadable marker", h, m.Found, err)
					}
				}
				c.Strip(mc)
				c.Strip(otelprop.HeaderCarrier(h))
				if len(mc) != 0 || len(h) != 0 {
					t.Errorf("after Strip: map carrier %v, http.Header %v", mc, h)
				}
			}
		}
	}
}
