package propagation_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

var sentinels = []error{
	propagation.ErrInvalidID, propagation.ErrInvalidActor, propagation.ErrInvalidOrigin,
	propagation.ErrConflict, propagation.ErrMalformed, propagation.ErrBaggageLimit,
}

// FuzzExtract feeds arbitrary dedicated-header and baggage values to the
// strict extractor. Properties: it never panics; an error wraps one of the
// sentinels and leaves no sandbox; a success yields a valid sandbox that
// survives Inject → Extract unchanged, with every foreign member kept.
func FuzzExtract(f *testing.F) {
	f.Add("", "")
	f.Add("pr-42", "")
	f.Add("", "sandbox.id=pr-42,sandbox.actor=alice%20b,userid=x;p")
	f.Add("pr-42", "sandbox.id=pr-43")
	f.Add("", "sandbox.id=%zz")
	f.Add("", ",,=,sandbox.origin=o,sandbox.id=a")
	f.Add("a", "k=v;sandbox.id=b")
	f.Fuzz(func(t *testing.T, hdr, bag string) {
		h := http.Header{}
		if hdr != "" {
			h.Set("Sandbox-Id", hdr)
		}
		if bag != "" {
			h.Set("Baggage", bag)
		}
		c := propagation.Default()
		ctx, err := c.Extract(context.Background(), otelprop.HeaderCarrier(h))
		s, ok := propagation.FromContext(ctx)
		if err != nil {
			if ok {
				t.Fatalf("error %v but sandbox %+v in context", err, s)
			}
			known := false
			for _, e := range sentinels {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if !ok {
			return
		}
		if verr := s.Validate(); verr != nil {
			t.Fatalf("extracted invalid sandbox %+v: %v", s, verr)
		}
		out := http.Header{}
		c.Inject(ctx, otelprop.HeaderCarrier(out))
		ctx2, err := c.Extract(context.Background(), otelprop.HeaderCarrier(out))
		if err != nil {
			t.Fatalf("re-extract of %v: %v", out, err)
		}
		if s2, _ := propagation.FromContext(ctx2); s2 != s {
			t.Fatalf("round trip changed %+v into %+v", s, s2)
		}
		// Merging into the original baggage keeps the sandbox readable.
		merged := h.Clone()
		c.Inject(ctx, otelprop.HeaderCarrier(merged))
		m, err := c.Read(otelprop.HeaderCarrier(merged))
		if err != nil || m.Sandbox != s {
			t.Fatalf("inject into original headers %v: got %+v, %v", merged, m.Sandbox, err)
		}
	})
}

// FuzzSandboxRoundTrip checks that every valid sandbox survives the codec.
func FuzzSandboxRoundTrip(f *testing.F) {
	f.Add("pr-42", "alice", "PR 42")
	f.Add("a", "Zoë, \"the\" boss; ok\\", "%41%")
	f.Fuzz(func(t *testing.T, id, actor, origin string) {
		s := propagation.Sandbox{ID: id, Actor: actor, Origin: origin}
		if s.Validate() != nil {
			return
		}
		for _, c := range []*propagation.Codec{propagation.Default()} {
			mc := otelprop.MapCarrier{}
			c.InjectSandbox(s, mc)
			m, err := c.Read(mc)
			if err != nil || m.Sandbox != s {
				t.Fatalf("%+v → %v → %+v, %v", s, mc, m.Sandbox, err)
			}
		}
	})
}
