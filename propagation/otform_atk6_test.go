package propagation_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// otHeaders returns the ot-baggage- headers of h, canonical name to value.
func otHeaders(h http.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if len(k) > 11 && http.CanonicalHeaderKey(k[:11]) == "Ot-Baggage-" {
			out[http.CanonicalHeaderKey(k)] = v[0]
		}
	}
	return out
}

// TestInjectOTFormLimitsAtk6: ottrace builds a hop's baggage from the
// ot-baggage- headers with baggage.New, which drops members over W3C's
// limits (64 members, 8192 bytes) in map order, ours among them or not,
// and then replaces the hop's baggage with what is left: after
// InjectSandbox the OT form fits them, other members going first (the
// largest first), as they do from the Baggage header.
func TestInjectOTFormLimitsAtk6(t *testing.T) {
	c := propagation.Default()
	ottest.Quiet(t)
	s := propagation.Sandbox{ID: "pr-1", Actor: "alice", Origin: "ci"}
	many := func(n, size int) http.Header {
		h := http.Header{}
		for i := range n {
			h.Set(fmt.Sprintf("Ot-Baggage-K%02d", i), strings.Repeat("v", size))
		}
		return h
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		keep int // other members that must be left
	}{
		{"64 others", many(64, 1), 61},
		{"61 others", many(61, 1), 61},
		{"8 large others", many(8, 1019), 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h.Clone()
			for _, kv := range ottest.TraceHeaders {
				h.Set(kv[0], kv[1])
			}
			c.InjectSandbox(s, otelprop.HeaderCarrier(h))
			ot := otHeaders(h)
			size := 0
			for k, v := range ot {
				size += len(k) - 11 + 1 + len(v) + 1
			}
			if len(ot) > propagation.MaxBaggageMembers || size-1 > propagation.MaxBaggageBytes {
				t.Errorf("%d ot-baggage headers, %d bytes as baggage: over ottrace's limits", len(ot), size-1)
			}
			if len(ot) != tc.keep+3 {
				t.Errorf("%d ot-baggage headers, want ours and %d others", len(ot), tc.keep)
			}
			for range 20 { // baggage.New drops in map order
				if got := ottest.Ours(c, h); got["sandbox.id"] != "pr-1" || got["sandbox.actor"] != "alice" || got["sandbox.origin"] != "ci" {
					t.Fatalf("ottrace reads %v of ours", got)
				}
			}
		})
	}
}

// TestInjectOTFormOtherKeysAtk6: InjectSandbox replaces every member of
// ours in the baggage, the ticket and the compatibility keys
// (WithSignadot's sd-routing-key) too; in OpenTracing's form, which
// ottrace reads in place of the baggage, a stale one of them was left:
// the next hop read another sandbox's routing key beside the sandbox, or
// the ticket an edge had been given.
func TestInjectOTFormOtherKeysAtk6(t *testing.T) {
	ottest.Quiet(t)
	c, err := propagation.NewCodec(propagation.WithSignadot())
	if err != nil {
		t.Fatal(err)
	}
	s := propagation.Sandbox{ID: "pr-1"}
	h := http.Header{
		"Ot-Baggage-Tenant":         {"acme"},
		"Ot-Baggage-Sd-Routing-Key": {"pr-9"},
		"Ot-Baggage-Sandbox.ticket": {"v1.pr-9.sig"},
		"Baggage":                   {"sd-routing-key=pr-9,sandbox.ticket=v1.pr-9.sig"},
	}
	for _, kv := range ottest.TraceHeaders {
		h.Set(kv[0], kv[1])
	}
	c.InjectSandbox(s, otelprop.HeaderCarrier(h))
	if got := ottest.Ours(c, h); len(got) != 1 || got["sandbox.id"] != "pr-1" {
		t.Errorf("ottrace reads %v of ours, want only sandbox.id=pr-1 (headers %v)", got, h)
	}
	if m, err := c.Read(otelprop.HeaderCarrier(h)); err != nil || m.Sandbox != s {
		t.Errorf("Read = %+v, %v; want %+v", m, err, s)
	}
}
