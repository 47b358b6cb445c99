package propagation_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

func ExampleCodec_Extract() {
	h := http.Header{}
	h.Set("Sandbox-Id", "pr-42")
	h.Set("Baggage", "userid=alice,sandbox.id=pr-42,sandbox.actor=alice")

	ctx, err := propagation.Default().Extract(context.Background(), otelprop.HeaderCarrier(h))
	if err != nil {
		fmt.Println("reject:", err)
		return
	}
	s, ok := propagation.FromContext(ctx)
	fmt.Println(s.ID, s.Actor, ok)

	// Markers that disagree are an error, never a silent fallback to
	// production.
	h.Set("Sandbox-Id", "pr-43")
	_, err = propagation.Default().Extract(context.Background(), otelprop.HeaderCarrier(h))
	fmt.Println(err)
	// Output:
	// pr-42 alice true
	// propagation: conflicting sandbox markers: sandbox ID "pr-43" in one marker and "pr-42" in another
}

func ExampleCodec_Inject() {
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	h := http.Header{}
	h.Set("Baggage", "userid=alice")
	propagation.Default().Inject(ctx, otelprop.HeaderCarrier(h))
	fmt.Println(h.Get("Sandbox-Id"))
	fmt.Println(h.Get("Baggage"))
	// Output:
	// pr-42
	// sandbox.id=pr-42,sandbox.actor=alice,userid=alice
}

func ExampleNewPropagator() {
	// In main, register it once after OpenTelemetry's Baggage propagator so
	// that otelhttp and otelgrpc instrumentation carry the sandbox on:
	//
	//	otel.SetTextMapPropagator(p)
	p := otelprop.NewCompositeTextMapPropagator(
		otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil))

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	h := http.Header{}
	p.Inject(ctx, otelprop.HeaderCarrier(h))
	fmt.Println(h.Get("Sandbox-Id"), h.Get("Baggage"))

	s, ok := propagation.FromContext(p.Extract(context.Background(), otelprop.HeaderCarrier(h)))
	fmt.Println(s.ID, ok)
	// Output:
	// pr-42 sandbox.id=pr-42
	// pr-42 true
}

// What an OpenTelemetry-only hop (otelhttp, otelgrpc) does with the
// propagator a service registers: a readable sandbox goes on; markers it
// cannot read (here the header and baggage disagree) are taken out of the
// context's baggage, so the hop forwards no sandbox rather than one of the
// two, and other baggage members go on. The error goes to otel.Handle,
// whose default handler logs it.
func ExampleNewTextMapPropagator() {
	// In main: otel.SetTextMapPropagator(propagation.NewTextMapPropagator(nil))
	p := propagation.NewTextMapPropagator(nil)
	hop := func(in http.Header) http.Header {
		ctx := p.Extract(context.Background(), otelprop.HeaderCarrier(in))
		out := http.Header{}
		p.Inject(ctx, otelprop.HeaderCarrier(out))
		return out
	}

	in := http.Header{}
	in.Set("Baggage", "sandbox.id=pr-1")
	out := hop(in)
	fmt.Printf("readable:   Sandbox-Id %q, baggage %q\n", out.Get("Sandbox-Id"), out.Get("Baggage"))

	in = http.Header{}
	in.Set("Sandbox-Id", "pr-1")
	in.Set("Baggage", "userid=alice,sandbox.id=pr-2")
	out = hop(in)
	fmt.Printf("unreadable: Sandbox-Id %q, baggage %q\n", out.Get("Sandbox-Id"), out.Get("Baggage"))
	// Output:
	// readable:   Sandbox-Id "pr-1", baggage "sandbox.id=pr-1"
	// unreadable: Sandbox-Id "", baggage "userid=alice"
}

func ExampleSigner() {
	key := propagation.Key{ID: "2026-11", Secret: []byte("a secret of at least thirty-two bytes")}
	signer, _ := propagation.NewSigner(key)
	verifier, _ := propagation.NewVerifier(key)

	s := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	ticket, _ := signer.Sign(s, 2*time.Hour)
	fmt.Println(verifier.Verify(s, ticket))

	// The ticket binds the actor: claiming another one fails.
	err := verifier.Verify(propagation.Sandbox{ID: "pr-42", Actor: "mallory"}, ticket)
	fmt.Println(err != nil)
	// Output:
	// <nil>
	// true
}

// A ticket must expire within the verifier's maximum lifetime (24 hours
// unless WithMaxLifetime says otherwise), however it is signed; the
// signer's clock may run ahead of the verifier's by a minute
// (WithClockSkew).
func ExampleVerifier_WithMaxLifetime() {
	key := propagation.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	signer, _ := propagation.NewSigner(key)
	verifier, _ := propagation.NewVerifier(key)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice"}

	ticket, _ := signer.SignUntil(sb, now.Add(72*time.Hour))
	fmt.Println(verifier.VerifyAt(sb, ticket, now))

	week, _ := verifier.WithMaxLifetime(7 * 24 * time.Hour)
	fmt.Println(week.VerifyAt(sb, ticket, now))
	// Output:
	// propagation: invalid sandbox ticket: expires at 2030-01-04T00:00:00Z, more than 24h1m0s ahead (the verifier's maximum lifetime 24h0m0s plus the clock skew it allows 1m0s)
	// <nil>
}

// Markers that only some parser reads as ours are found, and unreadable:
// here a no-break space before the key, which OpenTelemetry Go trims.
func ExampleCodec_Read_lookalike() {
	h := http.Header{"Baggage": {"\u00a0sandbox.id=pr-1"}}
	m, err := propagation.Default().Read(otelprop.HeaderCarrier(h))
	fmt.Println(m.Found, err)
	// Output:
	// true propagation: malformed sandbox marker: baggage key "\u00a0sandbox.id" reads as "sandbox.id" to a lenient parser
}
