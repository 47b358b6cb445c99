package propagation_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"go.opentelemetry.io/contrib/propagators/ot"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestKeyHeaderReadAsOTReadsItAtk5: a header named as one of our keys
// beside the markers is admitted only when it agrees with them as every
// parser reads it. OpenTelemetry's ottrace propagator reads
// Ot-Baggage-Sandbox.actor through baggage.NewMember, which
// percent-decodes the value (and replaces the context's baggage with what
// it read), where the codec compares the header as written: an actor
// holding a '%' (baggage sandbox.actor=a%2541, the actor "a%41") beside
// Ot-Baggage-Sandbox.actor: a%41 was admitted as "a%41", and the ottrace
// reader at this hop, or behind a proxy that hands the header on, read
// "aA". Jaeger's clients decode uberctx- values too.
//
// Before the fix the codec admitted each case below; OpenTelemetry read
// another actor or origin.
func TestKeyHeaderReadAsOTReadsItAtk5(t *testing.T) {
	codec := propagation.Default()
	for _, tc := range []struct {
		name, bag, header, value string
	}{
		{"actor %41", "sandbox.id=pr-1,sandbox.actor=a%2541", "Ot-Baggage-Sandbox.actor", "a%41"},
		{"origin %2F", "sandbox.id=pr-1,sandbox.origin=pr%252F7", "Ot-Baggage-Sandbox.origin", "pr%2F7"},
		{"jaeger actor", "sandbox.id=pr-1,sandbox.actor=bob%2540x", "Uberctx-Sandbox.actor", "bob%40x"},
		{"jaeger actor +", "sandbox.id=pr-1,sandbox.actor=a%2Bb", "Uberctx-Sandbox.actor", "a+b"},
	} {
		h := http.Header{}
		h.Set("Sandbox-Id", "pr-1")
		h.Set("Baggage", tc.bag)
		h.Set(tc.header, tc.value)
		h.Set("Ot-Tracer-Traceid", "0000000000000001")
		h.Set("Ot-Tracer-Spanid", "0000000000000002")
		h.Set("Ot-Tracer-Sampled", "true")
		m, err := codec.Read(otelprop.HeaderCarrier(h))
		if err != nil {
			continue // refused: nothing read differently
		}
		// What OpenTelemetry reads from the same bytes, the OT
		// propagator last as a composite runs it.
		ctx := otelprop.NewCompositeTextMapPropagator(otelprop.Baggage{}, ot.OT{}).Extract(context.Background(), otelprop.HeaderCarrier(h))
		bag := baggage.FromContext(ctx)
		got := map[string]string{"actor": m.Sandbox.Actor, "origin": m.Sandbox.Origin}
		otel := map[string]string{"actor": bag.Member("sandbox.actor").Value(), "origin": bag.Member("sandbox.origin").Value()}
		if tc.header == "Uberctx-Sandbox.actor" {
			// OpenTelemetry's Jaeger propagator reads no baggage;
			// jaeger-client-go decodes the value.
			otel["actor"], _ = url.QueryUnescape(tc.value)
		}
		for k := range got {
			if got[k] != otel[k] && otel[k] != "" {
				t.Errorf("%s: admitted %s %q, OpenTelemetry reads %q from %s: %s", tc.name, k, got[k], otel[k], tc.header, tc.value)
			}
		}
	}
}

// TestKeyHeaderAgreeingAdmittedAtk5: what OpenTelemetry's ottrace
// propagator writes for an actor it can carry (the member's value as it
// is) is still admitted beside the markers.
func TestKeyHeaderAgreeingAdmittedAtk5(t *testing.T) {
	h := http.Header{}
	h.Set("Sandbox-Id", "pr-1")
	h.Set("Baggage", "sandbox.id=pr-1,sandbox.actor=alice%40example.com")
	h.Set("Ot-Baggage-Sandbox.id", "pr-1")
	h.Set("Ot-Baggage-Sandbox.actor", "alice@example.com")
	h.Set("Uberctx-Sandbox.actor", "alice@example.com")
	m, err := propagation.Default().Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox.ID != "pr-1" || m.Sandbox.Actor != "alice@example.com" {
		t.Fatalf("Read = %+v, %v; want pr-1 of alice@example.com", m.Sandbox, err)
	}
}
