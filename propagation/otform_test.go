package propagation_test

import (
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestInjectOTForm: on a carrier that carries baggage in OpenTracing's
// header form, which OpenTelemetry's ottrace propagator reads in place of
// the W3C baggage, InjectSandbox writes the sandbox in that form too, as
// ottrace reads it back; elsewhere it adds no such header.
func TestInjectOTForm(t *testing.T) {
	c := propagation.Default()
	ottest.Quiet(t)
	withTrace := func(h http.Header) http.Header {
		for _, kv := range ottest.TraceHeaders {
			h.Set(kv[0], kv[1])
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		s      propagation.Sandbox
		h      http.Header
		wantOT map[string]string // what ottrace reads of ours; nil: no OT header of ours written
	}{
		{"no OT form", propagation.Sandbox{ID: "pr-1", Actor: "alice"}, http.Header{"Baggage": {"tenant=acme"}}, nil},
		{"OT form", propagation.Sandbox{ID: "pr-1", Actor: "alice", Origin: "ci"},
			http.Header{"Ot-Baggage-Tenant": {"acme"}},
			map[string]string{"sandbox.id": "pr-1", "sandbox.actor": "alice", "sandbox.origin": "ci"}},
		{"stale members of ours", propagation.Sandbox{ID: "pr-1"},
			http.Header{"Ot-Baggage-Tenant": {"acme"}, "Ot-Baggage-Sandbox.id": {"pr-9"}, "Ot-Baggage-Sandbox.actor": {"mallory"}},
			map[string]string{"sandbox.id": "pr-1"}},
		{"an actor ottrace would not read back", propagation.Sandbox{ID: "pr-1", Actor: "alice smith", Origin: "a%41"},
			http.Header{"Ot-Baggage-Tenant": {"acme"}, "Ot-Baggage-Sandbox.actor": {"alice smith"}},
			map[string]string{"sandbox.id": "pr-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := withTrace(tc.h.Clone())
			c.InjectSandbox(tc.s, otelprop.HeaderCarrier(h))
			got := ottest.Ours(c, h)
			if tc.wantOT == nil {
				for k := range h {
					if len(k) > 11 && http.CanonicalHeaderKey(k[:11]) == "Ot-Baggage-" {
						t.Errorf("wrote %s: %v", k, h)
					}
				}
			} else if len(got) != len(tc.wantOT) || func() bool {
				for k, v := range tc.wantOT {
					if got[k] != v {
						return true
					}
				}
				return false
			}() {
				t.Errorf("ottrace reads %v of ours, want %v (headers %v)", got, tc.wantOT, h)
			}
			// The next hop with the library reads the same sandbox.
			if m, err := c.Read(otelprop.HeaderCarrier(h)); err != nil || m.Sandbox != tc.s {
				t.Errorf("Read = %+v, %v; want %+v", m, err, tc.s)
			}
			// The same on a map carrier (gRPC metadata, Kafka headers).
			mc := otelprop.MapCarrier{}
			for k, v := range h {
				mc[http.CanonicalHeaderKey(k)] = v[0]
			}
			delete(mc, "Baggage")
			delete(mc, "Sandbox-Id")
			lower := otelprop.MapCarrier{}
			for k, v := range mc {
				lower[strings.ToLower(k)] = v
			}
			c.InjectSandbox(tc.s, lower)
			if m, err := c.Read(lower); err != nil || m.Sandbox != tc.s {
				t.Errorf("map carrier: Read = %+v, %v; want %+v (%v)", m, err, tc.s, lower)
			}
		})
	}
}
