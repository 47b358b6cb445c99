package kafkamw

import (
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkMayHoldTicket is what the split mode's forwarding pays per copy
// to look for a ticket it must drop: the headers a forwarded copy
// typically has (the writer's dedicated header and baggage, a trace
// header, the split source), without a ticket. It must not allocate.
func BenchmarkMayHoldTicket(b *testing.B) {
	key := ticketKey(propagation.Default())
	hs := []kafka.Header{
		{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
		{Key: "sandbox-id", Value: []byte("pr-42")},
		{Key: "baggage", Value: []byte("sandbox.id=pr-42,sandbox.actor=alice,sandbox.origin=github.com/acme/shop/pull/42,tenant=acme")},
		{Key: HeaderSplitSource, Value: []byte("3/123456")},
	}
	if mayHoldTicket(hs, key) {
		b.Fatal("a ticket found where there is none")
	}
	if n := testing.AllocsPerRun(100, func() { mayHoldTicket(hs, key) }); n != 0 {
		b.Fatalf("%v allocations", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		mayHoldTicket(hs, key)
	}
}
