// Package propagation is the core of sandboxkit: the [Sandbox] a request
// belongs to, its validation, the context accessors, and the codec that
// reads and writes it on every carrier (HTTP headers, gRPC metadata, Kafka
// record headers).
//
// # Wire format
//
// A sandbox travels in two places at once:
//
//   - the W3C baggage members sandbox.id, sandbox.actor and sandbox.origin
//     (values percent-encoded as the W3C Baggage specification says), so
//     that hops running only OpenTelemetry instrumentation carry it on;
//   - the dedicated header Sandbox-Id (sandbox-id in gRPC metadata and Kafka
//     record headers).
//
// All names are configurable ([WithHeader], [WithBaggageKeys]). When both
// carriers are present they must agree. An optional signed ticket
// (sandbox.ticket, see [Signer] and [Verifier]) binds an ID, actor and
// origin to an expiry.
//
// # Strict and lenient extraction
//
// [Codec.Extract] is strict: markers that cannot be read (a malformed or
// conflicting value, our member inside baggage that breaks the W3C limits of
// 64 members and 8192 bytes) return an error wrapping one of the exported
// sentinels, never a context that silently looks like production traffic.
// The middleware packages use it and turn the error into HTTP 400, gRPC
// InvalidArgument or a skipped Kafka message.
//
// [Propagator] implements OpenTelemetry's TextMapPropagator for services that
// only use OpenTelemetry instrumentation. That interface cannot return an
// error, so it hands extraction errors to otel.Handle and leaves the context
// without a sandbox. Compose it after the baggage propagator:
//
//	otel.SetTextMapPropagator(otelprop.NewCompositeTextMapPropagator(
//		otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil)))
//
// # Performance
//
// A carrier without sandbox markers is read without allocating. A request
// with a sandbox costs one allocation for the context (and one more only when
// a value is percent-encoded). Options are resolved when the [Codec] is
// built, never per request.
//
// # Concurrency
//
// [Codec], [Propagator], [Signer] and [Verifier] are immutable after
// construction and safe for concurrent use.
package propagation
