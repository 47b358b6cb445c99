package httpmw

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// ErrSandboxUnavailable reports a sandbox request whose route points at an
// upstream that cannot be connected to. The request was not sent anywhere
// else (see [WithFallbackOnUnavailable]). The returned error wraps it and
// the dial error. It is [routes.ErrSandboxUnavailable], shared by every
// adapter.
var ErrSandboxUnavailable = routes.ErrSandboxUnavailable

// Transport is an http.RoundTripper that carries the sandbox of a request's
// context to the next hop and, when it routes, sends it to the sandbox's
// version of the target service. Build one with [NewTransport] (propagation
// only), [NewRoutingTransport] or [NewHostRoutingTransport].
//
// The zero value propagates with [propagation.Default] through
// http.DefaultTransport and routes nothing. A Transport is safe for
// concurrent use.
type Transport struct {
	base     http.RoundTripper
	codec    *propagation.Codec
	logger   *slog.Logger
	table    *routes.Table
	service  string
	hosts    map[string]string
	fallback bool
	budget   budget // the per-sandbox budget ([WithBreaker])

	names []string // markerNames of codec; nil in the zero value

	// owned: the requests handed to RoundTrip are the transport's to
	// modify (the proxy's outbound requests), so they are not cloned.
	owned bool
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport that carries the sandbox of each
// request's context to the next hop, sending requests through base
// (http.DefaultTransport when nil; a nil pointer or func in a non-nil
// base, which would panic on every request, is an error wrapping
// [ErrConfig]). It does not choose upstreams: see [NewRoutingTransport].
//
// A request whose context carries a sandbox is cloned and the clone gets
// the sandbox's markers (the dedicated header and the baggage members,
// merged with the baggage already set); marker headers already on it
// under any other spelling a hop may read (a lower-case key, Sandbox_Id, a
// header named as a baggage key) are removed, so that only the context's
// sandbox goes out. When the context carries OpenTelemetry baggage, the
// clone's context gets the sandbox's members in it too
// ([propagation.Codec.MirrorContext]): an instrumented base
// (otelhttp.NewTransport) sets the baggage header from the context, and
// would otherwise send that baggage without the sandbox. A Connection
// header naming the marker headers (hop-by-hop, so that the next proxy
// would remove them) loses those names.
//
// An upgrade to h2c is never sent: the request goes without it (see
// [NewProxy]), so that a reverse proxy built on the transport does not
// open a tunnel for requests no middleware sees.
//
// A signed ticket ([propagation.Codec.InjectTicket]) is a bearer
// credential: a request an http.Client makes to follow a redirect
// (Request.Response set) goes without it, in its headers and its
// context's OpenTelemetry baggage, once the redirect chain has left the
// host of its first request and that host's subdomains, the rule by which
// the client drops Authorization and cookies. The sandbox itself still
// travels. The chain is read through Response.Request, which for a
// request the transport routed is the caller's request (the host the
// client addressed), not the copy sent to the sandbox's upstream; a chain
// whose first request cannot be found counts as having left.
//
// A request whose context has no sandbox but whose headers carry markers
// (set by the caller, or copied from an incoming request onto one built
// without its context) is the sandbox's traffic as much: the next hop
// serves it as that sandbox. It is budgeted, routed and audited as that
// sandbox, with its headers as the caller wrote them; when they cannot be
// read as one sandbox (conflicting, malformed, or a marker header spelt
// with '_' for '-', Sandbox_Id, which CGI-style hops read as Sandbox-Id
// and the transport does not read), RoundTrip fails without sending it,
// with an error wrapping the [propagation] sentinel. Any other
// request goes to base as it is. With [WithBreaker], a request over its
// sandbox's budget is not sent (see there).
func NewTransport(base http.RoundTripper, opts ...TransportOption) (*Transport, error) {
	if err := checkBase("NewTransport", base); err != nil {
		return nil, err
	}
	cfg, err := transportConfig(opts)
	if err != nil {
		return nil, err
	}
	return newTransport(base, &cfg), nil
}

// NewRoutingTransport returns a Transport that propagates as
// [NewTransport] does and, for a request of a sandbox that overrides
// service in table, sends it to the sandbox's upstream: the request's
// scheme and host become the upstream's, path and query unchanged. Every
// request the transport sends is taken to go to service; for a client of
// several services, see [NewHostRoutingTransport]. Requests of sandboxes
// that do not override service go where they were addressed. A nil table,
// an empty service, or one no route table can hold
// ([routes.ValidateService]) is an error wrapping [ErrConfig], as is a
// base that [NewTransport] refuses.
//
// A table that has never loaded ([routes.Table.SyncedAt] is the zero
// time: a [routes.New] table neither filled nor synced yet) cannot say
// whether a sandbox overrides service, so a sandbox request it holds no
// route for is not sent to the baseline: RoundTrip fails with
// [ErrSandboxUnavailable] (audit record: rejected, reason
// audit.ReasonNotSynced), or with [WithFallbackOnUnavailable] the request
// goes where it was addressed (fallback, same reason). Requests without a
// sandbox are not affected. A table filled in code ([routes.NewStatic],
// even with no sandboxes) counts as loaded.
func NewRoutingTransport(base http.RoundTripper, table *routes.Table, service string, opts ...RoutingTransportOption) (*Transport, error) {
	if table == nil {
		return nil, configErr("NewRoutingTransport: nil route table")
	}
	if err := checkBase("NewRoutingTransport", base); err != nil {
		return nil, err
	}
	if service == "" {
		return nil, configErr("NewRoutingTransport: empty service name")
	}
	if err := routes.ValidateService(service); err != nil {
		return nil, configErr("NewRoutingTransport: %w", err)
	}
	cfg, err := routingConfig(opts)
	if err != nil {
		return nil, err
	}
	cfg.table, cfg.service = table, service
	return newTransport(base, &cfg), nil
}

// NewHostRoutingTransport is [NewRoutingTransport] for a client of several
// services: hosts maps request hosts to the services they are. A request's
// URL host is looked up as "host:port" first and then as the bare host
// name; when it is not in the map and the request sets a Host header of
// its own (virtual hosting behind a shared ingress), that host is looked
// up the same way. Hosts match without regard to case or a trailing dot,
// and with the scheme's default port ("Cart.", "cart" and "cart:80" over
// http are one host: they reach one server). A request to a host that is
// not in the map is not routed (its sandbox is still propagated). The map
// is copied. A nil table, an empty map, a host mapped to an empty or
// invalid service name ([routes.ValidateService]), or two keys that are
// one host mapped to different services, is an error wrapping
// [ErrConfig], as is a base that [NewTransport] refuses. A table that has never loaded is handled as by
// NewRoutingTransport.
func NewHostRoutingTransport(base http.RoundTripper, table *routes.Table, hosts map[string]string, opts ...RoutingTransportOption) (*Transport, error) {
	if table == nil {
		return nil, configErr("NewHostRoutingTransport: nil route table")
	}
	if err := checkBase("NewHostRoutingTransport", base); err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, configErr("NewHostRoutingTransport: no hosts")
	}
	for h, svc := range hosts {
		if svc == "" {
			return nil, configErr("NewHostRoutingTransport: host %q: empty service name", h)
		}
		if err := routes.ValidateService(svc); err != nil {
			return nil, configErr("NewHostRoutingTransport: host %q: %w", h, err)
		}
	}
	norm := make(map[string]string, len(hosts))
	spelt := make(map[string]string, len(hosts))
	for h, svc := range hosts {
		k := normalHost(h)
		if prev, ok := norm[k]; ok && prev != svc {
			return nil, configErr("NewHostRoutingTransport: hosts %q and %q are one host for two services, %s and %s", spelt[k], h, prev, svc)
		}
		norm[k], spelt[k] = svc, h
	}
	cfg, err := routingConfig(opts)
	if err != nil {
		return nil, err
	}
	cfg.table, cfg.hosts = table, norm
	return newTransport(base, &cfg), nil
}

func newTransport(base http.RoundTripper, cfg *config) *Transport {
	return &Transport{
		base:     base,
		codec:    cfg.codec,
		logger:   cfg.logger,
		table:    cfg.table,
		service:  cfg.service,
		hosts:    cfg.hosts,
		fallback: cfg.fallback,
		budget:   newBudget(cfg),
		names:    markerNames(cfg.codec),
	}
}

func (t *Transport) next() http.RoundTripper {
	if t.base == nil {
		return http.DefaultTransport
	}
	return t.base
}

func (t *Transport) c() *propagation.Codec {
	if t.codec == nil {
		return propagation.Default()
	}
	return t.codec
}

// RoundTrip implements http.RoundTripper. It never modifies r.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Response != nil && leftFirstHost(r) {
		// A client following a redirect to another host: the ticket,
		// a bearer credential, stays behind, as Authorization does.
		r = t.withoutTicket(r)
	}
	if up := r.Header["Upgrade"]; len(up) > 0 && upgradesToH2C(up) {
		// A custom reverse proxy on this transport would tunnel it:
		// see dropH2CUpgrade.
		if !t.owned {
			r = r.Clone(r.Context())
		}
		dropH2CUpgrade(r.Header)
	}
	s, ok := propagation.FromContext(r.Context())
	if !ok {
		h := r.Header
		if !t.owned && oddMarkerKeys(h, t.markerNames()) {
			h = canonicalHeader(h)
		}
		if c := t.c(); !t.owned && !c.Quiet(h) {
			// The caller set markers on the request itself (or copied
			// them from an incoming one) without the sandbox in the
			// context: the next hop will serve it as that sandbox, so it
			// is routed and budgeted as one, and markers no hop can read
			// as one sandbox are not sent. (The proxy's gate has put
			// every marker it let through into the context.)
			m, err := c.Read(otelprop.HeaderCarrier(h))
			if err == nil {
				err = underscoreMarkerError(h, t.markerNames())
			}
			if err != nil {
				closeBody(r)
				return nil, fmt.Errorf("httpmw: request to %s not sent: its sandbox markers cannot be read: %w", r.URL.Host, err)
			}
			if m.Found {
				return t.roundTripSandbox(r, m.Sandbox, false)
			}
		}
		if t.budget.Covers(false) {
			return t.roundTripBaseline(r)
		}
		return t.next().RoundTrip(r)
	}
	return t.roundTripSandbox(r, s, true)
}

// roundTripBaseline sends a request without a sandbox under the baseline
// budget.
func (t *Transport) roundTripBaseline(r *http.Request) (*http.Response, error) {
	target := t.serviceOf(r)
	if target == "" {
		target = r.URL.Host
	}
	done, err := t.budget.admit(r, propagation.Sandbox{}, target)
	if err != nil {
		return nil, err
	}
	resp, err := t.next().RoundTrip(r)
	done(outcome(r.Context(), statusOf(resp), err))
	return resp, err
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// CloseIdleConnections closes the idle connections of the base transport,
// if it has such a method.
func (t *Transport) CloseIdleConnections() {
	if ci, ok := t.next().(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

func (t *Transport) roundTripSandbox(r *http.Request, s propagation.Sandbox, inject bool) (resp *http.Response, err error) {
	ctx := r.Context()
	svc := t.serviceOf(r)
	var upstream string
	routed := false
	notSynced := false
	if t.table != nil && svc != "" {
		upstream, routed = t.table.Lookup(s.ID, svc)
		if !routed && t.table.SyncedAt().IsZero() {
			// Whether the sandbox overrides svc is unknown: fail closed.
			if !t.fallback {
				closeBody(r)
				t.emit(r, audit.Rejected, s, svc, pub.ReasonNotSynced)
				return nil, fmt.Errorf("%w: sandbox %s, service %s: %s (it has never loaded)", ErrSandboxUnavailable, s.ID, svc, pub.ReasonNotSynced)
			}
			notSynced = true
		}
	}
	if t.budget.Active() {
		target := svc
		if target == "" {
			target = r.URL.Host
		}
		done, berr := t.budget.admit(r, s, target)
		if berr != nil {
			return nil, berr
		}
		defer func() { done(outcome(ctx, statusOf(resp), err)) }() // the outcome this call returns
	}

	if !routed {
		switch {
		case notSynced:
			t.emit(r, audit.Fallback, s, svc, pub.ReasonNotSynced)
		case t.table != nil && svc != "" && t.logger != nil:
			t.emit(r, audit.Fallback, s, svc, fallbackReason(t.table, s.ID))
		}
		if !inject && !namesMarkers(r.Header["Connection"], t.c().Header()) {
			return t.next().RoundTrip(r) // the caller's markers, as they are
		}
		return t.next().RoundTrip(t.outgoing(r, s, inject))
	}
	out := t.outgoing(r, s, inject)

	// Remember the baseline target: the proxy's request is modified in
	// place and may have to go there after all.
	baseScheme, baseHost, baseHostHeader := out.URL.Scheme, out.URL.Host, out.Host
	scheme, host := splitUpstream(upstream)
	if out.Host == "" || out.Host == out.URL.Host {
		out.Host = "" // the Host header follows the URL to the sandbox
	}
	out.URL.Scheme, out.URL.Host = scheme, host
	if t.logger != nil {
		t.emit(r, audit.Routed, s, svc, "upstream "+upstream)
	}
	var body io.ReadCloser // the proxy's body, kept for a fallback
	if t.owned && t.fallback && out.Body != nil && out.Body != http.NoBody {
		body, out.Body = out.Body, keepOpen{out.Body}
	}
	resp, err = t.next().RoundTrip(out)
	if resp != nil && !t.owned {
		// The caller's request, as for every other request: the
		// redirect rule for the ticket (leftFirstHost) walks the chain
		// by the hosts the client addressed, and a redirect back to
		// the routed host (a relative Location) has not left it. (Not
		// only when resp.Request is out: a base such as otelhttp's
		// sends, and answers with, a copy of it.)
		resp.Request = r
	}
	if err == nil || !isDialError(err) {
		return resp, err
	}
	uerr := fmt.Errorf("%w: sandbox %s, service %s, upstream %s: %w", ErrSandboxUnavailable, s.ID, svc, upstream, err)
	if !t.fallback {
		return nil, uerr
	}
	var retry *http.Request
	switch {
	case t.owned:
		// Nothing was read from the body: the connection was never made,
		// and the failed attempt's Close did not reach it.
		retry = out
		retry.URL.Scheme, retry.URL.Host, retry.Host = baseScheme, baseHost, baseHostHeader
		if body != nil {
			retry.Body = body
		}
	case r.Body == nil || r.Body == http.NoBody:
		retry = t.outgoing(r, s, inject)
	case r.GetBody != nil:
		body, gerr := r.GetBody()
		if gerr != nil {
			return nil, fmt.Errorf("%w; not sent to the baseline: request body: %w", uerr, gerr)
		}
		retry = t.outgoing(r, s, inject)
		retry.Body = body
	default:
		return nil, fmt.Errorf("%w; not sent to the baseline: the request body cannot be replayed (Request.GetBody is nil)", uerr)
	}
	if t.logger != nil {
		t.emit(r, audit.Fallback, s, svc, "sandbox upstream unavailable: "+err.Error())
	}
	return t.next().RoundTrip(retry)
}

// outgoing returns the request to send: a clone of r (or r itself for the
// proxy) carrying the markers of s, injected when inject is set (the
// sandbox is the context's), else those the caller put on r, kept as they
// are (with a ticket, say).
func (t *Transport) outgoing(r *http.Request, s propagation.Sandbox, inject bool) *http.Request {
	out := r
	if !t.owned {
		out = r.Clone(r.Context())
	}
	if out.Header == nil {
		out.Header = make(http.Header, 2)
	}
	c := t.c()
	if inject {
		dropStaleMarkers(out.Header, t.markerNames())
		c.InjectSandbox(s, otelprop.HeaderCarrier(out.Header))
		if ctx := out.Context(); baggage.FromContext(ctx).Len() > 0 {
			// An instrumented base (otelhttp.NewTransport) sets the
			// baggage header from the context's baggage, replacing
			// ours: the context's must carry the sandbox too.
			out = out.WithContext(c.MirrorContext(ctx, s))
			// An ottrace propagator in that base adds the context's
			// members in OpenTracing's form beside those on the
			// request: together they must stay within ottrace's
			// limits, or the next hop's drops ours in map order.
			c.FitOTForm(otelprop.HeaderCarrier(out.Header), baggage.FromContext(out.Context()))
		}
	}
	if conn, ok := out.Header["Connection"]; ok {
		// A Connection header copied from an incoming request may name
		// our markers: every proxy on the way would remove them as
		// hop-by-hop, and the next service would serve the request as
		// production.
		out.Header["Connection"] = dropMarkerTokens(conn, c.Header())
		if len(out.Header["Connection"]) == 0 {
			delete(out.Header, "Connection")
		}
	}
	return out
}

// dropStaleMarkers prepares h, the header of a clone about to get the
// markers of the context's sandbox, for [propagation.Codec.InjectSandbox],
// which overwrites the canonical Sandbox-Id and rewrites the canonical
// Baggage: a header set under another spelling (a lower-case key set
// from gRPC metadata, Sandbox_Id, which CGI hops read as Sandbox-Id, a
// header named as a baggage key) would otherwise go out next to them,
// another sandbox's marker on this sandbox's request. names are the
// marker header names, lower case (see markerNames). Baggage lines under
// a non-canonical key join the canonical ones, to be merged.
func dropStaleMarkers(h http.Header, names []string) {
	var bag []string
	for k, v := range h {
		if k == "Baggage" {
			continue
		}
		if sameName(k, "baggage") {
			bag = append(bag, v...)
			delete(h, k)
			continue
		}
		for _, n := range names {
			if sameName(k, n) {
				delete(h, k)
				break
			}
		}
	}
	if bag != nil {
		h["Baggage"] = append(h["Baggage"], bag...)
	}
}

// maxRedirectChain bounds the walk back along a redirect chain
// (http.Client stops after 10 redirects).
const maxRedirectChain = 64

// leftFirstHost reports whether r, made by a client following a redirect
// (r.Response is the redirect response), or any request before it on the
// chain, goes to a host other than the first request's or one of its
// subdomains: the rule by which http.Client stops sending Authorization
// and cookies (see its Do method). A chain that cannot be walked back to
// its first request (a base transport that does not set
// Response.Request, or a chain too long) counts as having left it.
func leftFirstHost(r *http.Request) bool {
	chain := make([]*url.URL, 0, 4)
	q := r
	for q.Response != nil {
		if q.URL == nil || q.Response.Request == nil || len(chain) == maxRedirectChain {
			return true
		}
		chain = append(chain, q.URL)
		q = q.Response.Request
	}
	if q.URL == nil {
		return true
	}
	home := canonHost(q.URL.Hostname())
	for _, u := range chain {
		if !domainOrSubdomain(canonHost(u.Hostname()), home) {
			return true
		}
	}
	return false
}

// domainOrSubdomain reports whether host is parent or a subdomain of it
// (both in lower case, without a trailing dot); an IPv6 address is only
// itself.
func domainOrSubdomain(host, parent string) bool {
	if host == parent {
		return true
	}
	if strings.ContainsAny(host, ":%") || parent == "" {
		return false
	}
	return strings.HasSuffix(host, "."+parent)
}

// withoutTicket returns a copy of r without the ticket in its headers
// (under any spelling of the baggage key, which the copy has in
// canonical form) and its context's OpenTelemetry baggage, which an
// instrumented base writes on the request.
func (t *Transport) withoutTicket(r *http.Request) *http.Request {
	c := t.c()
	out := r.Clone(c.StripTicketContext(r.Context()))
	out.Header = canonicalHeader(out.Header)
	c.StripTicket(otelprop.HeaderCarrier(out.Header))
	return out
}

// gatewayBaggage is grpc-gateway's form of the baggage header, a marker
// on HTTP (see propagation.Codec.Read).
const gatewayBaggage = "Grpc-Metadata-Baggage"

// oddMarkerKeys reports whether h holds a marker header (one of names,
// lower case, Baggage or Grpc-Metadata-Baggage) under a key that is not in canonical form
// (sandbox-id, set as req.Header["sandbox-id"]): the client sends the key
// as it is, the next hop's server canonicalises it and reads the marker,
// but the codec, which looks up canonical keys, does not see it. Each key
// is tested by its length first.
func oddMarkerKeys(h http.Header, names []string) bool {
	left := len(h)
	for k := range h {
		if len(k) == len("baggage") && k != "Baggage" && strings.EqualFold(k, "baggage") {
			return true
		}
		// grpc-gateway's baggage: a marker on HTTP as much (see
		// propagation.Codec.Read), missing from names, which
		// dropStaleMarkers deletes whole.
		if len(k) == len(gatewayBaggage) && k != gatewayBaggage && strings.EqualFold(k, gatewayBaggage) {
			return true
		}
		for _, n := range names {
			if len(k) == len(n) && strings.EqualFold(k, n) && k != textproto.CanonicalMIMEHeaderKey(k) {
				return true
			}
		}
		if left--; left == 0 {
			break // see propagation's scanSmall
		}
	}
	return false
}

// canonicalHeader returns a copy of h with every key in canonical form,
// the lines of keys that become one joined as a server joins them.
func canonicalHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, v := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		out[ck] = append(out[ck], v...)
	}
	return out
}

// underscoreMarkerError returns an error wrapping
// [propagation.ErrMalformed] when h holds a marker header (one of names,
// lower case) spelt with '_' for '-' (Sandbox_Id, Ot-Baggage_sandbox.id):
// CGI, WSGI, Rack and PHP services read it as the marker itself
// (HTTP_SANDBOX_ID), the codec does not read it at all, so that a request
// carrying it cannot be routed, budgeted or audited as the sandbox the
// next hop serves. nil when there is none.
func underscoreMarkerError(h http.Header, names []string) error {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		for _, n := range names {
			if sameName(k, n) {
				return fmt.Errorf("%w: header %s is %s to CGI-style services, which read '_' as '-', and is not read here: send the sandbox in the header itself or in baggage", propagation.ErrMalformed, k, textproto.CanonicalMIMEHeaderKey(n))
			}
		}
	}
	return nil
}

// sameName reports whether header key k is name (lower case) to some hop:
// without regard to ASCII case, and with '_' read as '-', as CGI, WSGI,
// Rack and PHP hops read it.
func sameName(k, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := 0; i < len(k); i++ {
		a, b := k[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if a == '_' {
			a = '-'
		}
		if b == '_' {
			b = '-'
		}
		if a != b {
			return false
		}
	}
	return true
}

// markerNames returns the header names of c's markers other than
// Baggage, lower case: the dedicated header and the headers named as
// baggage keys ([propagation.Codec.KeyHeaders]), and each under
// grpc-gateway's prefix (grpc-metadata-), which a gateway passes on to
// its gRPC hop as the marker itself.
func markerNames(c *propagation.Codec) []string {
	names := c.KeyHeaders()
	if h := c.Header(); h != "" {
		names = append(names, h)
	}
	for _, n := range names[:len(names):len(names)] {
		names = append(names, "grpc-metadata-"+n)
	}
	return names
}

var defaultMarkerNames = sync.OnceValue(func() []string { return markerNames(propagation.Default()) })

func (t *Transport) markerNames() []string {
	if t.names != nil {
		return t.names
	}
	return defaultMarkerNames()
}

// namesMarkers reports whether Connection header lines name a marker
// header (header, when not empty, or Baggage).
func namesMarkers(lines []string, header string) bool {
	for _, line := range lines {
		for tok := range strings.SplitSeq(line, ",") {
			if markerToken(tok, header) {
				return true
			}
		}
	}
	return false
}

// markerToken reports whether Connection token tok names a marker header
// (header, when not empty, or Baggage).
func markerToken(tok, header string) bool {
	tok = strings.TrimSpace(tok)
	return strings.EqualFold(tok, "Baggage") || (header != "" && strings.EqualFold(tok, header))
}

// dropMarkerTokens returns the Connection header lines without the tokens
// that name the marker headers (header, when not empty, and Baggage). The
// lines are not modified; a line left without tokens is dropped.
func dropMarkerTokens(lines []string, header string) []string {
	if !namesMarkers(lines, header) {
		return lines
	}
	var out []string
	for _, line := range lines {
		var kept []string
		for tok := range strings.SplitSeq(line, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !markerToken(tok, header) {
				kept = append(kept, tok)
			}
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, ", "))
		}
	}
	return out
}

func (t *Transport) serviceOf(r *http.Request) string {
	if t.service != "" {
		return t.service
	}
	if t.hosts == nil {
		return ""
	}
	if svc := t.hostService(r.URL.Host, r.URL.Scheme); svc != "" {
		return svc
	}
	if r.Host != "" && r.Host != r.URL.Host {
		// Virtual hosting (a shared ingress): the Host header names the
		// service the server hands the request to.
		return t.hostService(r.Host, r.URL.Scheme)
	}
	return ""
}

// hostService returns the service of a "host:port" or "host" in the hosts
// map, or "".
func (t *Transport) hostService(hostport, scheme string) string {
	if svc, ok := t.hosts[hostport]; ok {
		return svc
	}
	// Host names are case-insensitive, "cart." is "cart", and "cart" is
	// "cart:80" over http: the request reaches the same server.
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
	}
	host = canonHost(host)
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	if port != "" {
		if svc, ok := t.hosts[net.JoinHostPort(host, port)]; ok {
			return svc
		}
	}
	return t.hosts[host]
}

// normalHost returns a key of NewHostRoutingTransport's map as serviceOf
// looks it up: "host:port" or the bare host, the host in lower case
// without a trailing dot and an IPv6 address without brackets.
func normalHost(key string) string {
	if h, p, err := net.SplitHostPort(key); err == nil {
		return net.JoinHostPort(canonHost(h), p)
	}
	if strings.HasPrefix(key, "[") && strings.HasSuffix(key, "]") {
		key = key[1 : len(key)-1]
	}
	return canonHost(key)
}

// canonHost returns a host name in lower case without its trailing dot.
func canonHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

func (t *Transport) emit(r *http.Request, d audit.Decision, s propagation.Sandbox, target, reason string) {
	audit.Emit(r.Context(), t.logger, audit.Event{
		Decision: d,
		Sandbox:  s,
		Protocol: audit.HTTP,
		Target:   target,
		Reason:   reason,
	})
}

// fallbackReason says why sandbox id's call goes to the baseline of a
// service when table (loaded) has no route for it: the sandbox is not in
// the table at all, or does not override the service.
func fallbackReason(table *routes.Table, id string) string {
	if _, ok := table.Sandbox(id); !ok {
		return pub.ReasonUnknownSandbox
	}
	return pub.ReasonNotOverridden
}

// splitUpstream returns the scheme and host of a route's upstream:
// "http://host:port", "https://host:port" or "host:port" (plain HTTP).
// The host ends where a path, query or fragment would begin: the route
// table accepts "http://host:port/", "http://host:port?" and
// "http://host:port#" (routes.ValidateUpstream: nothing follows the host
// of a URL but an empty path, query or fragment), and dialling "host:port?" would
// fail, so that the sandbox's version would never be reached.
func splitUpstream(u string) (scheme, host string) {
	scheme, host, ok := strings.Cut(u, "://")
	if !ok {
		return "http", u
	}
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		host = host[:i]
	}
	if strings.IndexByte(host, '%') >= 0 {
		// An escape in the host (an IPv6 zone, "[fe80::1%25eth0]",
		// which RFC 6874 spells with %25): URL.Host holds it
		// unescaped, as url.Parse reads it; dialled escaped, the zone
		// was "25eth0", no interface.
		if pu, err := url.Parse(u); err == nil {
			host = pu.Host
		}
	}
	return scheme, host
}

// isDialError reports whether err is a failure to connect: the request
// never reached the upstream.
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// keepOpen hides Close from the transport, for a body that may be sent
// again.
type keepOpen struct{ io.ReadCloser }

func (keepOpen) Close() error { return nil }

func closeBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}
