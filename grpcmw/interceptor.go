package grpcmw

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/ingress"
	"github.com/sandboxkit/sandboxkit/internal/keytext"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// baggageKey is the W3C baggage header as gRPC metadata spells it.
const baggageKey = "baggage"

// ServerInterceptors are the unary and stream server interceptors of one
// trust policy. Build them with [NewServerInterceptors] and install both:
//
//	in, err := grpcmw.NewServerInterceptors(grpcmw.WithTrustedNetworks(mesh))
//	if err != nil {
//		return err
//	}
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(in.Unary()),
//		grpc.ChainStreamInterceptor(in.Stream()))
//
// They are safe for concurrent use. The zero value is not usable.
type ServerInterceptors struct {
	unary  grpc.UnaryServerInterceptor // made once, at construction
	stream grpc.StreamServerInterceptor
}

// NewServerInterceptors returns server interceptors that read the sandbox
// markers of each incoming call and decide, by the trust options, what to
// do with them:
//
//   - none: the handler runs with the context as it came;
//   - admitted (trusted peer, or valid ticket): the handler's context
//     carries the [propagation.Sandbox] ([propagation.FromContext]);
//   - stripped (untrusted peer, no ticket): the handler runs as baseline
//     traffic and sees the incoming metadata without the markers;
//   - rejected (unreadable markers from a trusted peer, bad ticket): the
//     call fails with codes.InvalidArgument naming the problem and the
//     handler is not called.
//
// Every decision but "none" is audited through the [WithLogger] logger.
// With [WithBreaker], a call over its sandbox's budget fails with
// codes.Unavailable or codes.ResourceExhausted and the handler is not
// called.
//
// Options that cannot work (see [ErrConfig]) are an error; nil options are
// skipped.
func NewServerInterceptors(opts ...ServerOption) (*ServerInterceptors, error) {
	cfg, err := newServerConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &server{
		gate:   ingress.Gate{Codec: cfg.codec, Logger: cfg.logger, Policy: cfg.policy, Protocol: audit.GRPC},
		header: cfg.codec.Header(),
		keys:   cfg.codec.Keys(),
		budget: newBudget(&cfg),
	}
	s.named = cfg.codec.KeyHeaders()
	if !cfg.lookUp {
		s.mdKey = incomingKey()
	}
	for _, k := range s.named {
		for _, b := range []byte{k[0], strings.ToUpper(k[:1])[0]} {
			s.namedLens[b] |= 1 << (len(k) % 64)
		}
	}
	s.watch = watchKeys(cfg.codec)
	s.dashed = dashedKeys(s.watch, s.header)
	for k := range s.dashed {
		for _, b := range []byte{k[0], strings.ToUpper(k[:1])[0], strings.ReplaceAll(k[:1], "-", "_")[0]} {
			s.dashedLens[b] |= 1 << (len(k) % 64)
		}
	}
	return &ServerInterceptors{unary: s.unary(), stream: s.stream()}, nil
}

// Unary returns the unary server interceptor.
func (in *ServerInterceptors) Unary() grpc.UnaryServerInterceptor { return in.unary }

// Stream returns the stream server interceptor: the handler receives a
// stream whose Context carries the decision.
func (in *ServerInterceptors) Stream() grpc.StreamServerInterceptor { return in.stream }

// The builders of the interceptors are not inlined: a closure made
// inside an inlined call is compiled again in the caller, where Go does
// not inline the calls it makes (propagation.FromContext), and the hot
// path of a call without a sandbox got slower.
//
//go:noinline
func (s *server) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := s.admit(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if !s.budget.Active() {
			return handler(ctx, req)
		}
		sb, ok := propagation.FromContext(ctx)
		if !s.budget.Covers(ok) {
			return handler(ctx, req)
		}
		done, err := s.budget.allow(ctx, sb, info.FullMethod, true)
		if err != nil {
			return nil, err
		}
		result := errPanicked
		defer func() { done(result) }()
		resp, err := handler(ctx, req)
		result = outcome(err)
		return resp, err
	}
}

//go:noinline
func (s *server) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		next, err := s.admit(ctx, info.FullMethod)
		if err != nil {
			return err
		}
		if next != ctx {
			ss = &serverStream{ServerStream: ss, ctx: next}
		}
		if !s.budget.Active() {
			return handler(srv, ss)
		}
		sb, ok := propagation.FromContext(next)
		if !s.budget.Covers(ok) {
			return handler(srv, ss)
		}
		done, err := s.budget.allow(next, sb, info.FullMethod, true)
		if err != nil {
			return err
		}
		result := errPanicked
		defer func() { done(result) }()
		err = handler(srv, ss)
		result = outcome(err)
		return err
	}
}

// serverStream is a grpc.ServerStream with a replaced context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// server is the state shared by the server interceptors, resolved once.
// Reading the markers from the metadata and judging the peer are gRPC's;
// the outcome of a verdict (audit record, span attributes, context) is the
// shared kernel's (internal/ingress).
type server struct {
	gate   ingress.Gate
	header string   // the dedicated header, lower-case; "" when none
	keys   []string // our baggage keys, to spot them without parsing
	named  []string // metadata keys that are markers (Codec.KeyHeaders)
	// mdKey is the context key under which gRPC keeps a call's incoming
	// metadata (see incomingKey); nil when it could not be found, and
	// then each of named is looked up in turn.
	mdKey  any
	watch  map[string]struct{} // what makes an untrusted peer's call read in full (see watchKeys)
	dashed map[string]struct{} // watch and the header, '-' for '_' (see dashedName)
	budget budget
	// namedLens[b] has bit n%64 set when a key of named that starts with
	// b (any case) is n bytes long (see scan). A call reads the few lines
	// of the first bytes of its keys.
	namedLens [256]uint64
	// dashedLens[b] has bit n%64 set when a key of dashed that starts
	// with b (any case, '_' for '-') is n bytes long. Last: 2 KiB that
	// only an untrusted peer's call reads, kept off the lines every call
	// reads.
	dashedLens [256]uint64
}

// admit applies the trust policy to the markers in ctx's incoming metadata.
// Without markers it returns ctx itself and allocates nothing (read in
// place; gRPC's lookups copy a baggage value they hand out).
func (s *server) admit(ctx context.Context, method string) (context.Context, error) {
	// Metadata named as one of our baggage keys in any of its forms
	// (grpcurl -H 'sandbox.id: pr-1'; uberctx-sandbox.actor, which
	// Jaeger's and OpenTracing's OpenTelemetry propagators turn into
	// baggage), alone or beside other markers, is a marker too, as
	// Codec.Read finds it on an HTTP request: unreadable from a trusted
	// peer, stripped from an untrusted one.
	//
	// Metadata in OpenTracing's form whose key is ours only once decoded
	// (ot-baggage-sandbox%2eid, see propagation.Codec.IsKeyHeaderLookalike;
	// grpc-go's client cannot send it, any other HTTP/2 client can) is
	// a marker that never agrees: otelgrpc's ottrace reads it into the
	// baggage a later hop sends on.
	var hv, bv []string
	var keyMD, look string
	in, inPlace := s.incoming(ctx)
	if inPlace {
		hv, bv, keyMD, look = s.scan(in)
	} else {
		if s.header != "" {
			hv = metadata.ValueFromIncomingContext(ctx, s.header)
		}
		bv = metadata.ValueFromIncomingContext(ctx, baggageKey)
	}
	var md metadata.MD // a copy of the incoming metadata, once made
	if len(hv) == 0 && !s.mentions(bv) {
		if !inPlace {
			keyMD = s.lookUpNamed(ctx)
		}
		if keyMD == "" && look == "" {
			if s.gate.Policy.All {
				return ctx, nil
			}
			return s.foreign(ctx, method), nil
		}
	} else {
		// A call with markers is admitted, stripped or rejected, each
		// of which allocates: one copy of the metadata (which a strip
		// needs anyway) is cheaper than a dozen lookups that scan it.
		md, _ = metadata.FromIncomingContext(ctx)
		if !inPlace {
			for _, k := range s.named {
				if _, ok := md[k]; ok {
					keyMD = k
					break
				}
			}
			for k := range md {
				if s.lookalike(k) {
					look = k
					break
				}
			}
		}
	}

	// Beside the dedicated header or baggage, metadata named as one of
	// our keys is one more reading of the member it names (otelgrpc with
	// OpenTelemetry's ottrace propagator writes every baggage member as
	// ot-baggage-<key>): the codec reads it from the metadata, and it must
	// agree. Alone, it is unreadable.
	var named metadata.MD // only when there is one: each lookup of a miss scans
	switch {
	case keyMD == "":
	case inPlace:
		named = in // every spelling of a key is read (markerCarrier.Values)
	default:
		// gRPC's copy holds one spelling of a key that a layer handed on
		// in several cases (the last in map order): all it gives.
		named = md
	}
	m, readErr := s.gate.Codec.Read(&markerCarrier{header: s.header, hv: hv, bv: bv, named: named})
	if keyMD != "" && (!m.Found || named == nil) {
		m.Found = true
		if readErr == nil {
			readErr = fmt.Errorf("%w: metadata key %q is a baggage member key: send the sandbox in %s or baggage", propagation.ErrMalformed, keyMD, s.header)
		}
	}
	if look != "" {
		// Unreadable, alone or beside markers it would agree with:
		// no reading of ours accepts it (on HTTP, Codec.Read finds
		// the header so).
		m.Found = true
		if readErr == nil {
			readErr = fmt.Errorf("%w: metadata key %q is in OpenTracing's baggage form (ot-baggage-) and named as a baggage member key only once decoded ('%%' or '+' in it), which ottrace reads into baggage and no reading of ours accepts", propagation.ErrMalformed, look)
		}
	}
	p, _ := peer.FromContext(ctx)
	trusted := s.gate.Policy.All || s.gate.Policy.Trusted(peerAddr(p))
	verdict, why := s.gate.Decide(&m, readErr, trusted)
	addr := s.peer(p)
	switch verdict {
	case trust.None:
		// Baggage that looked like ours (a '%', the text of a key) but
		// holds no member of ours: the call may still carry other
		// tools' routing keys.
		if s.gate.Policy.All {
			return ctx, nil
		}
		return s.foreign(ctx, method), nil
	case trust.Admit:
		if !trusted {
			ctx = s.ticketForeign(ctx, md, addr, method)
		}
		if m.Ticket != "" {
			ctx = s.dropTicket(ctx)
		}
		return s.gate.Admit(ctx, &m, addr, method), nil
	case trust.Strip:
		s.gate.Refuse(ctx, audit.Stripped, m.Sandbox, addr, method, why, nil)
		return s.stripCopy(ctx, md), nil
	default: // trust.Reject
		s.gate.Refuse(ctx, audit.Rejected, m.Sandbox, addr, method, why, nil)
		return ctx, &statusError{code: codes.InvalidArgument, err: fmt.Errorf("%w: %w", ErrRejected, why)}
	}
}

// peer returns the peer's address for audit records: "" when the gate
// writes none, so that formatting it costs nothing then.
func (s *server) peer(p *peer.Peer) string {
	if !s.gate.Logging() || p == nil || p.Addr == nil {
		return ""
	}
	return p.Addr.String()
}

// foreign returns, for a call without markers of ours, ctx with what a
// later hop may still read as a marker or act on stripped from its
// metadata and OpenTelemetry baggage, with an audit record, when the call
// comes from an untrusted peer; ctx itself otherwise. That is other
// tools' routing keys (Signadot's and Okteto's, see
// propagation.Codec.Foreign) and the underscore spellings of marker keys,
// metadata named as any of our baggage keys in any form (which admit finds
// first; looked for again here, where a copy is read anyway), and
// grpc-gateway's forms of all of these (see gatewayHeader). The peer is
// judged first: from the peer's address without parsing, cheaper than
// looking anything up.
//
// An untrusted peer's call is read from one copy of its metadata, in one
// pass: what it holds is stripped from that copy, which the handler gets.
//
// A sandbox already in the context of an untrusted peer's call was put
// there by an earlier layer from something these interceptors do not read
// as a marker (a propagation.Propagator in otelgrpc's propagators built
// with another codec than theirs): it is stripped and audited too, never
// run.
func (s *server) foreign(ctx context.Context, method string) context.Context {
	p, _ := peer.FromContext(ctx)
	if s.gate.Policy.Trusted(peerAddr(p)) {
		return ctx
	}
	if sb, ok := propagation.FromContext(ctx); ok {
		s.gate.Refuse(ctx, audit.Stripped, sb, s.peer(p), method, trust.ErrUntrusted, earlySandbox)
		return s.strip(ctx)
	}
	md, _ := metadata.FromIncomingContext(ctx) // a copy
	if md == nil {
		return ctx
	}
	// Judged and handed on alike: an earlier layer may have put a key
	// under two spellings (baggage and Baggage) into the metadata, of
	// which gRPC's lookups found one and a copy keeps either.
	judged := metadata.NewIncomingContext(ctx, md)
	var keyed, marked, foreign, gateway, look bool
	for k := range md {
		switch _, watched := s.watch[k]; {
		case watched:
			keyed = true
		case k == baggageKey:
			marked = marked || s.mentions(md[k])
			foreign = foreign || s.mayHoldForeign(md[k])
		case k == s.header:
			marked = true
		case s.gatewayName(k):
			gateway = true
		case s.dashedName(k): // another spelling of one of those
			keyed = true
		case s.lookalike(k):
			look = true
		}
	}
	// grpc-gateway's forms are read and stripped as the HTTP hop would
	// get them.
	if gateway && gatewayMarkers(s.gate.Codec, s.gatewayHeader(md)) {
		s.gate.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, s.peer(p), method, trust.ErrUntrusted, gatewayForms)
		return s.stripCopy(ctx, md)
	}
	if keyed || marked {
		if m, _ := s.gate.Codec.Read(mdCarrier(md)); m.Found {
			detail := keyForms
			if !keyed {
				detail = nil
			}
			s.gate.Refuse(ctx, audit.Stripped, m.Sandbox, s.peer(p), method, trust.ErrUntrusted, detail)
			return s.stripCopy(ctx, md)
		}
	}
	if (keyed || foreign) && s.gate.Codec.Foreign(mdCarrier(md)) {
		s.gate.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, s.peer(p), method, ingress.ErrForeign, nil)
		return s.stripCopy(ctx, md)
	}
	// Metadata in OpenTracing's form that is ours once decoded, which
	// admit finds first when it reads the metadata in place (see
	// lookalike); Codec.Strip removes it.
	if look {
		s.gate.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, s.peer(p), method, trust.ErrUntrusted, lookalikeForms)
		return s.stripCopy(ctx, md)
	}
	// Members of ours, or other tools' routing keys, in the context's
	// OpenTelemetry baggage without any in the metadata were put there
	// by an earlier layer from what is read here as neither (a
	// propagator in otelgrpc's that reads another form): otelgrpc's
	// client would send them on.
	if baggage.FromContext(ctx).Len() > 0 && s.gate.Codec.StripContext(ctx) != ctx {
		s.gate.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, s.peer(p), method, trust.ErrUntrusted, earlyBaggage)
		return s.stripCopy(ctx, md)
	}
	return judged
}

// earlyBaggage details the reason of a record about members of ours, or
// other tools' routing keys, that an earlier layer put into the
// OpenTelemetry baggage of an untrusted peer's call.
func earlyBaggage() string {
	return "the members were put into the context's baggage before the interceptor, from what it does not read as a marker"
}

// gatewayForms details the reason of a record about grpc-gateway forms of
// markers stripped from an untrusted peer's call.
func gatewayForms() string {
	return "grpc-gateway forms of markers (grpc-metadata-...), which an HTTP hop reads as ours"
}

// keyForms details the reason of a record about metadata named as one of
// our baggage keys (uberctx-sandbox.actor) stripped from an untrusted
// peer's call that carried nothing else of ours.
func keyForms() string {
	return "metadata named as a baggage member key, which a later hop reads as a marker"
}

// lookalikeForms details the reason of a record about metadata in
// OpenTracing's baggage form named as one of our keys only once decoded
// (ot-baggage-sandbox%2eid) stripped from an untrusted peer's call that
// carried nothing else of ours.
func lookalikeForms() string {
	return "metadata in OpenTracing's baggage form named as a baggage member key once decoded, which ottrace reads into baggage that a later hop sends on"
}

// gatewayPrefix is grpc-gateway's prefix of the HTTP headers it passes on
// as metadata, lower-case.
const gatewayPrefix = "grpc-metadata-"

// isGateway reports whether metadata key k, in any case and with '_' for
// '-' (as CGI-style hops read it), is in
// grpc-gateway's form (grpc-metadata- and an HTTP header's name).
func isGateway(k string) bool {
	if len(k) <= len(gatewayPrefix) {
		return false
	}
	for i := 0; i < len(gatewayPrefix); i++ {
		b := k[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		} else if b == '_' {
			b = '-'
		}
		if b != gatewayPrefix[i] {
			return false
		}
	}
	return true
}

// gatewayName reports whether metadata key k, in any case and with '_'
// for '-', is in grpc-gateway's form (one grpc-metadata- prefix or more) of a name the
// codec has gateway forms of on HTTP: the baggage, the dedicated header,
// and the watched keys (see watchKeys), which are its key headers and
// the underscore and foreign headers Codec.Foreign reports. Any other
// gateway key is nothing to an HTTP hop, and is not read: a peer that
// sends a thousand of them costs one pass.
func (s *server) gatewayName(k string) bool {
	if !isGateway(k) {
		return false
	}
	for isGateway(k) {
		k = k[len(gatewayPrefix):]
	}
	return s.dashedName(k) || strings.EqualFold(k, baggageKey)
}

// dashedName reports whether metadata key k, in any case and read with
// '-' for every '_', is the dedicated header or a watched key (see
// watchKeys): to a CGI, WSGI, Rack or PHP hop a handler copies it to,
// uberctx_sd-routing-key is uberctx-sd-routing-key as much as
// uberctx_sd_routing_key is, and so is it to propagation.Codec, which
// reports every such spelling of a name it acts on.
func (s *server) dashedName(k string) bool {
	if len(k) == 0 || s.dashedLens[k[0]]&(1<<(len(k)%64)) == 0 {
		return false // starts as none of them or is as long as none
	}
	_, ok := s.dashed[strings.ReplaceAll(strings.ToLower(k), "_", "-")]
	return ok
}

// dashedKeys returns the watched keys and the dedicated header with '-'
// for every '_' (see dashedName).
func dashedKeys(watch map[string]struct{}, header string) map[string]struct{} {
	out := make(map[string]struct{}, len(watch)+1)
	for k := range watch {
		out[strings.ReplaceAll(k, "_", "-")] = struct{}{}
	}
	if header != "" {
		out[strings.ReplaceAll(header, "_", "-")] = struct{}{}
	}
	return out
}

// gatewayHeader returns the keys of md, lower-case, that are gateway
// forms of names the codec reads (see gatewayName), as the HTTP header a
// handler that copies its metadata onto an outgoing request sends
// (Grpc-Metadata-Sandbox-Id), nil when there are none. They are not
// markers on gRPC, where nothing reads them; an HTTP hop with the library
// reads them as markers or other tools' routing keys, as it would from a
// client in front of grpc-gateway (see propagation.Codec.Read).
func (s *server) gatewayHeader(md metadata.MD) http.Header {
	var h http.Header
	for k, v := range md {
		if s.gatewayName(k) {
			if h == nil {
				h = http.Header{}
			}
			h[textproto.CanonicalMIMEHeaderKey(k)] = v
		}
	}
	return h
}

// gatewayMarkers reports whether h, from gatewayHeader, holds what an HTTP
// hop reads as a marker of ours or another tool's routing key.
func gatewayMarkers(c *propagation.Codec, h http.Header) bool {
	if h == nil {
		return false
	}
	// An unreadable form counts: the HTTP hop would answer it with 400.
	m, err := c.Read(otelprop.HeaderCarrier(h))
	return m.Found || err != nil || c.Foreign(otelprop.HeaderCarrier(h))
}

// stripGateway removes from md what Codec.Strip removes from an HTTP
// request's grpc-gateway forms (grpc-metadata- keys), so that none reaches
// an HTTP hop through a handler that copies its metadata on.
func (s *server) stripGateway(md metadata.MD) {
	h := s.gatewayHeader(md)
	if h == nil {
		return
	}
	s.gate.Codec.Strip(otelprop.HeaderCarrier(h))
	for k := range md {
		if s.gatewayName(k) {
			if v, ok := h[textproto.CanonicalMIMEHeaderKey(k)]; ok {
				md[k] = v
			} else {
				delete(md, k)
			}
		}
	}
}

// ticketForeign returns ctx, of a call from an untrusted peer admitted
// on its ticket, without other tools' routing keys (and underscore
// spellings of marker keys) in its metadata and OpenTelemetry baggage,
// and without grpc-gateway's forms of markers and of those keys in its
// metadata, with an audit record when there were any: the ticket vouches
// for its sandbox and for nothing else, and a hop of those tools, or an
// HTTP hop the handler copies its metadata to, would act on them. Our
// markers stay. md, when not nil, is the server's own copy of the
// incoming metadata.
func (s *server) ticketForeign(ctx context.Context, md metadata.MD, addr, method string) context.Context {
	if md == nil {
		md, _ = metadata.FromIncomingContext(ctx) // a copy
	}
	switch {
	case gatewayMarkers(s.gate.Codec, s.gatewayHeader(md)):
		s.gate.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, addr, method, trust.ErrUntrusted, gatewayForms)
	case s.gate.Codec.Foreign(mdCarrier(md)):
		s.gate.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, addr, method, ingress.ErrForeign, nil)
	default:
		return ctx
	}
	s.gate.Codec.StripForeign(mdCarrier(md))
	s.stripGateway(md)
	return s.gate.Codec.StripForeignContext(metadata.NewIncomingContext(ctx, md))
}

// dropTicket returns ctx with its incoming metadata without the ticket
// (propagation.Codec.StripTicket, in baggage and in grpc-gateway's
// grpc-metadata-baggage): the ticket admitted the call here and goes no
// further, not even through a handler that forwards its incoming metadata.
// The context's OpenTelemetry baggage loses it in ingress.Gate.Admit.
func (s *server) dropTicket(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx) // a copy
	s.gate.Codec.StripTicket(mdCarrier(md))
	return metadata.NewIncomingContext(ctx, md)
}

// earlySandbox details the reason of a record about a sandbox an earlier
// layer put into the context of an untrusted peer's call.
func earlySandbox() string {
	return "the sandbox was put into the context before the interceptor, from what it does not read as a marker"
}

// mayHoldForeign reports whether baggage lines may hold another tool's
// routing key, which Codec.Foreign then confirms or not: the text of one,
// or a '%' that may hide one.
func (s *server) mayHoldForeign(lines []string) bool {
	for _, line := range lines {
		if strings.IndexByte(line, '%') >= 0 || keytext.Contains(line, propagation.SignadotKey) || keytext.Contains(line, propagation.OktetoKey) {
			return true
		}
	}
	return false
}

// watchKeys returns the metadata keys, lower-case, whose presence on an
// untrusted peer's call without markers makes the server read it in full
// (see foreign): every form of every baggage key of ours
// (Codec.KeyHeaders), and the underscore spellings of those, of the
// dedicated header and of Signadot's header forms, and those header forms
// themselves, when Codec.Foreign reports them: CGI, WSGI, Rack and PHP
// hops read sandbox_id as sandbox-id.
func watchKeys(c *propagation.Codec) map[string]struct{} {
	out := map[string]struct{}{}
	keys := c.KeyHeaders()
	for _, k := range keys {
		out[k] = struct{}{}
	}
	for _, k := range append(keys, c.Header(), propagation.SignadotJaegerHeader, propagation.SignadotDatadogHeader) {
		for _, f := range []string{k, strings.ReplaceAll(k, "-", "_")} {
			if f != "" && c.Foreign(otelprop.MapCarrier{f: "x"}) {
				out[f] = struct{}{}
			}
		}
	}
	return out
}

// incoming returns gRPC's own incoming metadata of ctx (nil when there is
// none), to be read in place and never modified, and true; or false when
// it cannot be had that way (see incomingKey), and each key is then looked
// up through gRPC's lookups.
//
// Read in place, a call's markers are found in one context walk and one
// pass over its keys (see scan), without copying: each of gRPC's lookups
// (metadata.ValueFromIncomingContext) walks the context, copies what it
// finds and, on a miss, scans every key, and the forms of our keys a
// trusted peer's call must be searched for are a dozen; a copy of the
// metadata (metadata.FromIncomingContext) allocates.
func (s *server) incoming(ctx context.Context) (metadata.MD, bool) {
	if s.mdKey == nil {
		return nil, false
	}
	v := ctx.Value(s.mdKey)
	if v == nil {
		return nil, true
	}
	md, ok := v.(metadata.MD)
	return md, ok
}

// scan returns, from gRPC's incoming metadata md, the values of the
// dedicated header and of baggage, found as gRPC's lookups find them (the
// key as it is, else in any case), not copied, a key of md that is one of
// named in any case, or "", and a key of md that is a lookalike (see
// lookalike), or "".
func (s *server) scan(md metadata.MD) (hv, bv []string, named, look string) {
	var hvFound, bvFound bool // the key as it is, or one in another case
	if s.header != "" {
		hv, hvFound = md[s.header]
	}
	bv, bvFound = md[baggageKey]
	for k, v := range md {
		switch {
		case len(k) == 0, k == s.header, k == baggageKey: // none, or found above
		case s.namedLens[k[0]]&(1<<(len(k)%64)) != 0 && s.isNamed(k):
			named = strings.ToLower(k)
		case !hvFound && len(k) == len(s.header) && strings.EqualFold(k, s.header):
			hv, hvFound = v, true
		case !bvFound && len(k) == len(baggageKey) && strings.EqualFold(k, baggageKey):
			bv, bvFound = v, true
		case len(k) > len(otBaggagePrefix) && k[0]|0x20 == 'o' && s.gate.Codec.IsKeyHeaderLookalike(k): // lookalike, its first tests inlined
			look = k
		}
	}
	return hv, bv, named, look
}

// lookalike reports whether metadata key k is in OpenTracing's baggage
// form and named as one of our keys only once decoded
// (ot-baggage-sandbox%2eid, see propagation.Codec.IsKeyHeaderLookalike),
// a marker that never agrees. Any other key costs a test of its length
// and first byte.
func (s *server) lookalike(k string) bool {
	return len(k) > len(otBaggagePrefix) && k[0]|0x20 == 'o' && s.gate.Codec.IsKeyHeaderLookalike(k)
}

// isNamed reports whether k is one of named, in any case.
func (s *server) isNamed(k string) bool {
	for _, n := range s.named {
		if len(n) == len(k) && strings.EqualFold(n, k) {
			return true
		}
	}
	return false
}

// lookUpNamed returns the first of named that ctx's incoming metadata
// holds, in any case, or "", through gRPC's lookups: one for each.
func (s *server) lookUpNamed(ctx context.Context) string {
	for _, k := range s.named {
		if metadata.ValueFromIncomingContext(ctx, k) != nil {
			return k
		}
	}
	return ""
}

// incomingKey returns the context key under which
// metadata.NewIncomingContext keeps the metadata, which gRPC's metadata
// package does not export: the key that metadata.ValueFromIncomingContext
// asks a context for. It is used only once a context made by
// NewIncomingContext gives back, under it, the metadata.MD it was made
// with; otherwise (a gRPC that keeps its metadata another way) it is nil.
// The metadata read under it is gRPC's own and read only, never modified.
func incomingKey() any {
	probe := &keyProbe{Context: context.Background()}
	metadata.ValueFromIncomingContext(probe, baggageKey)
	if probe.key == nil {
		return nil
	}
	want := metadata.MD{"sandbox.id": {"x"}}
	got, ok := metadata.NewIncomingContext(context.Background(), want).Value(probe.key).(metadata.MD)
	if !ok || len(got) != 1 || len(got["sandbox.id"]) != 1 || &got["sandbox.id"][0] != &want["sandbox.id"][0] {
		return nil
	}
	return probe.key
}

// keyProbe is a context that records the first key it is asked for.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(key any) any {
	if p.key == nil {
		p.key = key
	}
	return p.Context.Value(key)
}

// mentions reports whether baggage lines may hold one of our members; a
// cheap substring test that Codec.Read then confirms or not. A '%' may
// hide a percent-encoded key (see propagation.Codec.Strip).
func (s *server) mentions(lines []string) bool {
	for _, line := range lines {
		if strings.IndexByte(line, '%') >= 0 {
			return true
		}
		for _, k := range s.keys {
			if keytext.Contains(line, k) {
				return true
			}
		}
	}
	return false
}

// strip returns ctx with incoming metadata free of our markers, and with
// no sandbox and none of our members in the OpenTelemetry baggage either (a
// stats handler may have extracted them already, and would send them on).
// The transport's metadata is copied, never modified.
func (s *server) strip(ctx context.Context) context.Context {
	return s.stripCopy(ctx, nil)
}

// stripCopy is strip with md, when not nil, a copy of ctx's incoming
// metadata that the server made and owns.
func (s *server) stripCopy(ctx context.Context, md metadata.MD) context.Context {
	if md == nil {
		md, _ = metadata.FromIncomingContext(ctx) // a copy
	}
	s.stripGateway(md)
	return s.gate.Strip(metadata.NewIncomingContext(ctx, md), mdCarrier(md))
}

// peerAddr returns the peer's IP address, invalid when unknown (no peer, or
// a transport that is not IP).
func peerAddr(p *peer.Peer) netip.Addr {
	if p == nil || p.Addr == nil {
		return netip.Addr{}
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// ClientInterceptors are the unary and stream client interceptors. Build
// them with [NewClientInterceptors] and install both:
//
//	out, err := grpcmw.NewClientInterceptors()
//	if err != nil {
//		return err
//	}
//	conn, err := grpc.NewClient(target, creds,
//		grpc.WithChainUnaryInterceptor(out.Unary()),
//		grpc.WithChainStreamInterceptor(out.Stream()))
//
// They are safe for concurrent use. The zero value is not usable.
type ClientInterceptors struct {
	unary  grpc.UnaryClientInterceptor // made once, at construction
	stream grpc.StreamClientInterceptor
}

// NewClientInterceptors returns client interceptors that write the
// context's sandbox into each call's outgoing metadata (the dedicated
// header and W3C baggage), merged with the metadata the caller set: foreign
// baggage members are kept, ours are replaced. A baggage that the merge
// would take over the W3C limits (propagation.MaxBaggageMembers members,
// MaxBaggageBytes bytes), which the next hop refuses, loses foreign members,
// the largest first, until it fits. A context without a sandbox
// is passed on untouched, at no cost. A sandbox call whose context carries
// OpenTelemetry baggage gets the sandbox in that baggage too, for
// otelgrpc's client stats handler, which writes the baggage metadata after
// the interceptors (see the package doc). [WithCodec], [WithBreaker] and
// [WithLogger] (for the breaker's refusals) apply; the options only
// [NewRouter] uses are an [ErrConfig] error, and nil options are skipped.
func NewClientInterceptors(opts ...ClientOption) (*ClientInterceptors, error) {
	cfg, err := newClientConfig(opts)
	if err != nil {
		return nil, err
	}
	return &ClientInterceptors{unary: unaryClient(cfg.codec, cfg.codec.KeyHeaders(), newBudget(&cfg)), stream: streamClient(cfg.codec, cfg.codec.KeyHeaders(), newBudget(&cfg))}, nil
}

// Unary returns the unary client interceptor.
func (out *ClientInterceptors) Unary() grpc.UnaryClientInterceptor { return out.unary }

// Stream returns the stream client interceptor. A budgeted stream
// ([WithBreaker]) is in flight until gRPC reports its end.
func (out *ClientInterceptors) Stream() grpc.StreamClientInterceptor { return out.stream }

// The builders of the interceptors are not inlined: a closure made
// inside an inlined call is compiled again in the caller, where Go does
// not inline the calls it makes (propagation.FromContext), and the hot
// path of a call without a sandbox got slower.
//
//go:noinline
func unaryClient(codec *propagation.Codec, named []string, bud budget) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		s, ok := propagation.FromContext(ctx)
		if !bud.Covers(ok) {
			if !ok {
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			return invoker(outgoing(ctx, codec, named, s), method, req, reply, cc, opts...)
		}
		done, err := bud.allow(ctx, s, method, false)
		if err != nil {
			return err
		}
		if ok {
			ctx = outgoing(ctx, codec, named, s)
		}
		err = invoker(ctx, method, req, reply, cc, opts...)
		done(outcome(err))
		return err
	}
}

//go:noinline
func streamClient(codec *propagation.Codec, named []string, bud budget) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, ok := propagation.FromContext(ctx)
		if !bud.Covers(ok) {
			if !ok {
				return streamer(ctx, desc, cc, method, opts...)
			}
			return streamer(outgoing(ctx, codec, named, s), desc, cc, method, opts...)
		}
		done, err := bud.allow(ctx, s, method, false)
		if err != nil {
			return nil, err
		}
		if ok {
			ctx = outgoing(ctx, codec, named, s)
		}
		end := newStreamEnd(done)
		cs, err := streamer(ctx, desc, cc, method, append(opts[:len(opts):len(opts)], end.option())...)
		end.opened(err)
		return cs, err
	}
}

// outgoing returns ctx with s in its outgoing metadata. When the caller set
// neither of our keys, the markers are appended (gRPC keeps appended pairs
// beside the caller's metadata without copying it); otherwise a copy of the
// caller's metadata gets them, replacing ours and keeping foreign baggage
// members. The caller's metadata is never modified.
//
// Outgoing metadata named as one of our keys (sandbox.id,
// uberctx-sandbox.actor, see [propagation.Codec.KeyHeaders]) takes the
// copy too, and is removed from it (see inject). Outgoing metadata in
// OpenTracing's baggage form (ot-baggage-<key>, set by the application)
// takes the copy too, so that the codec writes the
// sandbox in that form beside it: an OpenTelemetry hop running the ottrace
// propagator replaces the baggage with those members and would otherwise
// call on as production, or as the sandbox a stale ot-baggage-sandbox.id
// names. That metadata, with the context's baggage that otelgrpc's
// ottrace adds in the same form, is kept within ottrace's limits
// ([propagation.Codec.FitOTForm]).
//
// When ctx carries OpenTelemetry baggage, the returned context carries s in
// it too ([propagation.Codec.MirrorContext]): gRPC calls a stats handler's
// TagRPC after the interceptors, and otelgrpc's Baggage propagator then
// sets the baggage metadata from the context's baggage, replacing ours, so
// that an OpenTelemetry-only next hop would get that baggage without the
// sandbox, or with a stale one of ours.
func outgoing(ctx context.Context, codec *propagation.Codec, named []string, s propagation.Sandbox) context.Context {
	if baggage.FromContext(ctx).Len() > 0 {
		ctx = codec.MirrorContext(ctx, s)
	}
	header := codec.Header()
	if (header == "" || metadata.ValueFromOutgoingContext(ctx, header) == nil) &&
		metadata.ValueFromOutgoingContext(ctx, baggageKey) == nil {
		// The caller's metadata is copied only when there is some.
		if md, ok := metadata.FromOutgoingContext(ctx); ok && (hasOTKey(md) || hasNamed(md, named)) {
			return inject(ctx, codec, named, s, md)
		}
		out := &outCarrier{header: header}
		codec.InjectSandbox(s, out)
		if header == "" {
			return metadata.AppendToOutgoingContext(ctx, baggageKey, out.baggage)
		}
		return metadata.AppendToOutgoingContext(ctx, header, out.id, baggageKey, out.baggage)
	}
	md, _ := metadata.FromOutgoingContext(ctx) // a copy
	return inject(ctx, codec, named, s, md)
}

// inject returns ctx with md, a copy of its outgoing metadata, carrying s
// in place of every marker of ours: keys named as ours (named, see
// [propagation.Codec.KeyHeaders]) are removed first, as httpmw's transport
// drops such headers, since the codec writes none but those in
// OpenTracing's form, and one left from elsewhere (a handler forwarding
// its incoming metadata, code written for Jaeger) would be read by the
// next hop beside the markers of s, another sandbox's or actor's, and
// the call refused there.
func inject(ctx context.Context, codec *propagation.Codec, named []string, s propagation.Sandbox, md metadata.MD) context.Context {
	for _, k := range named {
		delete(md, k) // the copy's keys are lower-case
	}
	codec.InjectSandbox(s, mdCarrier(md))
	codec.FitOTForm(mdCarrier(md), baggage.FromContext(ctx))
	return metadata.NewOutgoingContext(ctx, md)
}

// hasNamed reports whether md, with lower-case keys, holds one of named.
func hasNamed(md metadata.MD, named []string) bool {
	for _, k := range named {
		if _, ok := md[k]; ok {
			return true
		}
	}
	return false
}
