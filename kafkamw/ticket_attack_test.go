package kafkamw_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketOnKafka: tickets are an edge credential for HTTP and gRPC;
// Kafka producers are trusted by network and a record's ticket vouches
// for nothing. A ticket on a record (in baggage, or as a header named
// sandbox.ticket) must not make a record anyone's that it would not be
// without it, and a 24-hour bearer credential must not be copied further:
// not by kafkamw.Writer from the caller's baggage, not into the split
// mode's copies in the sandbox's topic, not into the dead-letter topic.
func TestTicketOnKafka(t *testing.T) {
	f := newSplitFixture(t, 1)
	signer, err := propagation.NewSigner(propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	// A ticket for B, which does not override the service, on records
	// of A, which does: it changes nothing.
	ticket, err := signer.Sign(sbB, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sig := ticket[strings.LastIndexByte(ticket, '.')+1:]
	hdr := func(kv ...string) []kafka.Header {
		var hs []kafka.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw := kafkatest.Writer(t, f.addrs, f.topic)
	msgs := []kafka.Message{
		{Value: []byte("a-baggage-ticket"), Headers: hdr("sandbox-id", sbA.ID, "baggage", "sandbox.id="+sbA.ID+",sandbox.ticket="+ticket)},
		{Value: []byte("a-ticket-header"), Headers: hdr("sandbox-id", sbA.ID, "sandbox.ticket", ticket)},
		{Value: []byte("ticket-alone"), Headers: hdr("baggage", "tenant=acme,sandbox.ticket="+ticket)},
		{Value: []byte("ticket-header-alone"), Headers: hdr("sandbox.ticket", ticket)},
	}
	if err := raw.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	// The library's writer, in A, given a caller's baggage that holds a
	// ticket (a handler copied its request's baggage): the sandbox's
	// members with it are replaced, the ticket with them; a ticket
	// without them is unreadable, and the write refused.
	sctx := propagation.ContextWithSandbox(ctx, sbA)
	copied := propagation.Default().HTTPHeader(sbA).Get("Baggage") + ",tenant=acme,sandbox.ticket=" + ticket
	if err := f.w.WriteMessages(sctx, kafka.Message{Value: []byte("a-written"), Headers: hdr("baggage", copied)}); err != nil {
		t.Fatal(err)
	}
	if err := f.w.WriteMessages(sctx, kafka.Message{Value: []byte("refused"), Headers: hdr("baggage", "tenant=acme,sandbox.ticket="+ticket)}); err == nil {
		t.Error("the writer wrote a message whose baggage holds a ticket without a sandbox")
	}
	if err := raw.WriteMessages(ctx, kafka.Message{Value: []byte("plain")}); err != nil {
		t.Fatal(err)
	}

	dlq := kafkatest.Topic(t, f.addrs, 1)
	base := startConsumer(t, "baseline", f.reader(true, kafkamw.WithDeadLetter(kafkatest.Writer(t, f.addrs, dlq))), 1)
	waitFor(t, 20*time.Second, "the baseline to decide everything", func() bool { return base.seen() == 6 })
	waitFor(t, 10*time.Second, "A's copies in A's topic", func() bool { return ends(t, f.addrs, f.aTopic) == 2 })
	got := base.stop()
	c := base.r.Counts()
	// A header named sandbox.ticket is a marker no hop of ours writes:
	// unreadable, as a header named sandbox.id is, beside A's ID or not.
	if c.Forwarded != 2 || c.Unreadable != 3 || c.DeadLettered != 3 || len(got) != 1 || string(got[0].msg.Value) != "plain" || got[0].tagged {
		t.Errorf("counts %+v, baseline processed %v: want A's two forwarded, the ticket header and the tickets without an ID unreadable, plain processed untagged", c, got)
	}
	check := func(where string, ms []kafka.Message) {
		for _, m := range ms {
			for _, h := range m.Headers {
				if strings.Contains(string(h.Value), sig) {
					t.Errorf("%s: record %q carries the ticket: %s: %s", where, m.Value, h.Key, h.Value)
				}
			}
		}
	}
	check("A's topic", readTopic(t, f.addrs, f.aTopic, 2))
	dead := readTopic(t, f.addrs, dlq, 3)
	check("dead-letter topic", dead)
	// What made them unreadable is still there to see: the ticket, its
	// signature redacted.
	for _, m := range dead {
		n := 0
		for _, h := range m.Headers {
			if strings.Contains(string(h.Value), "v1.k1.") && strings.Contains(string(h.Value), ".redacted") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("dead letter %q: %d redacted tickets, want 1: %v", m.Value, n, m.Headers)
		}
	}
	for _, m := range readTopic(t, f.addrs, f.topic, 6) {
		if string(m.Value) == "a-written" {
			check("the writer's record", []kafka.Message{m})
		}
	}
}
