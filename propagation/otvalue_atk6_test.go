package propagation_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTFormValuesThroughOTHopAtk6: for an actor and an origin holding each
// printable ASCII byte, a space, non-ASCII text, and the longest values,
// InjectSandbox on a carrier in OpenTracing's form, then a hop running
// only OpenTelemetry with ottrace (extract, then inject on its next
// call), then the library: the last reads the sandbox, its actor and
// origin as sent or dropped, never another value nor an error.
func TestOTFormValuesThroughOTHopAtk6(t *testing.T) {
	ottest.Quiet(t)
	for _, c := range []*propagation.Codec{propagation.Default(), func() *propagation.Codec {
		c, err := propagation.NewCodec(propagation.WithSignadot())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}()} {
		var values []string
		for b := byte(0x20); b < 0x7f; b++ {
			values = append(values, "a"+string(b)+"b", string(b)+"x", "x"+string(b))
		}
		values = append(values, "zoë", "日本", "a%41", "%zz", "a=b=c", "'x'", strings.Repeat("a", propagation.MaxActorLen), strings.Repeat("%", propagation.MaxActorLen))
		for _, v := range values {
			s := propagation.Sandbox{ID: "pr-1", Actor: v, Origin: v}
			if s.Validate() != nil {
				continue
			}
			h := http.Header{"Ot-Baggage-Tenant": {"acme"}}
			for _, kv := range ottest.TraceHeaders {
				h.Set(kv[0], kv[1])
			}
			c.InjectSandbox(s, otelprop.HeaderCarrier(h))
			if m, err := c.Read(otelprop.HeaderCarrier(h)); err != nil || m.Sandbox != s {
				t.Errorf("%q: the library reads A's call as %+v, %v", v, m, err)
			}
			bCtx := ottest.Propagators.Extract(context.Background(), otelprop.HeaderCarrier(ottest.Canonical(h)))
			out := http.Header{}
			ottest.Propagators.Inject(bCtx, otelprop.HeaderCarrier(out))
			m, err := c.Read(otelprop.HeaderCarrier(out))
			if err != nil || m.Sandbox.ID != "pr-1" ||
				m.Sandbox.Actor != v && m.Sandbox.Actor != "" || m.Sandbox.Origin != v && m.Sandbox.Origin != "" {
				t.Errorf("%q: after an ottrace hop (baggage %q), the library reads %+v, %v", v, baggage.FromContext(bCtx), m, err)
			}
		}
	}
}
