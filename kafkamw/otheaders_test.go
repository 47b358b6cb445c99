package kafkamw_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// A record header named as one of our keys in OpenTracing's form, beside
// the markers, disagreeing with them: unreadable (TestUnreadable).
func init() {
	malformed["ot-header-form-disagrees"] = []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "ot-baggage-sandbox.id", Value: []byte("pr-7")}}
	malformed["ot-actor-not-in-markers"] = []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "ot-baggage-sandbox.actor", Value: []byte("alice")}}
	// A key that is ours only once decoded (ottrace passes it on as
	// baggage "sandbox%2eid", which a lenient parser reads as sandbox.id),
	// alone and beside agreeing markers: a producer in any language can
	// write such a record header.
	malformed["ot-lookalike-percent"] = []kafka.Header{{Key: "ot-baggage-sandbox%2eid", Value: []byte("pr-42")}}
	malformed["ot-lookalike-percent-first"] = []kafka.Header{{Key: "Ot-Baggage-%73andbox.id", Value: []byte("pr-42")}}
	malformed["ot-lookalike-plus"] = []kafka.Header{{Key: "ot-baggage-sandbox+.id", Value: []byte("pr-42")}}
	malformed["ot-lookalike-beside-markers"] = []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "ot-baggage-sandbox%2Eid", Value: []byte("pr-42")}}
}

// TestOTHeaderFormsAgreeing: a producer instrumented with OpenTelemetry's
// ottrace propagator beside W3C's writes every baggage member as a record
// header ot-baggage-<key> too. Beside the markers, agreeing with them,
// those are one more reading of the same sandbox: the message is the
// sandbox's, on the embedded broker.
func TestOTHeaderFormsAgreeing(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := kafkatest.Writer(t, addrs, topic)
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("order"), Headers: []kafka.Header{
		{Key: "sandbox-id", Value: []byte("pr-42")},
		{Key: "baggage", Value: []byte("sandbox.id=pr-42,sandbox.actor=alice")},
		{Key: "ot-baggage-sandbox.id", Value: []byte("pr-42")},
		{Key: "ot-baggage-sandbox.actor", Value: []byte("alice")},
	}}); err != nil {
		t.Fatal(err)
	}
	// pr-42 overrides no service here: its messages are the baseline's.
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-42"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("orders")), table, service)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mctx, msg, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := propagation.FromContext(mctx); !ok || s.ID != "pr-42" || s.Actor != "alice" || string(msg.Value) != "order" {
		t.Fatalf("message %q in sandbox %+v (%v); want order in pr-42, actor alice", msg.Value, s, ok)
	}
	if c := r.Counts(); c.Unreadable != 0 || c.Delivered != 1 {
		t.Errorf("counts %+v", c)
	}
}
