package kafkamw_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestWriterBreaker: a sandbox's writes spend its budget; a write over it
// is refused before it reaches the broker and audited; baseline writes are
// not budgeted; a cancelled write does not count as a failure.
func TestWriterBreaker(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 2}, Failures: 1}, breaker.WithClock(clk.Now))
	var log auditLog
	w := newWriter(t, kafkatest.Writer(t, addrs, topic), kafkamw.WithBreaker(g), kafkamw.WithLogger(log.logger()))

	sctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "runaway", Actor: "bob"})
	msg := func(k string) kafka.Message { return kafka.Message{Key: []byte(k), Value: []byte(k)} }
	for _, k := range []string{"s1", "s2"} {
		if err := w.WriteMessages(sctx, msg(k)); err != nil {
			t.Fatalf("write %s within budget: %v", k, err)
		}
	}
	err := w.WriteMessages(sctx, msg("s3"))
	if !errors.Is(err, breaker.ErrThrottled) {
		t.Fatalf("third write: err = %v, want ErrThrottled", err)
	}
	if d, ok := breaker.RetryAfter(err); !ok || d <= 0 || d > time.Second {
		t.Fatalf("retry hint %v, %v", d, ok)
	}
	// Baseline writes have no budget.
	for _, k := range []string{"b1", "b2", "b3", "b4"} {
		if err := w.WriteMessages(context.Background(), msg(k)); err != nil {
			t.Fatalf("baseline write %s: %v", k, err)
		}
	}
	clk.Advance(time.Second)
	if err := w.WriteMessages(sctx, msg("s4")); err != nil {
		t.Fatalf("write after refill: %v", err)
	}

	got := readAll(t, addrs, topic, 7)
	if _, ok := got["s3"]; ok {
		t.Fatal("the refused write reached the broker")
	}
	for _, k := range []string{"s1", "s2", "s4", "b1", "b4"} {
		if _, ok := got[k]; !ok {
			t.Errorf("message %s missing", k)
		}
	}
	if d := log.decisions(t); d[key(audit.Throttled, "runaway")] != 1 || len(d) != 1 {
		t.Errorf("audit decisions %v, want one throttled", d)
	}

	// A cancelled write is not a failure: with Failures 1 a counted
	// failure would open the breaker.
	clk.Advance(10 * time.Second)
	cctx, cancel := context.WithCancel(sctx)
	cancel()
	if err := w.WriteMessages(cctx, msg("c1")); err == nil {
		t.Fatal("write with a cancelled context succeeded")
	}
	if st := g.State("runaway"); st != breaker.StateClosed {
		t.Fatalf("breaker %v after a cancelled write, want closed", st)
	}
	if err := w.WriteMessages(sctx, msg("s5")); err != nil {
		t.Fatalf("write after cancellation: %v", err)
	}
}

// TestWriterBreakerOpens: failed writes of a sandbox open its breaker, and
// its next write is refused without reaching kafka-go; once the breaker
// has been open for its timeout, a probe is let through again. The broker
// is an address where nothing listens.
func TestWriterBreakerOpens(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 100, Burst: 100}, Failures: 2, OpenTimeout: time.Minute},
		breaker.WithClock(clk.Now))
	var log auditLog
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	kw := &kafka.Writer{Addr: kafka.TCP("127.0.0.1:1"), Topic: "t", MaxAttempts: 1, Transport: tr}
	defer kw.Close()
	w := newWriter(t, kw, kafkamw.WithBreaker(g), kafkamw.WithLogger(log.logger()))
	sctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-9"})
	msg := kafka.Message{Value: []byte("v")}
	for i := range 2 {
		err := w.WriteMessages(sctx, msg)
		if err == nil || errors.Is(err, breaker.ErrOpen) || errors.Is(err, breaker.ErrThrottled) {
			t.Fatalf("write %d to a broker that is down: err = %v, want the connection's error", i, err)
		}
	}
	if st := g.State("pr-9"); st != breaker.StateOpen {
		t.Fatalf("breaker %v after two failed writes, want open", st)
	}
	if err := w.WriteMessages(sctx, msg); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("write with the breaker open: err = %v, want ErrOpen", err)
	}
	if d := log.decisions(t); d[key(audit.Throttled, "pr-9")] != 1 || len(d) != 1 {
		t.Errorf("audit decisions %v, want one throttled", d)
	}
	clk.Advance(time.Minute)
	if err := w.WriteMessages(sctx, msg); err == nil || errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("probe after the open timeout: err = %v, want the connection's error", err)
	}
	if st := g.State("pr-9"); st != breaker.StateOpen {
		t.Fatalf("breaker %v after a failed probe, want open again", st)
	}
}
