package kafkamw_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTTraceOnlyConsumerKeepsSandboxAtk6: a producer instrumented by hand
// with OpenTelemetry's ottrace propagator beside W3C's (kafka-go has no
// instrumentation) sets its context's baggage on each record as
// baggage and ot-baggage-<key> headers, and writes through kafkamw's
// Writer with a sandbox in the context. B, a consumer running only
// OpenTelemetry with the same propagators, extracts the record's headers:
// ottrace replaces the baggage with the ot-baggage- members, so the
// record must carry the sandbox in that form too, or B produces on to C
// (a service with the library) as production. One message and a batch,
// on the embedded broker.
func TestOTTraceOnlyConsumerKeepsSandboxAtk6(t *testing.T) {
	ottest.Quiet(t)
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := kafkamw.NewWriter(kafkatest.Writer(t, addrs, topic))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	bag, _ := baggage.Parse("tenant=acme")
	appCtx, span := tp.Tracer("A").Start(baggage.ContextWithBaggage(ctx, bag), "produce")
	defer span.End()
	record := func(v string, extra ...kafka.Header) kafka.Message {
		h := http.Header{}
		ottest.Propagators.Inject(appCtx, otelprop.HeaderCarrier(h))
		m := kafka.Message{Value: []byte(v)}
		for k, vs := range h {
			m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(vs[0])})
		}
		m.Headers = append(m.Headers, extra...)
		return m
	}
	sbCtx := propagation.ContextWithSandbox(appCtx, propagation.Sandbox{ID: "pr-1", Actor: "alice"})
	cases := []struct {
		name string
		msgs []kafka.Message
	}{
		{"one", []kafka.Message{record("one")}},
		{"batch", []kafka.Message{record("batch-0"), record("batch-1")}},
		{"one, with the caller's markers", []kafka.Message{record("marked", kafka.Header{Key: "sandbox-id", Value: []byte("pr-1")})}},
		{"one, without baggage header", []kafka.Message{func() kafka.Message {
			m := record("nobag")
			for i, h := range m.Headers {
				if h.Key == "Baggage" {
					m.Headers = append(m.Headers[:i:i], m.Headers[i+1:]...)
					break
				}
			}
			return m
		}()}},
	}
	want := 0
	for _, tc := range cases {
		if err := w.WriteMessages(sbCtx, tc.msgs...); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want += len(tc.msgs)
	}
	r := kafka.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("b")))
	defer r.Close()
	for range want {
		msg, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in := http.Header{}
		for _, h := range msg.Headers {
			in.Add(h.Key, string(h.Value))
		}
		// B: OpenTelemetry only.
		bCtx := ottest.Propagators.Extract(context.Background(), otelprop.HeaderCarrier(ottest.Canonical(in)))
		out := http.Header{}
		ottest.Propagators.Inject(bCtx, otelprop.HeaderCarrier(out))
		// C: the library.
		m, err := propagation.Default().Read(otelprop.HeaderCarrier(out))
		if err != nil || m.Sandbox.ID != "pr-1" {
			t.Errorf("record %q: B's baggage %q; C reads %+v, %v; want sandbox pr-1 (record headers %v)", msg.Value, baggage.FromContext(bCtx), m, err, fmt.Sprint(msg.Headers))
		}
	}
}
