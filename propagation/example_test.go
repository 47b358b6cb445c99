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
