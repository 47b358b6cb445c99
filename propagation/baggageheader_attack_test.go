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
// too: unreadable alone, and beside the dedicated header or baggage one
// more reading of the member they name, which must agree (the ID's here;
// an actor, origin or ticket the other markers do not have does not);
// removed by Strip.
func TestBaggageHeaderForms(t *testing.T) {
	c := propagation.Default()
	for _, key := range c.Keys() {
		for _, name := range []string{"uberctx-" + key, "ot-baggage-" + key} {
			// Beside a readable marker, and alone, on a map carrier (gRPC
			// metadata and Kafka headers read alike) and an http.Header.
			for _, withID := range []bool{true, false} {
				agrees := withID && key == c.Keys()[0]
				mc := otelprop.MapCarrier{name: "pr-1"}
				h := http.Header{}
				h.Set(name, "pr-1")
				if withID {
					mc["sandbox-id"] = "pr-1"
					h.Set("Sandbox-Id", "pr-1")
				}
				if m, err := c.Read(mc); !m.Found || (err == nil) != agrees || agrees && m.Sandbox.ID != "pr-1" {
					t.Errorf("map carrier %v: found %v (%v), err %v; want pr-1 read %v", mc, m.Found, m.Sandbox, err, agrees)
				}
				if withID {
					// http.Header is looked up only beside other markers
					// (see Codec.Read); alone it is httpmw's to look.
					if m, err := c.Read(otelprop.HeaderCarrier(h)); !m.Found || (err == nil) != agrees || agrees && m.Sandbox.ID != "pr-1" {
						t.Errorf("http.Header %v: found %v (%v), err %v; want pr-1 read %v", h, m.Found, m.Sandbox, err, agrees)
					}
					// Disagreeing: unreadable.
					mc2 := otelprop.MapCarrier{name: "pr-2", "sandbox-id": "pr-1"}
					if m, err := c.Read(mc2); !m.Found || err == nil {
						t.Errorf("map carrier %v: found %v, err %v; want an unreadable marker", mc2, m.Found, err)
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
