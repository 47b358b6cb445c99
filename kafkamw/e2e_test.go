package kafkamw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestHTTPToKafka: a request entering httpmw (behind otelhttp) produces a
// message through kafkamw.NewWriter; the consumer's context carries the
// same sandbox, and the consumer's span gets the sandbox ID. A request
// without markers produces an untagged message that reaches the baseline
// with no sandbox.
func TestHTTPToKafka(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))

	produce := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if err := w.WriteMessages(r.Context(), kafka.Message{Value: []byte(r.URL.Query().Get("order"))}); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.WriteHeader(http.StatusAccepted)
	})
	mw, err := httpmw.NewHandler(produce, httpmw.TrustAll())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(otelhttp.NewHandler(mw, "orders"))
	defer srv.Close()

	send := func(order string, h http.Header) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/orders?order="+order, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: status %s", order, resp.Status)
		}
	}
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice", Origin: "github.com/acme/shop/pull/42"}
	send("tagged", propagation.Default().HTTPHeader(sb))
	send("plain", nil)

	// pr-42 does not override the consuming service: both messages are
	// the baseline's, the tagged one with its sandbox.
	table, err := routes.NewStatic([]routes.Sandbox{{ID: sb.ID, Actor: sb.Actor}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("billing")), table, "billing")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[string]struct {
		s  propagation.Sandbox
		ok bool
	}{}
	for range 2 {
		sctx, span := tp.Tracer("consumer").Start(ctx, "consume")
		mctx, m, err := r.FetchMessage(sctx)
		span.End()
		if err != nil {
			t.Fatal(err)
		}
		s, ok := propagation.FromContext(mctx)
		got[string(m.Value)] = struct {
			s  propagation.Sandbox
			ok bool
		}{s, ok}
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if g := got["tagged"]; !g.ok || g.s != sb {
		t.Errorf("tagged message consumed with sandbox %+v (%v), want %+v", g.s, g.ok, sb)
	}
	if g := got["plain"]; g.ok {
		t.Errorf("untagged message consumed with sandbox %+v", g.s)
	}
	var annotated int
	for _, s := range spans.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == attribute.Key(audit.KeyID) && kv.Value.AsString() == sb.ID {
				annotated++
			}
		}
	}
	if annotated != 1 {
		t.Errorf("%d consumer spans carry sandbox.id=%s, want 1", annotated, sb.ID)
	}
}
