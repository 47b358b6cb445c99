package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRunProductionPolicies: what Run does with a production message
// whose handler fails, under each policy. The third of five messages
// fails its first four calls (RetryForever: it is retried until it
// succeeds) or every call (the other two).
func TestRunProductionPolicies(t *testing.T) {
	addrs := kafkatest.Start(t)
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		policy kafkamw.FailurePolicy
		fails  int // calls of m-2 that fail
	}{
		{"retry forever", kafkamw.RetryForever, 4},
		{"dead letter", kafkamw.DeadLetterAndContinue, 1 << 30},
		{"stop", kafkamw.StopRun, 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic, dlq := kafkatest.Topic(t, addrs, 1), kafkatest.Topic(t, addrs, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			w := kafkatest.Writer(t, addrs, topic)
			for i := range 5 {
				if err := w.WriteMessages(ctx, kafka.Message{Value: fmt.Appendf(nil, "m-%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
			r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service, kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlq)))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got []string
			calls := 0
			rctx, stop := context.WithCancel(ctx)
			h := func(_ context.Context, m kafka.Message) error {
				if string(m.Value) == "m-2" {
					if calls++; calls <= tc.fails {
						return errors.New("database down")
					}
				}
				got = append(got, string(m.Value))
				if string(m.Value) == "m-4" {
					stop()
				}
				return nil
			}
			opts := []kafkamw.RunOption{kafkamw.OnProductionFailure(tc.policy), kafkamw.WithRetries(3), kafkamw.WithBackoff(time.Millisecond, 2*time.Millisecond)}
			err = r.Run(rctx, h, opts...)
			switch tc.policy {
			case kafkamw.RetryForever:
				if err != nil || strings.Join(got, ",") != "m-0,m-1,m-2,m-3,m-4" || calls != 5 || r.Counts().Retries != 4 {
					t.Fatalf("Run = %v; handled %v in %d calls of m-2, counts %+v; want all, m-2 after 4 failures", err, got, calls, r.Counts())
				}
			case kafkamw.DeadLetterAndContinue:
				if err != nil || strings.Join(got, ",") != "m-0,m-1,m-3,m-4" || calls != 3 || r.Counts().Failed != 1 {
					t.Fatalf("Run = %v; handled %v, %d calls of m-2; want m-2 dead-lettered after 3", err, got, calls)
				}
				dead := readAll(t, addrs, dlq, 1)
				if m, ok := dead[""]; !ok || string(m.Value) != "m-2" || !strings.Contains(header(m.Headers, kafkamw.HeaderDeadLetterReason)[0], "database down") {
					t.Fatalf("dead-letter topic %v, want m-2 with its error", dead)
				}
			case kafkamw.StopRun:
				if !errors.Is(err, kafkamw.ErrStopped) || strings.Join(got, ",") != "m-0,m-1" || calls != 3 {
					t.Fatalf("Run = %v; handled %v, %d calls; want ErrStopped after m-1 and 3 calls of m-2", err, got, calls)
				}
				// Run again on the same reader: m-2 comes first, not skipped.
				calls = 0
				tc.fails = 0
				if err := r.Run(rctx, h, opts...); err != nil || strings.Join(got, ",") != "m-0,m-1,m-2,m-3,m-4" {
					t.Fatalf("second Run = %v; handled %v; want m-2 again, then the rest", err, got)
				}
			}
		})
	}
}

// TestRunConfig: Run refuses what cannot work, before reading anything.
func TestRunConfig(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"},
		table, service)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ok := func(context.Context, kafka.Message) error { return nil }
	for name, call := range map[string]func() error{
		"nil handler":  func() error { return r.Run(context.Background(), nil) },
		"zero retries": func() error { return r.Run(context.Background(), ok, kafkamw.WithRetries(0)) },
		"backoff above its max": func() error {
			return r.Run(context.Background(), ok, kafkamw.WithBackoff(time.Second, time.Millisecond))
		},
		"dead letter without a writer": func() error {
			return r.Run(context.Background(), ok, kafkamw.OnProductionFailure(kafkamw.DeadLetterAndContinue))
		},
		"unknown policy": func() error { return r.Run(context.Background(), ok, kafkamw.OnProductionFailure(9)) },
	} {
		if err := call(); !errors.Is(err, kafkamw.ErrConfig) {
			t.Errorf("%s: Run = %v, want ErrConfig", name, err)
		}
	}
}

// TestRunSandboxWithoutDeadLetter: without a dead-letter writer, a sandbox
// message whose handler keeps failing is audited with its error and
// coordinates, counted, and committed past; the production message behind
// it is handled.
func TestRunSandboxWithoutDeadLetter(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	if err := w.WriteMessages(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-1"}), kafka.Message{Value: []byte("sandbox")}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("production")}); err != nil {
		t.Fatal(err)
	}
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var log auditLog
	group := kafkatest.UniqueName("g")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.WithLogger(log.logger()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var got []string
	err = r.Run(rctx, func(ctx context.Context, m kafka.Message) error {
		if _, ok := propagation.FromContext(ctx); ok {
			return errors.New("always fails")
		}
		got = append(got, string(m.Value))
		stop()
		return nil
	}, kafkamw.WithRetries(2), kafkamw.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil || strings.Join(got, ",") != "production" {
		t.Fatalf("Run = %v, handled %v; want the production message", err, got)
	}
	if c := r.Counts(); c.Failed != 1 || c.DeadLettered != 0 || c.Retries != 1 {
		t.Errorf("counts %+v, want one failed after one retry, none dead-lettered", c)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if d := log.decisions(t); d[key(audit.Rejected, "pr-1")] != 1 {
		t.Errorf("audit %v, want one rejected record of pr-1", d)
	}
	if rec := log.text(); !strings.Contains(rec, "always fails") || !strings.Contains(rec, topic+"/0/0") {
		t.Errorf("the audit record lacks the error or the coordinates: %s", rec)
	}
	for p, l := range groupLag(t, addrs, topic, group) {
		if l != 0 {
			t.Errorf("lag %d on partition %d: the failed message was not committed past", l, p)
		}
	}
}
