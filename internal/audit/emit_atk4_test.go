package audit_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkEmit: the cost of one audit record written through a JSON
// handler, for an admitted sandbox (the per-request record with a logger)
// and a stripped one with long sender-written values (clipped).
func BenchmarkEmit(b *testing.B) {
	l := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx := context.Background()
	long := propagation.Sandbox{ID: "x-" + string(make([]byte, 200)), Actor: "alice@example.com", Origin: "https://github.com/acme/shop/pull/1234"}
	for _, bc := range []struct {
		name string
		ev   audit.Event
	}{
		{"admitted", audit.Event{Decision: audit.Admitted, Sandbox: propagation.Sandbox{ID: "pr-42", Actor: "alice@example.com", Origin: "https://github.com/acme/shop/pull/1234"}, Peer: "10.1.2.3:5555", Reason: "trusted source"}},
		{"stripped-clipped", audit.Event{Decision: audit.Stripped, Sandbox: long, Peer: "203.0.113.9:5555", Reason: "untrusted source"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ev := bc.ev
				if ev.Decision != audit.Admitted {
					ev.Sandbox = audit.Clip(ev.Sandbox) // as ingress.Gate.Refuse does
				}
				audit.Emit(ctx, l, ev)
			}
		})
	}
}

// BenchmarkAnnotate: the span attributes of an admitted sandbox with an
// actor, on a recording span (the per-request cost with tracing on).
func BenchmarkAnnotate(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("bench").Start(context.Background(), "req")
	defer span.End()
	s := propagation.Sandbox{ID: "pr-42", Actor: "alice@example.com"}
	b.ReportAllocs()
	for b.Loop() {
		audit.Annotate(ctx, &s)
	}
}
