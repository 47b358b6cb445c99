// Package httpmw makes net/http services sandbox-aware: [NewHandler] (or
// [NewMiddleware]) on the way in, [NewTransport] (propagation) or
// [NewRoutingTransport] (propagation and upstream choice) on the way out,
// and [NewProxy] in front of services that cannot import the library.
//
//	handler, err := httpmw.NewHandler(mux,
//		httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")),
//		httpmw.WithLogger(logger))
//	if err != nil {
//		return err // a misconfiguration: errors.Is(err, httpmw.ErrConfig)
//	}
//	srv := &http.Server{Handler: handler}
//
//	toCart, err := httpmw.NewRoutingTransport(nil, table, "cart")
//	if err != nil {
//		return err
//	}
//	client := &http.Client{Transport: toCart}
//	req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://cart/items", nil)
//	resp, err := client.Do(req) // reaches the sandbox's cart, if it has one
//
// # Options
//
// Options are typed by the constructors that can use them, as connect-go's
// are: a [HandlerOption] configures [NewHandler] and [NewMiddleware], a
// [TransportOption] the transports, a [RoutingTransportOption] the
// routing transports only (every TransportOption is one), a [ProxyOption]
// [NewProxy]. A [TrustOption] ([TrustAll], [WithTrustedNetworks],
// [WithTrustedHops], [WithVerifier]) is both a handler and a proxy option;
// a [RoutingOption] ([WithFallbackOnUnavailable]) both a routing transport
// and a proxy option; an
// [Option] ([WithCodec], [WithLogger], [WithBreaker]) fits every
// constructor. An option given to a constructor that cannot use it does
// not compile. What a constructor cannot do without (the handler to wrap,
// the route table and service of a routing transport or proxy) is an
// argument, not an option.
//
// Every constructor checks its configuration once, when it is called: a
// nil handler, table or verifier, an empty service, an invalid trusted
// prefix, conflicting options ([TrustAll] with [WithTrustedNetworks] or
// [WithTrustedHops]; two codecs), an option without what it needs
// ([WithTrustedHops] without [WithTrustedNetworks]) are an error wrapping
// [ErrConfig] whose text names the option, never a silent default. Nil
// options in the list are skipped.
//
// # Trust
//
// Sandbox markers (the Sandbox-Id header and the sandbox.* baggage
// members, see package [propagation]) are honoured only from trusted
// sources. By default nothing is trusted: until a trust option is given,
// every marker is stripped. A source is trusted when any of these holds:
//
//   - the peer address (Request.RemoteAddr) is in a network given to
//     [WithTrustedNetworks];
//   - behind proxies ([WithTrustedHops] n > 0): the peer is in a trusted
//     network and so is the client address, the n-th entry from the right
//     of X-Forwarded-For. Entries the client wrote itself (further left)
//     are never read; fewer than n entries, or an entry that is not an IP
//     address, make the source untrusted. A Forwarded (RFC 7239) header,
//     when present, must name a trusted client in its n-th element from
//     the right too;
//   - the markers come with a valid signed ticket ([WithVerifier]), from
//     any peer. The ticket binds the ID, actor and origin: a request whose
//     actor or origin differs from the ticket's is rejected, and so is an
//     expired or tampered ticket, whatever the peer. A ticket vouches for
//     its sandbox alone: other tools' routing keys on an untrusted
//     client's request are stripped and audited even when its ticket
//     admits it. The ticket itself, a bearer credential, goes no further:
//     the handler's request headers and its context's OpenTelemetry
//     baggage no longer hold it ([propagation.Codec.StripTicket]), and an
//     error about it never shows its signature;
//   - [TrustAll] is set, for internal hops behind an edge that filters.
//
// Markers from an untrusted source are stripped (the dedicated header, our
// baggage members under every spelling some parser reads as them, headers
// named as our baggage keys; other baggage members stay) and the request
// goes on as production traffic. Other tools' routing keys (Signadot's,
// Okteto's) and underscore spellings of marker headers (Sandbox_Id, which
// CGI-style hops read as Sandbox-Id) are stripped from untrusted sources
// too, with an audit record, even when the request carries none of ours;
// see [propagation.KeepForeignRoutingKeys]. So are grpc-gateway's forms of
// all of these (Grpc-Metadata-Sandbox-Id, Grpc-Metadata-Baggage holding
// our members, ...), which a gateway behind the handler passes on to its
// gRPC hop as the markers themselves; from a trusted source they are read
// with the other markers and must agree with them. Deep forms, under two
// or more prefixes (Grpc-Metadata-Grpc-Metadata-Sandbox-Id, in any case,
// with '_' for '-'), which each gateway behind the handler and each
// handler copying its metadata onto an HTTP request bring one prefix
// closer to a marker, are stripped and audited from an untrusted client
// too, also when it is admitted on a ticket (the ticket vouches for what
// is read here); a trusted source's are kept, not read: they are a
// marker only further on, where they are read. Markers from a trusted source
// that cannot be read (malformed or empty, conflicting header and baggage,
// a key only some parsers read as ours, a header named as one of our keys
// in any form, Sandbox.id or Uberctx-Sandbox.actor, alone or disagreeing
// with the other markers (beside them and agreeing, as OpenTelemetry's
// ottrace propagator writes Ot-Baggage-Sandbox.id, it is one more reading
// of the same sandbox), over the W3C baggage limits, a bad ticket) are answered with 400 Bad Request
// and a short plain-text body naming the problem; the wrapped handler is
// not called. A trusted source's marker header spelt with '_' for '-'
// (Sandbox_Id, Ot-Baggage_sandbox.id) is kept by a handler, whose own
// code reads no such header, and answered 400 by [NewProxy] when the
// request carries no marker the proxy reads: the proxied service, a
// CGI-style one perhaps, would read it as the marker the proxy did not
// route, budget or audit by. (Beside markers the proxy reads, it is
// dropped: the admitted sandbox alone goes on.) Admitted
// requests carry the sandbox in their context, and the active span gets
// the sandbox.id attribute.
//
// # Upstream choice
//
// A routing transport ([NewRoutingTransport] for one service,
// [NewHostRoutingTransport] for a client of several, by host) sends a
// sandbox's request to the sandbox's upstream when the route table says
// the sandbox overrides the request's service, and to the original URL
// otherwise. When the sandbox's
// upstream refuses the connection, the request fails with
// [ErrSandboxUnavailable] instead of quietly running on the baseline,
// unless [WithFallbackOnUnavailable] is set.
//
// # Budgets
//
// [WithBreaker] puts traffic under the per-sandbox budgets of a
// [breaker.Group]: a rate limit, a cap on requests in flight and a circuit
// breaker per sandbox, so that one runaway sandbox is throttled alone. On a
// [Transport] a request over its budget is not sent and RoundTrip returns
// an error wrapping [breaker.ErrOpen], [breaker.ErrThrottled] or
// [breaker.ErrTooManyInFlight]; 5xx responses and failed round trips count
// as failures. On a handler or a [Proxy] a service protects itself: a
// sandbox request over its budget is answered 429 Too Many Requests (rate
// limit) or 503 Service Unavailable (breaker open, too many in flight),
// with Retry-After, and does not reach the handler; 5xx answers and panics
// count as failures. A request the caller cancelled counts for nothing.
// Baseline requests never touch the group unless it has a baseline budget.
//
// # Audit
//
// With [WithLogger], every decision is one structured record (the schema
// is package [github.com/sandboxkit/sandboxkit/audit]): admitted,
// stripped and rejected requests on the way in; routed and fallback
// requests on the way out (for routing transports, and requests to a
// service they know); throttled requests on both sides ([WithBreaker]). Without a
// logger the middleware logs nothing.
//
// # Performance
//
// A request without sandbox markers passes the handler without any
// allocation (one pass over its header names and the baggage value,
// [propagation.Codec.Quiet]: about 920 instructions with the middleware's
// own, 1.4–1.5× what two lookups cost before other tools' keys and our keys
// as header names were looked for, the pass itself being most of the gap;
// the peer's address is parsed only when
// there is something to admit or strip; one pass whatever the number of
// headers: a browser's 14 cost about 2200 instructions, against 8500
// when more than 8 were looked up name by name; a header starting with
// 'G' or 'g' is looked at further, as a possible grpc-gateway form,
// about 100 instructions), and a
// request whose context has no sandbox goes to the
// transport's base as it is, without allocation, with or without
// [WithBreaker] (unless the group has a baseline budget). An admitted
// request costs two allocations (the context and the shallow request
// copy), one more when a baggage value is percent-encoded; with
// [WithBreaker] the handler adds five for the response writer wrapper
// (github.com/felixge/httpsnoop, which keeps the writer's optional
// interfaces) that reads the status. A sandbox request on the way out is
// cloned with Request.Clone before its headers are set (and its context
// given the sandbox's baggage members when it carries OpenTelemetry
// baggage, a few allocations more); a refused one allocates its error.
//
// # Concurrency
//
// Handlers, middleware, [Transport] and [Proxy] are immutable once built
// and safe for concurrent use, as is a [breaker.Group]. The zero value of
// [Transport] propagates with the default codec through
// http.DefaultTransport; the zero value of [Proxy] is not usable.
package httpmw
