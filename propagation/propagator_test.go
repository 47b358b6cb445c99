package propagation_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTelOnlyHop sends a sandbox request from A through B, a service that
// runs only otelhttp with OpenTelemetry's own TraceContext and Baggage
// propagators, to C, which reads it with the strict codec. The sandbox must
// arrive, in the same trace.
func TestOTelOnlyHop(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	otelOnly := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})
	ours := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil))

	type seen struct {
		s       propagation.Sandbox
		ok      bool
		err     error
		traceID trace.TraceID
	}
	got := make(chan seen, 1)
	c := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, err := propagation.Default().Extract(r.Context(), otelprop.HeaderCarrier(r.Header))
		s, ok := propagation.FromContext(ctx)
		sc := trace.SpanContextFromContext(otelprop.TraceContext{}.Extract(ctx, otelprop.HeaderCarrier(r.Header)))
		got <- seen{s, ok, err, sc.TraceID()}
	}))
	defer c.Close()

	bClient := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport,
		otelhttp.WithPropagators(otelOnly), otelhttp.WithTracerProvider(tp))}
	b := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, c.URL, nil)
		resp, err := bClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}), "b", otelhttp.WithPropagators(otelOnly), otelhttp.WithTracerProvider(tp)))
	defer b.Close()

	want := propagation.Sandbox{ID: "pr-42", Actor: "alice smith", Origin: "PR 42"}
	ctx, span := tp.Tracer("a").Start(context.Background(), "a")
	defer span.End()
	ctx = propagation.ContextWithSandbox(ctx, want)
	aClient := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport,
		otelhttp.WithPropagators(ours), otelhttp.WithTracerProvider(tp))}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL, nil)
	resp, err := aClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("B answered %s", resp.Status)
	}
	g := <-got
	if g.err != nil || !g.ok || g.s != want {
		t.Fatalf("C saw %+v ok=%v err=%v, want %+v", g.s, g.ok, g.err, want)
	}
	if g.traceID != span.SpanContext().TraceID() {
		t.Errorf("trace broken: C saw trace %s, A started %s", g.traceID, span.SpanContext().TraceID())
	}

	// A baseline request through the same chain stays baseline.
	req, _ = http.NewRequestWithContext(context.Background(), http.MethodGet, b.URL, nil)
	resp, err = aClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if g := <-got; g.ok || g.err != nil {
		t.Fatalf("baseline request arrived as %+v err=%v", g.s, g.err)
	}
}

func TestPropagatorComposition(t *testing.T) {
	p := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil))
	fields := map[string]bool{}
	for _, f := range p.Fields() {
		fields[f] = true
	}
	for _, f := range []string{"traceparent", "baggage", "sandbox-id"} {
		if !fields[f] {
			t.Errorf("Fields() lacks %q: %v", f, p.Fields())
		}
	}

	// Round trip through the composite, with other baggage in the context.
	s := propagation.Sandbox{ID: "pr-1", Actor: "bob"}
	ctx := propagation.ContextWithSandbox(context.Background(), s)
	ctx = otelprop.Baggage{}.Extract(ctx, otelprop.MapCarrier{"baggage": "userid=bob"})
	h := http.Header{}
	p.Inject(ctx, otelprop.HeaderCarrier(h))
	out := p.Extract(context.Background(), otelprop.HeaderCarrier(h))
	if got, ok := propagation.FromContext(out); !ok || got != s {
		t.Fatalf("round trip: %+v %v (headers %v)", got, ok, h)
	}

	// Lenient Extract: an unreadable marker leaves no sandbox (the error
	// goes to otel.Handle).
	bad := http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=pr-2"}}
	if _, ok := propagation.FromContext(p.Extract(context.Background(), otelprop.HeaderCarrier(bad))); ok {
		t.Fatal("lenient Extract produced a sandbox from conflicting markers")
	}
}
