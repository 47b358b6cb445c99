// Package shipping is the shop's shipping service: a Kafka consumer of
// order-placed events that records a shipment per order in PostgreSQL.
//
// A sandbox that overrides shipping runs its own [Consumer] next to the
// baseline one. Both read every event of the topic through a
// [kafkamw.Reader], each in its own consumer group, and each event is
// processed by exactly one of them:
//
//   - the sandbox's consumer ([kafkamw.AsSandbox]) processes the events
//     of its sandbox;
//   - the baseline consumer processes all the others, production events
//     and those of sandboxes without a consumer of their own, with the
//     sandbox in the context.
//
// Events of a sandbox the route table does not know (removed, expired,
// never existed) belong to neither: the baseline consumer's reader skips,
// counts and dead-letters them.
//
// Shipments are written through a [dbroute.Router], so an event of a
// sandbox is recorded in the sandbox's test database whichever consumer
// processes it. [Consumer.Run] runs [kafkamw.Reader.Run]: an event of a
// sandbox that the router refuses (no test database) is dead-lettered
// rather than retried in front of production events; shipping is
// idempotent (one row per order, ON CONFLICT DO NOTHING), as Kafka's
// at-least-once delivery requires.
//
// A Consumer is also an http.Handler that reports its counters as JSON,
// and is safe for concurrent use.
package shipping
