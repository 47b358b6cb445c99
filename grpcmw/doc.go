// Package grpcmw carries sandboxes through gRPC: server interceptors that
// admit, strip or reject the sandbox markers of incoming calls, client
// interceptors that write the context's sandbox into outgoing metadata, and
// a [Router] that sends each call to the sandbox's version of a service or
// to the baseline.
//
// # Constructors and options
//
// Three constructors, each returning an error when its options cannot work
// together (an [ErrConfig] error naming the option: TrustAll beside
// WithTrustedNetworks, an invalid prefix, a nil, zero or second different
// codec, a nil verifier, a router option given to the client
// interceptors, a missing required argument):
//
//	in, err := grpcmw.NewServerInterceptors(opts ...grpcmw.ServerOption)  // in.Unary(), in.Stream()
//	out, err := grpcmw.NewClientInterceptors(opts ...grpcmw.ClientOption) // out.Unary(), out.Stream()
//	router, err := grpcmw.NewRouter(baseline, table, service, opts ...grpcmw.RouterOption)
//
// The unary and stream interceptors of one side come from one constructor
// because they must share one configuration: a server whose stream
// interceptor trusted other networks than its unary one would be a
// misconfiguration nobody sees, and a single error to check is what a
// grpc-go user expects of a stats handler or a client (grpc.NewClient,
// otelgrpc.NewServerHandler). Install both; they are cheap to call once.
//
// Options are typed by role, as connect-go types its own: the trust
// options ([TrustAll], [WithTrustedNetworks], [WithVerifier]) are of type
// [ServerOption]; [WithDialOptions] and [WithFallbackOnUnavailable] are
// of type [RouterOption], which only [NewRouter] takes; every
// [ClientOption] is also a RouterOption; [WithCodec], [WithLogger] and
// [WithBreaker] are of type [Option], all roles at once. An option given to a constructor that
// cannot use it does not compile. Nil options are skipped.
// Options are resolved once, at construction; nothing is decided per call.
//
// # Server
//
// The interceptors of [NewServerInterceptors] read the markers
// (the sandbox-id metadata key and the W3C baggage members, as the
// [propagation.Codec] names them) strictly, and apply one trust policy, the
// same as httpmw's:
//
//   - markers from a trusted peer ([TrustAll], [WithTrustedNetworks]; the
//     peer address comes from peer.FromContext) or with a valid signed
//     ticket ([WithVerifier]) are admitted: the handler's context carries
//     the sandbox ([propagation.FromContext]), and the active span gets the
//     sandbox.id attribute; a ticket vouches for its sandbox alone, so
//     other tools' routing keys (and grpc-gateway's forms of markers) on
//     an untrusted peer's call are stripped and audited even when its
//     ticket admits it; the ticket itself goes no further than the
//     interceptor: the handler's incoming metadata and its context's
//     OpenTelemetry baggage no longer hold it;
//   - markers from any other peer are stripped: the handler sees incoming
//     metadata without them (a stripped copy; the transport's metadata is
//     never modified) and serves the call as baseline traffic;
//   - unreadable markers from a trusted peer, and invalid tickets from any
//     peer, fail the call with codes.InvalidArgument and a message naming
//     the problem; the handler is not called ([ErrRejected]).
//
// The zero policy (no trust option) trusts no peer: every marker is
// stripped. Each admitted, stripped or rejected call is one audit record on
// the [WithLogger] logger.
//
// # Client
//
// The interceptors of [NewClientInterceptors] inject the context's sandbox
// into the call's outgoing metadata, merged with what the caller set. A
// context without a sandbox passes through untouched.
//
// # Router
//
// [NewRouter] wraps a baseline connection in a grpc.ClientConnInterface
// that generated clients accept. Per call it looks the context's sandbox up
// in the [routes.Table] for its service: an override goes to the sandbox's
// own connection (made lazily with [WithDialOptions], shared, closed when
// the route goes away), anything else to the baseline. A sandbox whose
// upstream cannot be reached gets codes.Unavailable ([ErrSandboxUnavailable]),
// never a silent answer from the baseline, unless
// [WithFallbackOnUnavailable] says otherwise; so does a sandbox call the
// table cannot decide because it has never loaded (give a router for
// routes built in code a [routes.NewStatic] table, even an empty one).
//
// # Budgets
//
// [WithBreaker] puts calls under the per-sandbox budgets of a
// [breaker.Group] (a rate limit, a cap on calls in flight and a circuit
// breaker per sandbox), on the client interceptors, the [Router] (every
// sandbox call, whichever connection it takes) and the server
// interceptors. A call over its budget fails with codes.ResourceExhausted
// (rate limit) or codes.Unavailable (breaker open, too many in flight),
// with the retry-after hint in the message and in an errdetails.RetryInfo
// detail; on the client side it is not sent and the error wraps the
// group's refusal ([breaker.ErrThrottled] and so on), on the server side
// the handler is not called. Calls ending with Unavailable, Internal,
// Unknown or DeadlineExceeded count as failures, Canceled counts for
// nothing, other codes are the application's answers. Calls without a
// sandbox never touch the group unless it has a baseline budget. Each
// refusal is an audit.Throttled record.
//
// # OpenTelemetry
//
// The interceptors work beside otelgrpc's stats handlers. A hop that runs
// only otelgrpc, with the W3C baggage propagator, carries the sandbox on in
// baggage, and the next hop with these interceptors reads it. When markers
// are stripped, the interceptor also removes them from the OpenTelemetry
// baggage a stats handler may have extracted before it (our members under
// every spelling a parser reads as them, and other tools' routing keys). If
// an earlier layer already put a [propagation.Sandbox] into the context
// from markers this interceptor strips (a [propagation.Propagator] in
// otelgrpc's propagators), that sandbox is taken out of the context too:
// the call is stripped, audited and served as production, as promise 3
// says, never rejected and never run in the sandbox; so it is when the
// interceptor finds no marker of its own on an untrusted peer's call (that
// layer was built with another codec), and when members of ours or other
// tools' routing keys are in such a call's OpenTelemetry baggage without
// being in its metadata (a propagator that reads another form put them
// there).
//
// On the client side, gRPC calls otelgrpc's client stats handler after
// the interceptors and the [Router], and its Baggage propagator sets the
// baggage metadata from the context's OpenTelemetry baggage, replacing
// what they wrote. A sandbox call whose context carries OpenTelemetry
// baggage therefore gets the sandbox recorded in that baggage too
// ([propagation.Codec.MirrorContext]: our members there replaced, under
// every spelling, a ticket dropped, other members kept as far as the W3C
// limits allow), so that it
// leaves once, in baggage as well as in sandbox-id, whatever the
// propagators.
//
// Markers are judged under the codec's wide definition (see
// [propagation.Codec.Read]), as httpmw judges an HTTP request: a lookalike
// baggage key, an empty sandbox-id value, and metadata named as any of our
// baggage keys in any of its forms ([propagation.Codec.KeyHeaders]:
// sandbox.id, uberctx-sandbox.actor, ot-baggage-sandbox.ticket; and
// uberctx-sd-routing-key with [propagation.WithSignadot]), alone, in any
// case, are unreadable (InvalidArgument from a trusted peer, with a
// rejected record, as an HTTP hop answers 400; stripped from any other);
// beside sandbox-id or baggage such metadata is one more reading of the
// member it names (otelgrpc with OpenTelemetry's ottrace propagator
// writes every baggage member as ot-baggage-<key>), admitted when it
// agrees, in every case it is spelled in, and unreadable when it does
// not, as the codec reads it ([propagation.Codec.Read]). Other tools' routing keys
// (Signadot's sd-routing-key in baggage and its uberctx- and ot-baggage-
// metadata forms, Okteto's okteto-divert) and the underscore spellings of
// marker keys that CGI-style hops read as the hyphenated ones (sandbox_id)
// are stripped from an untrusted peer and audited too, also on a call that
// carries no marker of ours; the foreign keys stay with
// [propagation.KeepForeignRoutingKeys]. Metadata named as our actor,
// origin or ticket key alone (uberctx-sandbox.actor) is a marker on
// every carrier (an HTTP hop with the library answers it with 400, a
// Kafka reader does not hand it to baseline code, a Jaeger or OpenTracing
// propagator turns it into baggage): a trusted peer's call with it fails
// here, never served as production with the key passed on to a next hop
// that refuses it. Metadata in OpenTracing's form whose key is ours only
// once decoded, a '%' escape or a '+' in it (ot-baggage-sandbox%2eid,
// ot-baggage-%73andbox.id, ot-baggage-sandbox+.id;
// [propagation.Codec.IsKeyHeaderLookalike]), is a marker that never
// agrees, alone or beside markers it would agree with: otelgrpc's ottrace
// propagator reads it into the context's baggage as the member
// "sandbox%2eid", which the hop sends on and a lenient parser reads as
// sandbox.id. grpc-go's client refuses to send such a key ("contains
// illegal characters"), but any other HTTP/2 client can, both bytes
// being valid in a header name; a trusted peer's call with one fails
// with InvalidArgument (400 on HTTP), an untrusted peer's loses it from
// its metadata and baggage, audited. So are grpc-gateway's forms of all of
// these (grpc-metadata-sandbox-id, grpc-metadata-baggage holding a member
// of ours or a foreign key, grpc-metadata-sandbox.actor,
// grpc-metadata-sandbox_id, grpc-metadata-uberctx-sd-routing-key): nothing
// on gRPC reads them, but a handler that copies its incoming metadata onto
// an outgoing HTTP request sends them as headers an HTTP hop with the
// library reads as ours, or a Signadot hop behind a gateway as its key;
// each form is judged as [propagation.Codec.Read] and
// [propagation.Codec.Foreign] judge it on an HTTP request. A valid ticket
// vouches for its sandbox alone: an untrusted peer it admits loses those
// forms too. The handler of an untrusted peer's call without a ticket
// gets the copy of the metadata the interceptor judged, so that an earlier
// layer that put one key under two spellings (baggage and Baggage) cannot
// have it judge one and the handler read the other. Gateway forms count
// whatever the number of prefixes (grpc-metadata-grpc-metadata-
// sandbox-id, which copying handlers and gateways further on bring one
// prefix closer to a marker each), in any case and with '_' for '-'. A
// trusted peer's are kept. An HTTP edge with the library (httpmw) strips
// every such form, a doubled prefix
// (Grpc-Metadata-Grpc-Metadata-Sandbox-Id) included, from an untrusted
// client, so that a grpc-gateway behind it never hands this server one
// from outside.
//
// # Performance
//
// A call without a sandbox costs no allocation in the client interceptors
// or the router, with or without [WithBreaker] (unless the group has a
// baseline budget), nor in the server interceptors when it comes from a
// trusted peer. The server reads a call's dedicated header, baggage and
// keys named as ours in one pass over gRPC's own incoming metadata, in
// place and never modified: gRPC's lookups (ValueFromIncomingContext)
// each walk the context, copy what they find and, on a miss, scan every
// key, and the forms of our keys are a dozen. The package does not export
// where it keeps that metadata; the server finds the context key once,
// from what ValueFromIncomingContext asks a context for, and uses it only
// when a context NewIncomingContext made gives its metadata back under
// it. A gRPC that keeps it otherwise gets one lookup a form: correct,
// several times slower, but for one gap: a lookalike key in OpenTracing's
// form (ot-baggage-sandbox%2eid, see above) cannot be looked up by what
// it decodes to, so a trusted peer's call holding one and no other
// marker is served as production, the key left in its metadata and
// baggage (beside markers, or from an untrusted peer, it is found in the
// copy of the metadata those calls read). A call holding a key in
// OpenTracing's form with a '%' or a '+' that is not ours costs the
// allocation or two the codec spends decoding it to tell. An untrusted peer's call costs one copy of its
// metadata (a map and a slice a key, and the context that hands it on),
// read in one pass, since what it holds is stripped from the copy.
//
// # Concurrency
//
// [ServerInterceptors], [ClientInterceptors], the interceptors they return
// and a [Router] are safe for concurrent use.
package grpcmw
