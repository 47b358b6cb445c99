package httpmw

import (
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"time"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Option configures [NewHandler], [NewMiddleware], [NewTransport] and
// [NewProxy]. One option type serves all of them so that a service can
// build its ingress and egress from one list (the codec and the logger
// must agree on both sides); each constructor ignores the options that do
// not concern it, as listed on every option. Options are resolved when the
// middleware is built, never per request.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	codec  *propagation.Codec
	logger *slog.Logger

	// ingress
	policy trust.Policy
	hops   int

	// egress
	table    *routes.Table
	service  string
	hosts    map[string]string
	fallback bool
	base     http.RoundTripper

	// both sides
	breaker *breaker.Group
}

func newConfig(opts []Option) config {
	c := config{codec: propagation.Default()}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.codec == nil {
		c.codec = propagation.Default()
	}
	if c.hops < 0 {
		c.hops = 0
	}
	return c
}

// WithCodec sets the codec that reads and writes sandbox markers (default
// [propagation.Default]). Every hop of a system must use the same names.
// Handler, transport and proxy.
func WithCodec(c *propagation.Codec) Option {
	return optionFunc(func(cfg *config) { cfg.codec = c })
}

// WithLogger sets the logger that receives the audit records (admitted,
// stripped, rejected, routed, fallback). Without it the middleware is
// silent. Handler, transport and proxy.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(cfg *config) { cfg.logger = l })
}

// WithTrustedNetworks adds networks whose peers may set a sandbox. IPv4 and
// IPv6 prefixes are accepted; IPv4-mapped IPv6 peers match IPv4 prefixes.
// Repeated calls add up. Handler and proxy.
func WithTrustedNetworks(prefixes ...netip.Prefix) Option {
	return optionFunc(func(cfg *config) {
		for _, p := range prefixes {
			cfg.policy.Networks = append(cfg.policy.Networks, p.Masked())
		}
	})
}

// WithTrustedHops makes the middleware look behind n trusted proxies: when
// the direct peer is in a trusted network, the client address is taken as
// the n-th entry from the right of X-Forwarded-For (all header lines
// together), and that address must be in a trusted network too. A request
// with fewer than n entries, or an entry among the last n that is not an IP
// address, comes from an untrusted source. Entries further left, which the
// client wrote itself, are never consulted. The default, 0, ignores
// X-Forwarded-For. This is Envoy's xff_num_trusted_hops. Handler and proxy.
func WithTrustedHops(n int) Option {
	return optionFunc(func(cfg *config) { cfg.hops = n })
}

// WithVerifier accepts sandbox markers from any peer when they come with a
// valid signed ticket (see [propagation.Signer]), and rejects requests whose
// ticket is invalid, expired, or signed for another sandbox, actor or
// origin. Handler and proxy.
func WithVerifier(v *propagation.Verifier) Option {
	return optionFunc(func(cfg *config) { cfg.policy.Verifier = v })
}

// TrustAll honours sandbox markers from every peer. Use it only for
// internal hops behind an edge that already filters (a [NewHandler] or
// [NewProxy] with a narrower policy). It overrides [WithTrustedNetworks]
// and [WithTrustedHops]. Handler and proxy.
func TrustAll() Option {
	return optionFunc(func(cfg *config) { cfg.policy.All = true })
}

// WithClock sets the clock used to check ticket expiry (default
// time.Now). Handler and proxy.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(cfg *config) { cfg.policy.Now = now })
}

// WithRoutes sets the route table that chooses the upstream of sandbox
// requests. Without it the transport only propagates. Transport ([NewProxy]
// takes its table as an argument).
func WithRoutes(t *routes.Table) Option {
	return optionFunc(func(cfg *config) { cfg.table = t })
}

// WithService names the service every request of the transport goes to,
// the name under which sandboxes override it in the route table.
// It takes precedence over [WithHostServices]. Transport.
func WithService(name string) Option {
	return optionFunc(func(cfg *config) { cfg.service = name })
}

// WithHostServices maps request hosts to service names, for a transport
// that calls several services. A request's URL host is looked up as
// "host:port" first and then as the bare host name; a host that is not in
// the map is not routed (the sandbox is still propagated). The map is
// copied. Transport.
func WithHostServices(hosts map[string]string) Option {
	return optionFunc(func(cfg *config) { cfg.hosts = maps.Clone(hosts) })
}

// WithFallbackOnUnavailable sends a sandbox request to the baseline when
// the sandbox's upstream cannot be connected to. By default such a request
// fails with [ErrSandboxUnavailable]: running it on the baseline would run
// the baseline's code paths for traffic meant for the sandbox's version.
// Only requests whose body can be replayed (no body, or Request.GetBody
// set) fall back. Transport and proxy.
func WithFallbackOnUnavailable() Option {
	return optionFunc(func(cfg *config) { cfg.fallback = true })
}

// WithRoundTripper sets the transport the proxy sends requests with
// (default http.DefaultTransport); give one with HTTP/2 enabled for h2c
// upstreams. Proxy ([NewTransport] takes its base as an argument).
func WithRoundTripper(rt http.RoundTripper) Option {
	return optionFunc(func(cfg *config) { cfg.base = rt })
}

// WithBreaker puts requests under the per-sandbox budgets of g (see package
// [breaker]): each sandbox's rate limit, cap on requests in flight and
// circuit breaker. Requests without a sandbox are budgeted only when g has
// a baseline budget ([breaker.Settings.Baseline]); otherwise they do not
// touch g. A nil g adds nothing. Handler, transport and proxy.
//
// On a [Transport] (client side) a request over its budget is not sent:
// RoundTrip returns an error wrapping the group's refusal, so that
// errors.Is(err, [breaker.ErrThrottled]) (or [breaker.ErrOpen],
// [breaker.ErrTooManyInFlight]) holds and [breaker.RetryAfter] reads the
// hint. A response with a 5xx status and a failed round trip (connection
// errors, [ErrSandboxUnavailable]) count as failures; a round trip whose
// context the caller cancelled counts for nothing. A request is in flight
// until RoundTrip returns, that is until the response headers arrive.
//
// On a handler or a [Proxy] (server side) a service protects itself: a
// request over its sandbox's budget is answered 503 Service Unavailable
// (breaker open, too many in flight) or 429 Too Many Requests (rate
// limit), with a Retry-After header in whole seconds and a short plain-text
// body, and it reaches neither the wrapped handler nor the proxy's
// upstream. A 5xx response (the proxy's own 502 and 503 included) and a
// panicking handler count as failures; a request whose client went away
// counts for nothing. A request is in flight until the handler returns.
//
// Every refusal is one audit record (decision "throttled", with the
// sandbox, its actor and the reason) on the [WithLogger] logger. A group
// guards one dependency: give it to one layer only (a proxy applies it
// once, for both of its sides), and note that a transport calling several
// services ([WithHostServices]) spends one budget per sandbox on all of
// them.
func WithBreaker(g *breaker.Group) Option {
	return optionFunc(func(cfg *config) { cfg.breaker = g })
}
