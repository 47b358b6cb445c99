// Package propagation is the core of sandboxkit: the [Sandbox] a request
// belongs to, its validation, the context accessors ([ContextWithSandbox],
// [FromContext]), and the codec that reads and writes it on every carrier
// (HTTP headers, gRPC metadata, Kafka record headers).
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
// origin to an expiry; a [Verifier] accepts it only within its maximum
// lifetime ([DefaultMaxTicketLifetime]) and in its one canonical spelling.
//
// # What counts as a marker
//
// A marker is anything any hop may read as one, not only what the codec
// writes: our keys under every spelling that OpenTelemetry Go's baggage
// parser (which trims every Unicode space around a key) or a lenient one
// (OpenTelemetry JS and Python percent-decode keys, Python reads '+' as a
// space, Node.js hands header bytes to JavaScript as Latin-1, where a raw
// 0xA0 is a space) takes for ours, at every step of such a reading (with
// a configured key holding '+' or '%', "a%2Bb" is "a+b" to OpenTelemetry
// JS); an empty dedicated header; and a header named as
// one of our baggage keys (a Kafka record header "sandbox.id", as kcat -H
// writes it). [Codec.Read] finds them all ([Markers.Found]) and reads them
// only when every parser reads one value: a lookalike key, a value with
// bytes OpenTelemetry trims or rejects, or properties it drops make the
// markers unreadable. [Codec.Strip] removes every one of them, and
// [Codec.Inject] never keeps a lookalike next to ours. A header named as
// one of our keys (in Jaeger's uberctx- and OpenTracing's ot-baggage-
// forms too) is unreadable alone; beside the dedicated header or baggage
// it is one more reading of its member, which must agree, as
// OpenTelemetry's ottrace propagator reads it (it writes every baggage
// member in that form); one of the ticket's key never counts. On a
// carrier that already carries baggage in OpenTracing's form,
// [Codec.InjectSandbox] writes the sandbox in that form too: ottrace
// replaces the context's baggage with the members it finds there.
//
// Other tools' routing keys (Signadot's sd-routing-key in baggage and its
// header forms [SignadotJaegerHeader] and [SignadotDatadogHeader], Okteto's
// okteto-divert) are not ours unless [WithSignadot] or [WithOkteto] make
// them so; [Codec.Strip] removes them too, and [Codec.Foreign] reports
// them, unless [KeepForeignRoutingKeys].
//
// # grpc-gateway's forms
//
// grpc-gateway's default header matcher passes an HTTP header named
// Grpc-Metadata-<name> on to its gRPC hop as metadata <name>, removing one
// prefix. On an http.Header, [Codec.Read] reads the gateway forms of the
// markers (Grpc-Metadata-Sandbox-Id, Grpc-Metadata-Baggage, a key header
// under the prefix) as markers. A deep form, two or more prefixes
// (Grpc-Metadata-Grpc-Metadata-Sandbox-Id), or one spelled with '_' for
// '-' (Grpc_Metadata_Sandbox_Id, as CGI-style hops read it), before any
// name the codec acts on, is a marker only to a hop behind as many
// gateways and handlers that copy their metadata onto HTTP requests:
// Read does not read it (a trusted hop keeps it, for the gateway behind
// it, as a trusted gRPC hop keeps a single gateway form), [Codec.Quiet]
// and [Codec.Foreign] report it, and [Codec.Strip] and
// [Codec.StripForeign] remove it (under baggage's name, only our members
// and foreign keys go), whatever the number of prefixes and the case.
// Looking for them costs a key that does not start with 'G' or 'g'
// nothing: [Codec.Quiet] and [Codec.Foreign] read an http.Header in one
// pass, whatever its size.
//
// # Strict and lenient extraction
//
// [Codec.Extract] is strict: markers that cannot be read (a malformed or
// conflicting value, our member inside baggage that breaks the W3C limits of
// 64 members and 8192 bytes, baggage over the scan limits that may hold one,
// see "Hostile baggage") return an error wrapping one of the exported
// sentinels, never a context that silently looks like production traffic.
// The middleware packages use it and turn the error into HTTP 400, gRPC
// InvalidArgument or a skipped Kafka message.
//
// [Propagator] implements OpenTelemetry's TextMapPropagator for services that
// only use OpenTelemetry instrumentation. That interface cannot return an
// error, so it hands extraction errors to otel.Handle and leaves the context
// without a sandbox, and without our members in its OpenTelemetry baggage,
// so that such a hop never forwards markers it could not read. Compose it
// after the baggage propagator (the order matters for Extract too), as
// [NewTextMapPropagator] does:
//
//	otel.SetTextMapPropagator(propagation.NewTextMapPropagator(nil))
//	// the same as otel.SetTextMapPropagator(otelprop.NewCompositeTextMapPropagator(
//	//	otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil)))
//
// # Hostile baggage
//
// Reading every lenient spelling of every key costs work per key, and a
// client may send about a megabyte of baggage (Go's default
// http.Server.MaxHeaderBytes). So the work per header is bounded, and
// every bound fails closed:
//
//   - Baggage that may hold a member of ours (the text of one of our keys,
//     bytes a parser drops allowed inside it, or any '%') and is over
//     [MaxScanBaggageBytes] (32 KiB, all lines) or [MaxScanBaggageMembers]
//     (512, counted as commas) is not split: it is unreadable
//     ([ErrBaggageLimit]; a trusted source's request is refused), and
//     [Codec.Strip] removes it whole ([Codec.Foreign] reports it when it
//     may hide a foreign routing key). One linear pass decides it.
//     OpenTelemetry Go reads nothing of a baggage line over 8192 bytes,
//     but OpenTelemetry JS and the other lenient readers have no such
//     limit, so such baggage is not passed over as foreign either. Baggage
//     over the limits holding none of that text is left alone.
//   - Under those limits the lenient readings of a header's keys share a
//     work budget (8 KiB plus 8 units per byte of baggage; a key costs 16
//     units and its length, a round of decoding twice its length, a
//     reading of a codec with '+' or '%' in a key 64 units and three times
//     its length). A key met after it is spent counts as a lookalike of
//     the ID key: found and never readable. Baggage within the W3C limits
//     whose every key is percent-encoded stays well within it.
//
// The worst headers we could build (BenchmarkHostileBaggage: near-1 MB of
// '%', '+', spaces, tiny lenient members, nested escapes, with the default
// codec and one whose keys hold '+' and '%') cost Read, Strip or Foreign at
// most 0.13 ms (default codec) and 1.2 ms (the other), against 5.2 to 7 ms
// for net/http to parse the same request; before these bounds, up to 129
// and 157 ms and two million allocations. Just under the scan limits
// (32 KiB) they cost at most 0.51 and 0.58 ms, about 3.4 times net/http's
// 0.09 to 0.17 ms (before: 11 and 26 ms). Old and new interleaved, three
// runs, on a loaded 2-core VM:
//
//	go test ./propagation -run '^$' -bench HostileBaggage -benchmem -benchtime 5x
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
