package httpmw

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"time"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The options are typed by the constructors that can use them, as
// connect-go's: an option a constructor cannot use does not compile there.
//
//	option                       handler  transport  proxy   type
//	WithCodec, WithLogger,       yes      yes        yes     Option
//	WithBreaker
//	TrustAll, WithTrustedNetworks,
//	WithTrustedHops, WithVerifier yes     -          yes     TrustOption
//	WithFallbackOnUnavailable    -        routing    yes     RoutingOption
//	WithRoundTripper             -        -          yes     ProxyOption
//
// "routing": the routing transports ([NewRoutingTransport],
// [NewHostRoutingTransport]) take options of type [RoutingTransportOption],
// which every [TransportOption] is; [NewTransport], which does not route, takes
// TransportOptions only, so that WithFallbackOnUnavailable given to it
// does not compile.
//
// Options are resolved when the middleware is built, never per request. A
// nil option in the list is skipped. A misconfiguration (an invalid value,
// conflicting options, an option without what it needs) is an error from
// the constructor wrapping [ErrConfig].

// HandlerOption configures [NewHandler] and [NewMiddleware].
type HandlerOption interface {
	applyHandler(*config)
}

// RoutingTransportOption configures [NewRoutingTransport] and
// [NewHostRoutingTransport]. Every [TransportOption] is one;
// [WithFallbackOnUnavailable] is one and no TransportOption, so that given
// to [NewTransport], which does not route, it does not compile.
type RoutingTransportOption interface {
	applyRouting(*config)
}

// TransportOption configures [NewTransport], [NewRoutingTransport] and
// [NewHostRoutingTransport].
type TransportOption interface {
	RoutingTransportOption
	applyTransport(*config)
}

// ProxyOption configures [NewProxy].
type ProxyOption interface {
	applyProxy(*config)
}

// TrustOption is an option of the trust policy: it configures the
// constructors that admit incoming requests, the handler and the proxy.
type TrustOption interface {
	HandlerOption
	ProxyOption
}

// RoutingOption configures the constructors that choose upstreams: the
// routing transports and the proxy.
type RoutingOption interface {
	RoutingTransportOption
	ProxyOption
}

// Option configures every constructor of the package, so that a service
// can give its ingress and egress one list of the options that must agree
// on both sides (the codec, the logger).
type Option interface {
	HandlerOption
	TransportOption
	ProxyOption
}

// ErrConfig is wrapped by every error a constructor returns for a
// misconfiguration. The error's text names the option or argument.
var ErrConfig = errors.New("httpmw: invalid configuration")

// configError is a misconfiguration: "httpmw: " and what is wrong, which
// errors.Is matches with ErrConfig.
type configError struct {
	msg string
	err error // the cause, if any
}

func (e *configError) Error() string        { return "httpmw: " + e.msg }
func (e *configError) Unwrap() error        { return e.err }
func (e *configError) Is(target error) bool { return target == ErrConfig }

func configErr(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &configError{msg: err.Error(), err: errors.Unwrap(err)}
}

type option func(*config)

func (f option) applyHandler(c *config)   { f(c) }
func (f option) applyTransport(c *config) { f(c) }
func (f option) applyRouting(c *config)   { f(c) }
func (f option) applyProxy(c *config)     { f(c) }

type trustOption func(*config)

func (f trustOption) applyHandler(c *config) { f(c) }
func (f trustOption) applyProxy(c *config)   { f(c) }

type routingOption func(*config)

func (f routingOption) applyRouting(c *config) { f(c) }
func (f routingOption) applyProxy(c *config)   { f(c) }

type proxyOption func(*config)

func (f proxyOption) applyProxy(c *config) { f(c) }

type config struct {
	codec  *propagation.Codec
	logger *slog.Logger
	err    error // the first misconfiguration seen

	// ingress
	policy  trust.Policy
	hops    int
	hopsSet bool

	// egress
	table    *routes.Table
	service  string
	hosts    map[string]string
	fallback bool
	base     http.RoundTripper

	// both sides
	breaker *breaker.Group
}

// fail records a misconfiguration; the first one is the constructor's
// error.
func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// newConfig applies opts to a new config, skipping nil options, with
// apply the role's method (HandlerOption.applyHandler, ...), and checks
// the result; ingress: the constructor admits incoming requests.
func newConfig[O comparable](opts []O, apply func(O, *config), ingress bool) (config, error) {
	var c config
	var none O
	for _, o := range opts {
		if o != none {
			apply(o, &c)
		}
	}
	return c, c.finish(ingress)
}

func handlerConfig(opts []HandlerOption) (config, error) {
	return newConfig(opts, HandlerOption.applyHandler, true)
}

func transportConfig(opts []TransportOption) (config, error) {
	return newConfig(opts, TransportOption.applyTransport, false)
}

func routingConfig(opts []RoutingTransportOption) (config, error) {
	return newConfig(opts, RoutingTransportOption.applyRouting, false)
}

func proxyConfig(opts []ProxyOption) (config, error) {
	return newConfig(opts, ProxyOption.applyProxy, true)
}

// finish checks what no single option can: conflicts between options. It
// sets the defaults.
func (c *config) finish(ingress bool) error {
	if c.err != nil {
		return c.err
	}
	if c.codec == nil {
		c.codec = propagation.Default()
	}
	if !ingress {
		return nil
	}
	switch {
	case c.policy.All && len(c.policy.Networks) > 0:
		return configErr("TrustAll conflicts with WithTrustedNetworks: TrustAll trusts every peer")
	case c.policy.All && c.hopsSet:
		return configErr("TrustAll conflicts with WithTrustedHops: TrustAll trusts every peer")
	case c.hopsSet && len(c.policy.Networks) == 0:
		return configErr("WithTrustedHops needs WithTrustedNetworks: the proxies in front must be trusted peers")
	}
	return nil
}

// WithCodec sets the codec that reads and writes sandbox markers (default
// [propagation.Default]). Every hop of a system must use the same names.
// A nil codec, one not made by [propagation.NewCodec] (the zero Codec), or
// two different codecs, is a misconfiguration.
func WithCodec(c *propagation.Codec) Option {
	return option(func(cfg *config) {
		switch {
		case c == nil:
			cfg.fail(configErr("WithCodec: nil codec"))
		case len(c.Fields()) == 0:
			// The zero Codec reads no marker (every codec NewCodec
			// makes reads baggage): a gate built on it would pass
			// every marker on, unjudged.
			cfg.fail(configErr("WithCodec: codec not made by propagation.NewCodec"))
		case cfg.codec != nil && cfg.codec != c:
			cfg.fail(configErr("WithCodec: two different codecs"))
		default:
			cfg.codec = c
		}
	})
}

// WithLogger sets the logger that receives the audit records (admitted,
// stripped, rejected, routed, fallback, throttled; see package
// [github.com/sandboxkit/sandboxkit/audit]). Without it, or with a nil
// logger, the middleware is silent.
func WithLogger(l *slog.Logger) Option {
	return option(func(cfg *config) { cfg.logger = l })
}

// WithTrustedNetworks adds networks whose peers may set a sandbox. IPv4 and
// IPv6 prefixes are accepted; each is masked (10.1.2.3/8 is 10.0.0.0/8),
// an IPv4-mapped IPv6 prefix stands for its IPv4 prefix, and IPv4-mapped
// IPv6 peers match IPv4 prefixes. An invalid prefix (the zero
// netip.Prefix) is a misconfiguration. Repeated uses add up.
func WithTrustedNetworks(prefixes ...netip.Prefix) TrustOption {
	return trustOption(func(cfg *config) {
		nets, err := trust.Networks(prefixes)
		if err != nil {
			cfg.fail(configErr("WithTrustedNetworks: %w", err))
			return
		}
		cfg.policy.Networks = append(cfg.policy.Networks, nets...)
	})
}

// WithTrustedHops makes the middleware look behind n trusted proxies: when
// the direct peer is in a trusted network, the client address is taken as
// the n-th entry from the right of X-Forwarded-For (all header lines
// together), and that address must be in a trusted network too. A request
// with fewer than n entries, or an entry among the last n that is not an IP
// address, comes from an untrusted source. Entries further left, which the
// client wrote itself, are never consulted. When the request also has a
// Forwarded header (RFC 7239), the for= address of its n-th element from
// the right must be an IP address in a trusted network as well: a proxy
// that records the client there and not in X-Forwarded-For leaves the
// client's own X-Forwarded-For at the right end. Fewer than n elements, or
// an element whose for= is missing, obfuscated or "unknown", make the
// source untrusted. Without this option X-Forwarded-For and Forwarded are
// ignored. This is Envoy's xff_num_trusted_hops.
//
// Count only proxies that pass markers on without judging them (load
// balancers). Behind a hop that admits sandboxes itself (a [NewProxy] or
// handler with [WithVerifier], whose ticket is not forwarded) the client
// named by X-Forwarded-For is the outsider the ticket admitted: a hop
// counting hops behind it strips the sandbox, and the request goes on as
// production traffic. Trust such a hop by its network alone.
//
// It needs [WithTrustedNetworks] (the proxies must be trusted peers) and
// conflicts with [TrustAll]; a negative n, or two different counts, is a
// misconfiguration.
func WithTrustedHops(n int) TrustOption {
	return trustOption(func(cfg *config) {
		switch {
		case n < 0:
			cfg.fail(configErr("WithTrustedHops: negative hop count %d", n))
		case cfg.hopsSet && cfg.hops != n:
			cfg.fail(configErr("WithTrustedHops: two different hop counts, %d and %d", cfg.hops, n))
		default:
			cfg.hops, cfg.hopsSet = n, true
		}
	})
}

// WithVerifier accepts sandbox markers from any peer when they come with a
// valid signed ticket (see [propagation.Signer]), and rejects requests whose
// ticket is invalid, expired, or signed for another sandbox, actor or
// origin. A nil verifier, or two different ones, is a misconfiguration.
func WithVerifier(v *propagation.Verifier) TrustOption {
	return trustOption(func(cfg *config) {
		switch {
		case v == nil:
			cfg.fail(configErr("WithVerifier: nil verifier"))
		case cfg.policy.Verifier != nil && cfg.policy.Verifier != v:
			cfg.fail(configErr("WithVerifier: two different verifiers"))
		default:
			cfg.policy.Verifier = v
		}
	})
}

// TrustAll honours sandbox markers from every peer. Use it only for
// internal hops behind an edge that already filters (a [NewHandler] or
// [NewProxy] with a narrower policy). It conflicts with
// [WithTrustedNetworks] and [WithTrustedHops].
func TrustAll() TrustOption {
	return trustOption(func(cfg *config) { cfg.policy.All = true })
}

// withClock sets the clock used to check ticket expiry (default
// time.Now). Tests reach it through export_test.go.
func withClock(now func() time.Time) TrustOption {
	return trustOption(func(cfg *config) { cfg.policy.Now = now })
}

// WithFallbackOnUnavailable sends a sandbox request to the baseline when
// the sandbox's upstream cannot be connected to. By default such a request
// fails with [ErrSandboxUnavailable]: running it on the baseline would run
// the baseline's code paths for traffic meant for the sandbox's version.
// Only requests whose body can be replayed (no body, or Request.GetBody
// set) fall back. The same holds for a sandbox request while the route
// table has never loaded (see [NewRoutingTransport]): by default it fails
// with ErrSandboxUnavailable, with this option it goes to the baseline.
// Routing transports and proxy; it does not compile as an option of
// [NewTransport], which does not route.
func WithFallbackOnUnavailable() RoutingOption {
	return routingOption(func(cfg *config) { cfg.fallback = true })
}

// WithRoundTripper sets the transport the proxy sends requests with
// (default [NewProxyTransport]); give one with HTTP/2 enabled for h2c
// upstreams. A nil rt keeps the default; a nil pointer or func in a
// non-nil rt (a *http.Transport variable left unset) is a
// misconfiguration.
func WithRoundTripper(rt http.RoundTripper) ProxyOption {
	return proxyOption(func(cfg *config) {
		if nilRoundTripper(rt) {
			cfg.fail(configErr("WithRoundTripper: nil %T", rt))
			return
		}
		cfg.base = rt
	})
}

// nilRoundTripper reports whether rt, not itself nil, holds a nil pointer
// or func: every round trip through it would panic (http.Transport's
// "transport is nil").
func nilRoundTripper(rt http.RoundTripper) bool {
	if rt == nil {
		return false
	}
	switch v := reflect.ValueOf(rt); v.Kind() {
	case reflect.Pointer, reflect.Func:
		return v.IsNil()
	}
	return false
}

// checkBase returns the misconfiguration of a transport constructor's
// base, if any.
func checkBase(constructor string, base http.RoundTripper) error {
	if nilRoundTripper(base) {
		return configErr("%s: nil %T as base", constructor, base)
	}
	return nil
}

// WithBreaker puts requests under the per-sandbox budgets of g (see package
// [breaker]): each sandbox's rate limit, cap on requests in flight and
// circuit breaker. Requests without a sandbox are budgeted only when g has
// a baseline budget ([breaker.Settings.Baseline]); otherwise they do not
// touch g. A nil g adds nothing.
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
// Every refusal is one audit record (decision audit.Throttled, with the
// sandbox, its actor and the reason) on the [WithLogger] logger. A group
// guards one dependency: give it to one layer only (a proxy applies it
// once, for both of its sides), and note that a transport calling several
// services ([NewHostRoutingTransport]) spends one budget per sandbox on
// all of them. Two different groups given to one constructor are a
// misconfiguration; the same group twice is one group.
func WithBreaker(g *breaker.Group) Option {
	return option(func(cfg *config) {
		switch {
		case g == nil:
		case cfg.breaker != nil && cfg.breaker != g:
			cfg.fail(configErr("WithBreaker: two different groups"))
		default:
			cfg.breaker = g
		}
	})
}
