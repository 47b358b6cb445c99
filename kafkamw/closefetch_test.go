package kafkamw_test

// Review of Close against a fetch in progress (rvround).

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// onRecord is a slog handler that calls f on the first record.
type onRecord struct {
	once *sync.Once
	f    func()
}

func (h onRecord) Enabled(context.Context, slog.Level) bool  { return true }
func (h onRecord) Handle(context.Context, slog.Record) error { h.once.Do(h.f); return nil }
func (h onRecord) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h onRecord) WithGroup(string) slog.Handler             { return h }

// TestCloseEndsAFetchInProgress: Close while FetchMessage is deciding
// the messages it skips (orphans here, audited one by one) must not let
// that call go on through what kafka-go had fetched ahead: each message
// it then skipped or returned could not be committed any more, so the
// orphans were decided (audited, dead-lettered) again after the restart
// and the message returned was handled twice. Close's promise is that
// none is handed out whose commit can no longer succeed.
func TestCloseEndsAFetchInProgress(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ghost := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "ghost"})
	for i, wctx := range []context.Context{ghost, ghost, ghost, ctx} {
		if err := w.WriteMessages(wctx, kafka.Message{Value: []byte{byte('0' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	var r *kafkamw.Reader
	closed := make(chan error, 1)
	hook := onRecord{once: new(sync.Once), f: func() {
		// The first orphan is being decided: once kafka-go holds the
		// rest, Close, and wait for it.
		waitFor(t, 20*time.Second, "the messages fetched ahead", func() bool { return r.Stats().QueueLength >= 2 })
		go func() { closed <- r.Close() }()
		select {
		case err := <-closed:
			closed <- err
		case <-time.After(20 * time.Second): // a guard against hanging the suite, not a measure
			t.Error("Close waited for the fetch in progress")
		}
	}}
	r, err = kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service,
		kafkamw.WithLogger(slog.New(hook)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, msg, err := r.FetchMessage(ctx)
	if err == nil {
		t.Errorf("FetchMessage begun before Close returned message %q, fetched ahead, after Close", msg.Value)
	}
	if cerr := <-closed; cerr != nil {
		t.Log("Close:", cerr)
	}
	if c := r.Counts(); c.Orphaned != 1 {
		t.Errorf("orphans decided: %d, want only the one being decided when Close came (the others are the next consumer's)", c.Orphaned)
	}
}

// TestNewReaderTakesEveryAcknowledgedDeadLetterWriter: the refusal of
// dead-letter writers that do not wait for the broker (RequireNone,
// Async) leaves the ones that do: RequireOne and RequireAll.
func TestNewReaderTakesEveryAcknowledgedDeadLetterWriter(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, acks := range []kafka.RequiredAcks{kafka.RequireOne, kafka.RequireAll} {
		dw := &kafka.Writer{Addr: kafka.TCP("127.0.0.1:1"), Topic: "dlq", RequiredAcks: acks}
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig([]string{"127.0.0.1:1"}, "orders-in", "g"), table, service, kafkamw.WithDeadLetter(dw))
		if err != nil {
			t.Errorf("RequiredAcks %v: %v; want the writer taken", acks, err)
			continue
		}
		r.Close()
	}
}
