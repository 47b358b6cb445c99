package kafkamw

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// uncomparableCtx is a context whose dynamic type cannot be compared with
// ==: the reader must not remember it (== on it would panic).
type uncomparableCtx struct {
	context.Context
	tags []string
}

type ctxKey struct{}

// TestEnterShared: an owned tagged message is returned with a context that
// carries its sandbox and everything of the context it was fetched with,
// whether or not it is the one the previous message got (same context,
// same sandbox), for every kind of caller context.
func TestEnterShared(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}, {ID: "pr-2"}}) // overriding nothing: the baseline's, with context
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	header := func(id string) []kafka.Header {
		var c carrier
		propagation.Default().InjectSandbox(propagation.Sandbox{ID: id, Actor: "alice"}, &c)
		return c.list
	}
	bg := context.Background()
	a := context.WithValue(bg, ctxKey{}, "a")
	b := context.WithValue(bg, ctxKey{}, "b")
	odd := uncomparableCtx{Context: context.WithValue(bg, ctxKey{}, "odd"), tags: []string{"x"}}
	var prev context.Context
	for i, step := range []struct {
		ctx    context.Context
		id     string
		shared bool // the same context as the previous message's
	}{
		{a, "pr-1", false},
		{a, "pr-1", true},
		{a, "pr-2", false}, // another sandbox
		{b, "pr-2", false}, // another context
		{b, "pr-2", true},
		{odd, "pr-2", false},
		{odd, "pr-2", false}, // never remembered
		{b, "pr-2", false},
	} {
		msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: header(step.id)}
		out, v, err := r.decide(step.ctx, &msg)
		if err != nil || v.fate != fateMine {
			t.Fatalf("step %d: decide = %v, %v; want the baseline's", i, v, err)
		}
		if s, ok := propagation.FromContext(out); !ok || s.ID != step.id || s.Actor != "alice" {
			t.Errorf("step %d: context sandbox = %v, %v; want %s", i, s, ok, step.id)
		}
		if got, want := out.Value(ctxKey{}), step.ctx.Value(ctxKey{}); got != want {
			t.Errorf("step %d: context value = %v, want the caller's %v", i, got, want)
		}
		if shared := out == prev; shared != step.shared {
			t.Errorf("step %d: shared with the previous message's = %v, want %v", i, shared, step.shared)
		}
		prev = out
	}
}

// TestEnterAnnotatesEachMessage: the span of the caller's context gets the
// sandbox attributes for every owned tagged message, the one whose context
// is shared with the previous message's too.
func TestEnterAnnotatesEachMessage(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-1", Actor: "alice"}, &c)
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "consume")
	defer span.End()
	id := func() string {
		for _, kv := range span.(sdktrace.ReadOnlySpan).Attributes() {
			if kv.Key == attribute.Key(audit.KeyID) {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	var prev context.Context
	for i := range 3 {
		span.SetAttributes(attribute.String(audit.KeyID, "overwritten"))
		msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: c.list}
		out, v, err := r.decide(ctx, &msg)
		if err != nil || v.fate != fateMine {
			t.Fatalf("message %d: decide = %v, %v", i, v, err)
		}
		if got := id(); got != "pr-1" {
			t.Errorf("message %d: span %s = %q, want pr-1", i, audit.KeyID, got)
		}
		if i > 0 && out != prev {
			t.Errorf("message %d: context not shared with the previous message's", i)
		}
		prev = out
	}
}
