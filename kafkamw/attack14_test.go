package kafkamw

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on the reader's per-message shortcuts (the fetch lock, the
// ownership memo, the remembered headers, the shared context), each
// against what the reader decided without them.

// TestEnterWrappedUncomparableCtx: a context whose type compares with ==
// but holds one that does not (context.WithoutCancel's value, a caller's
// struct embedding a context) makes == panic at run time, whatever
// reflect.Type.Comparable says of its type. Two messages fetched with it
// in a row must be decided, not crash the reader.
func TestEnterWrappedUncomparableCtx(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-1"}, &c)
	odd := uncomparableCtx{Context: context.WithValue(context.Background(), ctxKey{}, "odd"), tags: []string{"x"}}
	type wrapper struct{ context.Context } // comparable type, uncomparable dynamic value inside
	for name, ctx := range map[string]context.Context{
		"WithoutCancel":            context.WithoutCancel(odd),
		"wrapper":                  wrapper{odd},
		"wrapper of WithoutCancel": wrapper{context.WithoutCancel(odd)},
	} {
		t.Run(name, func(t *testing.T) {
			r := bareReader(t, table, "orders")
			for i := range 3 {
				msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: c.list}
				var (
					out context.Context
					v   verdict
				)
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("message %d: decide panicked: %v", i, p)
						}
					}()
					out, v, err = r.decide(ctx, &msg)
				}()
				if err != nil || v.fate != fateMine {
					t.Fatalf("message %d: decide = %v, %v", i, v, err)
				}
				if s, ok := propagation.FromContext(out); !ok || s.ID != "pr-1" || out.Value(ctxKey{}) != "odd" {
					t.Errorf("message %d: context = %v, %v, %v", i, s, ok, out.Value(ctxKey{}))
				}
			}
		})
	}
}
