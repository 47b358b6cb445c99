package kafkamw

// Review of the dead-letter pause (rvround).

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestProductionDeadLetterEndsThePause: Run writes a production message
// it gives up on under DeadLetterAndContinue to the dead-letter writer
// whatever the pause says, and retries until the write succeeds. A write
// that succeeded there left the pause (up to two minutes, after failures
// in a row) in force: the sandbox messages given up on after it were
// committed past without a copy, "not tried" on a writer just shown to
// work, and the next failure paused it twice as long again.
func TestProductionDeadLetterEndsThePause(t *testing.T) {
	addrs := kafkatest.Start(t)
	dlq := kafkatest.Topic(t, addrs, 1)
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders", WithDeadLetter(kafkatest.Writer(t, addrs, dlq)))
	// Four failed writes in a row: the writer is paused for 40s.
	r.deadLetterFails.Store(4)
	r.deadLetterDown.Store(time.Now().Add(40 * time.Second).UnixNano())
	rc := newRunConfig([]RunOption{OnProductionFailure(DeadLetterAndContinue)})
	ctx := context.Background()
	prod := &kafka.Message{Topic: "orders", Partition: 0, Offset: 1, Value: []byte("p")}
	if ok, err := r.giveUp(ctx, ctx, prod, "handler failed", &rc); !ok || err != nil {
		t.Fatalf("giving up on a production message: %v, %v", ok, err)
	}
	sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-1"})
	sb := &kafka.Message{Topic: "orders", Partition: 0, Offset: 2, Value: []byte("s")}
	if _, err := r.giveUp(ctx, sctx, sb, "sandbox error", &rc); err != nil {
		t.Fatal(err)
	}
	if n := r.deadLetterFailed.Load(); n != 0 {
		t.Errorf("the sandbox message after a successful production dead letter was not written (DeadLetterFailed %d): the pause outlived the writer's recovery", n)
	}
	if n := r.deadLetterFails.Load(); n != 0 {
		t.Errorf("failures in a row after a successful write: %d, want 0", n)
	}
}
