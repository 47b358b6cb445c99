package kafkamw_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestDeadLetterTicketInEveryHeader: a dead letter keeps a record's
// headers as they came, duplicates included, each with every ticket's
// signature redacted. The atk3 attack found a ticket in the second of
// two headers of one name (a note, a deep grpc-gateway baggage) left
// whole: the redaction read each name's first value only. The other
// header of that name must stay as it was, not be merged away.
func TestDeadLetterTicketInEveryHeader(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	signer, err := propagation.NewSigner(propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := signer.Sign(propagation.Sandbox{ID: "pr-42"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sig := tk[strings.LastIndexByte(tk, '.')+1:]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hdrs := []kafka.Header{
		{Key: "sandbox-id", Value: []byte("NOT_A_LABEL")}, // unreadable: dead-lettered
		{Key: "x-note", Value: []byte("first")},
		{Key: "X-Note", Value: []byte("copied: " + tk)},
		{Key: "grpc-metadata-grpc-metadata-baggage", Value: []byte("tenant=acme")},
		{Key: "grpc-metadata-grpc-metadata-baggage", Value: []byte("sandbox.ticket=" + tk)},
		// Percent-encoded, as a baggage value may be: every hop decodes it.
		{Key: "x-enc", Value: []byte("first")},
		{Key: "x-enc", Value: []byte(strings.ReplaceAll(tk, ".", "%2E"))},
	}
	if err := kafkatest.Writer(t, addrs, topic).WriteMessages(ctx,
		kafka.Message{Key: []byte("bad"), Value: []byte("bad"), Headers: hdrs},
		kafka.Message{Value: []byte("good")}); err != nil {
		t.Fatal(err)
	}
	dlq := kafkatest.Topic(t, addrs, 1)
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), routes.New(), service, kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlq)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, m, err := r.FetchMessage(ctx); err != nil || string(m.Value) != "good" {
		t.Fatalf("FetchMessage = %q, %v; want good, past the unreadable message", m.Value, err)
	}
	m, ok := readAll(t, addrs, dlq, 1)["bad"]
	if !ok {
		t.Fatal("the unreadable message was not dead-lettered")
	}
	for _, h := range m.Headers {
		v, _ := url.PathUnescape(string(h.Value))
		if strings.Contains(v, sig) {
			t.Errorf("dead letter header %s keeps the ticket's signature: %q", h.Key, h.Value)
		}
	}
	for _, k := range []string{"x-note", "grpc-metadata-grpc-metadata-baggage", "x-enc"} {
		if got := header(m.Headers, k); len(got) != 2 {
			t.Errorf("dead letter %s = %q, want both headers kept", k, got)
		}
	}
	if got := header(m.Headers, "x-note"); len(got) == 2 && (got[0] != "first" || got[1] != "copied: "+tk[:len(tk)-len(sig)]+"redacted") {
		t.Errorf("x-note = %q, want the first as it was and the ticket's key ID and expiry kept", got)
	}
}
