package httpmw

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Proxy is a sandbox-aware reverse proxy in front of one service: it
// applies the trust rules of [NewHandler] to incoming requests and sends
// each one, with its markers, to the sandbox's version of the service when
// the route table says so and to the baseline otherwise. Build one with
// [NewProxy]; the zero value is not usable. A Proxy is safe for concurrent
// use.
type Proxy struct {
	transport *Transport
	gate      gate
	budget    budget
	service   string
	rp        httputil.ReverseProxy
}

var _ http.Handler = (*Proxy)(nil)

// NewProxy returns a reverse proxy for service, whose baseline is served at
// baseline (an absolute http or https URL without user info; its path is
// prefixed to request paths and its query joined to theirs, as in
// httputil.ProxyRequest.SetURL). Sandboxes that override
// service in table get their requests at their upstream instead, with the
// same path and query. A nil table, an empty or invalid service
// ([routes.ValidateService]) or a baseline that is not an absolute http or
// https URL, or that has user info (which SetURL would drop), is an error
// wrapping [ErrConfig], as
// are misconfigured options. A proxy that only applies the trust rules
// and propagates takes an empty table that counts as loaded:
// routes.NewStatic(nil). While a table from [routes.New] has never loaded,
// sandbox requests are answered 503 (see [NewRoutingTransport]).
//
// The proxy is built on httputil.ReverseProxy with a Rewrite hook: bodies
// are streamed, the incoming X-Forwarded-For chain is kept with the peer's
// address appended (and X-Forwarded-Host/-Proto set, as
// httputil.ProxyRequest.SetXForwarded does), and protocol upgrades
// (WebSocket and the like) are tunnelled, except the upgrade to h2c,
// which would let the client send requests inside the tunnel that the
// proxy never sees: it is removed and the request is served over
// HTTP/1.1. Upstream choice happens in the proxy's [Transport], so that a
// sandbox whose upstream refuses connections
// is not served by the baseline. It answers 503 with Retry-After when a
// sandbox's upstream cannot be connected to or the table has never loaded
// ([ErrSandboxUnavailable]; see [WithFallbackOnUnavailable]) and 502 for
// other upstream failures.
//
// With [WithBreaker], a sandbox request over its budget is answered 503 or
// 429 before it is proxied, and the proxy's answers (the upstream's status,
// or its own 502 and 503) are the outcomes the budget counts.
//
// Without [WithRoundTripper] the proxy sends its requests through a
// transport of its own, [NewProxyTransport], sized for proxying (many idle
// connections per upstream, bounded dial, TLS and response-header
// timeouts), not through http.DefaultTransport, which keeps 2 idle
// connections per host and so opens and closes connections under
// concurrent load. [Proxy.CloseIdleConnections] closes its idle
// connections.
//
// Options: every [TrustOption], [WithCodec], [WithLogger],
// [WithFallbackOnUnavailable], [WithRoundTripper] and [WithBreaker].
func NewProxy(table *routes.Table, service string, baseline *url.URL, opts ...ProxyOption) (*Proxy, error) {
	if table == nil {
		return nil, configErr("NewProxy: nil route table")
	}
	if service == "" {
		return nil, configErr("NewProxy: empty service name")
	}
	if err := routes.ValidateService(service); err != nil {
		return nil, configErr("NewProxy: %w", err)
	}
	if baseline == nil || (baseline.Scheme != "http" && baseline.Scheme != "https") || baseline.Host == "" {
		return nil, configErr("NewProxy: baseline %v: want an absolute http or https URL", baseline)
	}
	if baseline.User != nil {
		// httputil.ProxyRequest.SetURL takes the scheme, host, path and
		// query, never the user: the credentials would silently not be
		// sent. (Redacted shows no password.)
		return nil, configErr("NewProxy: baseline %s: user info is not sent to the baseline; set an Authorization header in a transport of your own (WithRoundTripper)", baseline.Redacted())
	}
	cfg, err := proxyConfig(opts)
	if err != nil {
		return nil, err
	}
	cfg.table, cfg.service = table, service
	base := cfg.base
	if base == nil {
		base = NewProxyTransport()
	}
	t := newTransport(base, &cfg)
	t.owned = true
	t.budget = budget{} // the proxy applies the budget once, on the way in
	target := *baseline
	p := &Proxy{transport: t, gate: newProxyGate(&cfg, service), budget: newBudget(&cfg), service: service}
	p.rp = httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&target)
			// Keep the chain so that the next hop can count its trusted
			// hops; SetXForwarded appends this proxy's peer.
			if prior := pr.In.Header[xffHeader]; len(prior) > 0 {
				pr.Out.Header[xffHeader] = prior
			}
			pr.SetXForwarded()
			dropH2CUpgrade(pr.Out.Header)
		},
		Transport:    t,
		ErrorHandler: p.fail,
		ErrorLog:     errorLog(cfg.logger),
	}
	return p, nil
}

// The settings of [NewProxyTransport].
const (
	// ProxyMaxIdleConnsPerHost is how many idle connections the proxy
	// keeps to each upstream: enough for the requests one proxy has in
	// flight to one upstream at once on a busy service, so that they reuse
	// connections instead of dialling.
	ProxyMaxIdleConnsPerHost = 256
	// ProxyMaxIdleConns caps the idle connections to all upstreams.
	ProxyMaxIdleConns = 1024
	// ProxyIdleConnTimeout closes a connection idle for that long.
	ProxyIdleConnTimeout = 90 * time.Second
	// ProxyDialTimeout bounds connecting to an upstream.
	ProxyDialTimeout = 5 * time.Second
	// ProxyTLSHandshakeTimeout bounds the TLS handshake with an upstream.
	ProxyTLSHandshakeTimeout = 5 * time.Second
	// ProxyResponseHeaderTimeout bounds the wait for an upstream's
	// response headers once the request is sent; a streamed response body
	// is not bounded. A handler that holds its headers back longer (long
	// polling) needs a transport of its own ([WithRoundTripper]).
	ProxyResponseHeaderTimeout = 60 * time.Second
)

// NewProxyTransport returns the transport [NewProxy] uses without
// [WithRoundTripper]: a new http.Transport with the Proxy* settings above,
// TCP keep-alives every 30 seconds, HTTP/2 attempted on TLS upstreams, and
// no proxy from the environment (upstreams are the service's own
// neighbours; set Proxy on the result to change that). Start from it when
// you need a transport of your own, e.g. with TLS settings.
func NewProxyTransport() *http.Transport {
	d := &net.Dialer{Timeout: ProxyDialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          ProxyMaxIdleConns,
		MaxIdleConnsPerHost:   ProxyMaxIdleConnsPerHost,
		IdleConnTimeout:       ProxyIdleConnTimeout,
		TLSHandshakeTimeout:   ProxyTLSHandshakeTimeout,
		ResponseHeaderTimeout: ProxyResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// CloseIdleConnections closes the idle connections of the proxy's
// transport.
func (p *Proxy) CloseIdleConnections() { p.transport.CloseIdleConnections() }

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r, ok := p.gate.pass(w, r)
	if !ok {
		return
	}
	if !p.budget.Active() {
		p.rp.ServeHTTP(w, r)
		return
	}
	p.budget.serve(w, r, &p.rp, p.service)
}

// fail answers a request the upstream could not serve.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrSandboxUnavailable) {
		s, _ := propagation.FromContext(r.Context())
		w.Header().Set("Retry-After", unavailableRetryAfter)
		http.Error(w, fmt.Sprintf("sandbox %s: the upstream of service %s is unavailable", s.ID, p.service), http.StatusServiceUnavailable)
		return
	}
	http.Error(w, http.StatusText(http.StatusBadGateway), http.StatusBadGateway)
}

// unavailableRetryAfter is the Retry-After, in seconds, of the proxy's
// 503 for an unavailable sandbox upstream: a table's first load or an
// upstream's start is a matter of seconds.
const unavailableRetryAfter = "1"

// errorLog sends the reverse proxy's own messages to the user's logger, or
// nowhere.
func errorLog(l *slog.Logger) *log.Logger {
	if l == nil {
		return log.New(io.Discard, "", 0)
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelError)
}

// dropH2CUpgrade removes an upgrade to h2c from an outgoing request's
// headers (httputil.ReverseProxy puts the upgrade back after removing the
// hop-by-hop headers). Passed on, it makes the connection a tunnel in
// which the client sends HTTP/2 requests that neither the proxy nor its
// gate sees: markers of untrusted clients would reach the service, from a
// peer it trusts, and every request would go to the upstream the first
// one picked. The upgrade is hop-by-hop (RFC 7540, section 3.2; RFC 9113
// retired it); without it the upstream serves the request over HTTP/1.1,
// and an upstream that switches anyway is refused by the reverse proxy
// (502).
func dropH2CUpgrade(h http.Header) {
	if !upgradesToH2C(h["Upgrade"]) {
		return
	}
	delete(h, "Upgrade")
	delete(h, "Http2-Settings")
	if conn := h["Connection"]; len(conn) > 0 {
		var kept []string
		for _, line := range conn {
			for tok := range strings.SplitSeq(line, ",") {
				if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "Upgrade") && !strings.EqualFold(tok, "HTTP2-Settings") {
					kept = append(kept, tok)
				}
			}
		}
		if len(kept) == 0 {
			delete(h, "Connection")
		} else {
			h["Connection"] = []string{strings.Join(kept, ", ")}
		}
	}
}

// upgradesToH2C reports whether Upgrade header lines offer h2c (any case,
// with or without a version).
func upgradesToH2C(lines []string) bool {
	for _, line := range lines {
		for tok := range strings.SplitSeq(line, ",") {
			tok = strings.TrimSpace(tok)
			if i := strings.IndexByte(tok, '/'); i >= 0 {
				tok = strings.TrimSpace(tok[:i]) // protocol/version
			}
			if strings.EqualFold(tok, "h2c") {
				return true
			}
		}
	}
	return false
}
