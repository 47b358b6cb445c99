package kafkamw

import (
	"bytes"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// Tickets (propagation.Signer) are an HTTP and gRPC edge credential:
// Kafka producers are trusted by network and a record's ticket vouches
// for nothing. A ticket a producer left on a record is a bearer
// credential all the same, and the package copies it no further than the
// record it came on: the writer drops it from a caller's baggage it keeps,
// the split mode from its copies, and the dead-letter writer redacts its
// signature.

// ticketKey returns the baggage key of codec's ticket.
func ticketKey(codec *propagation.Codec) []byte {
	return []byte(codec.Keys()[3]) // ID, actor, origin, ticket, compatibility keys
}

// mayHoldTicket reports, without allocating, whether hs may hold a ticket
// member: a baggage header whose value holds the text of key. A readable
// message's ticket is spelt exactly (a lookalike key makes it unreadable).
func mayHoldTicket(hs []kafka.Header, key []byte) bool {
	for _, h := range hs {
		if keyIs(h.Key, baggageKey) && bytes.Contains(h.Value, key) {
			return true
		}
	}
	return false
}

// withoutTicket returns hs, a header list of the caller's own, without
// ticket members in its baggage.
func withoutTicket(codec *propagation.Codec, hs []kafka.Header) []kafka.Header {
	c := carrier{list: hs}
	codec.StripTicket(&c)
	return c.list
}
