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

// TestEnterInterleaved: owned messages of a few sandboxes taking turns, as
// the baseline reader sees them on a topic shared by sandboxes that do not
// override its service, each share the context the last message of their
// own sandbox got from the same caller context, without allocating; a
// message fetched with another caller context gets one of its own.
func TestEnterInterleaved(t *testing.T) {
	ids := []string{"pr-1", "pr-2", "pr-3"}
	var sbs []routes.Sandbox
	headers := make([][]kafka.Header, len(ids))
	for k, id := range ids {
		sbs = append(sbs, routes.Sandbox{ID: id}) // overriding nothing: the baseline's, with context
		var c carrier
		propagation.Default().InjectSandbox(propagation.Sandbox{ID: id, Actor: "alice"}, &c)
		headers[k] = c.list
	}
	table, err := syncedTable(sbs)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	a := context.WithValue(context.Background(), ctxKey{}, "a")
	at := time.Now().Add(-time.Minute)
	decide := func(ctx context.Context, k int) context.Context {
		msg := kafka.Message{Topic: "t", Time: at, Headers: headers[k]}
		out, v, err := r.decide(ctx, &msg)
		if err != nil || v.fate != fateMine {
			t.Fatalf("%s: decide = %v, %v; want the baseline's", ids[k], v, err)
		}
		if s, ok := propagation.FromContext(out); !ok || s.ID != ids[k] || out.Value(ctxKey{}) != ctx.Value(ctxKey{}) {
			t.Fatalf("%s: context with sandbox %v, %v and value %v; want %s and %v", ids[k], s, ok, out.Value(ctxKey{}), ids[k], ctx.Value(ctxKey{}))
		}
		return out
	}
	first := make([]context.Context, len(ids))
	for k := range ids {
		first[k] = decide(a, k)
	}
	for k := range ids {
		if out := decide(a, k); out != first[k] {
			t.Errorf("%s: second message not returned with the context the first got", ids[k])
		}
	}
	if allocs := testing.AllocsPerRun(20, func() {
		for k := range ids {
			decide(a, k)
		}
	}); allocs != 0 {
		t.Errorf("%v allocations a round of %d interleaved sandboxes; want 0", allocs, len(ids))
	}
	b := context.WithValue(context.Background(), ctxKey{}, "b")
	for k := range ids {
		if out := decide(b, k); out == first[k] {
			t.Errorf("%s: message fetched with another context returned with the first's", ids[k])
		}
	}
}
