package propagation_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// A request whose baggage is at the W3C limits already (forwarded by a
// service whose incoming sandbox came in the dedicated header) keeps them
// once our members are merged in: other members give way, the largest
// first, never ours. Over them, the next hop with the library refuses the
// request (ErrBaggageLimit) and OpenTelemetry reads no baggage at all.
func TestInjectKeepsBaggageWithinLimits(t *testing.T) {
	s := propagation.Sandbox{ID: "pr-1", Actor: "alice", Origin: "gateway"}
	cases := map[string]func() []string{
		"members": func() []string { // 64 small members
			var ms []string
			for i := range propagation.MaxBaggageMembers {
				ms = append(ms, fmt.Sprintf("k%d=v", i))
			}
			return []string{strings.Join(ms, ",")}
		},
		"bytes": func() []string { // 8 members, one large, near 8192 bytes
			ms := []string{"big=" + strings.Repeat("x", propagation.MaxBaggageBytes-200)}
			for i := range 7 {
				ms = append(ms, fmt.Sprintf("k%d=%s", i, strings.Repeat("y", 20)))
			}
			return []string{strings.Join(ms, ",")}
		},
		"two lines": func() []string {
			var a, b []string
			for i := range propagation.MaxBaggageMembers / 2 {
				a = append(a, fmt.Sprintf("a%d=v", i))
				b = append(b, fmt.Sprintf("b%d=v", i))
			}
			return []string{strings.Join(a, ","), strings.Join(b, ",")}
		},
	}
	for name, lines := range cases {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			for _, l := range lines() {
				h.Add("Baggage", l)
			}
			propagation.Default().InjectSandbox(s, otelprop.HeaderCarrier(h))
			got := strings.Join(h.Values("Baggage"), ",")
			if n := strings.Count(got, ",") + 1; n > propagation.MaxBaggageMembers || len(got) > propagation.MaxBaggageBytes {
				t.Fatalf("baggage after Inject: %d members, %d bytes; want at most %d, %d", n, len(got), propagation.MaxBaggageMembers, propagation.MaxBaggageBytes)
			}
			m, err := propagation.Default().Read(otelprop.HeaderCarrier(h))
			if err != nil || !m.Found || m.Sandbox.ID != s.ID || m.Sandbox.Actor != s.Actor || m.Sandbox.Origin != s.Origin {
				t.Fatalf("read back: %+v, %v; want %+v", m, err, s)
			}
			b, err := baggage.Parse(got)
			if err != nil {
				t.Fatalf("OpenTelemetry: %v", err)
			}
			if v := b.Member("sandbox.id").Value(); v != s.ID {
				t.Fatalf("OpenTelemetry reads sandbox.id=%q, want %q", v, s.ID)
			}
			// What was kept is what was there, in its order.
			var before []string
			for _, l := range lines() {
				before = append(before, strings.Split(l, ",")...)
			}
			kept := strings.Split(got, ",")[3:]
			i := 0
			for _, k := range kept {
				for i < len(before) && before[i] != k {
					i++
				}
				if i == len(before) {
					t.Fatalf("member %q kept out of order or not there before", k)
				}
			}
			if len(kept) == 0 {
				t.Fatal("every other member dropped")
			}
		})
	}
}

// MirrorContext keeps the context's baggage within the W3C limits too:
// an OpenTelemetry propagator writes it as the header after ours.
func TestMirrorContextKeepsBaggageWithinLimits(t *testing.T) {
	var ms []baggage.Member
	for i := range propagation.MaxBaggageMembers {
		m, err := baggage.NewMemberRaw(fmt.Sprintf("k%d", i), strings.Repeat("v", i))
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	bag, err := baggage.New(ms...)
	if err != nil {
		t.Fatal(err)
	}
	s := propagation.Sandbox{ID: "pr-1", Actor: "alice"}
	ctx := propagation.Default().MirrorContext(baggage.ContextWithBaggage(context.Background(), bag), s)
	got := baggage.FromContext(ctx)
	if got.Len() > propagation.MaxBaggageMembers || len(got.String()) > propagation.MaxBaggageBytes {
		t.Fatalf("context baggage after MirrorContext: %d members, %d bytes", got.Len(), len(got.String()))
	}
	if got.Member("sandbox.id").Value() != "pr-1" || got.Member("sandbox.actor").Value() != "alice" {
		t.Fatalf("context baggage lost ours: %s", got)
	}
	if got.Member("k63").Key() != "" || got.Member("k0").Key() == "" {
		t.Fatalf("the largest members should go first: %s", got)
	}
}
