package grpcmw

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// ServerOption configures [NewServerInterceptors].
type ServerOption interface {
	applyServer(*config)
}

// RouterOption configures [NewRouter]. Every [ClientOption] is one; the
// options only a router can use ([WithDialOptions],
// [WithFallbackOnUnavailable]) are RouterOptions alone, so that given to
// [NewClientInterceptors] they do not compile.
type RouterOption interface {
	applyRouter(*config)
}

// ClientOption configures [NewClientInterceptors] and [NewRouter].
type ClientOption interface {
	RouterOption
	applyClient(*config)
}

// Option configures every constructor of the package: it is both a
// [ServerOption] and a [ClientOption].
type Option interface {
	ServerOption
	ClientOption
}

// option is an [Option]; serverOption and routerOption serve one role
// (every option a client interceptor takes is an [Option]).
type (
	option       func(*config)
	serverOption func(*config)
	routerOption func(*config)
)

func (f option) applyServer(c *config)       { f(c) }
func (f option) applyClient(c *config)       { f(c) }
func (f option) applyRouter(c *config)       { f(c) }
func (f serverOption) applyServer(c *config) { f(c) }
func (f routerOption) applyRouter(c *config) { f(c) }

// config is what the options set. Options only record what they were
// given; validate judges the whole, so that a conflict is found whatever
// the order.
type config struct {
	codec    *propagation.Codec
	logger   *slog.Logger
	policy   trust.Policy
	networks []netip.Prefix // as given; normalised by validate
	dialOpts []grpc.DialOption
	fallback bool
	breaker  *breaker.Group
	lookUp   bool // look metadata keys up one by one (see withLookUps)

	errs []error // what options found wrong on their own
}

// fail records a misconfiguration found by the option named opt.
func (c *config) fail(opt, format string, args ...any) {
	c.errs = append(c.errs, configErrorf(opt, format, args...))
}

// newServerConfig applies opts (nil ones are skipped) and validates them.
func newServerConfig(opts []ServerOption) (config, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o.applyServer(&c)
		}
	}
	return c, c.validate()
}

// newClientConfig applies opts (nil ones are skipped) and validates them.
func newClientConfig(opts []ClientOption) (config, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o.applyClient(&c)
		}
	}
	return c, c.validate()
}

// newRouterConfig applies opts (nil ones are skipped) and validates them.
func newRouterConfig(opts []RouterOption) (config, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o.applyRouter(&c)
		}
	}
	return c, c.validate()
}

// validate fills in defaults and reports every misconfiguration, joined.
func (c *config) validate() error {
	if c.codec == nil {
		c.codec = propagation.Default()
	}
	if c.policy.All && len(c.networks) > 0 {
		c.fail("TrustAll", "conflicts with WithTrustedNetworks (TrustAll already trusts every peer)")
	}
	nets, err := trust.Networks(c.networks)
	if err != nil {
		c.errs = append(c.errs, configErrorf("WithTrustedNetworks", "%w", err))
	}
	c.policy.Networks = nets
	return errors.Join(c.errs...)
}

// WithCodec sets the codec that reads and writes sandbox markers (header
// and baggage key names, compatible keys). The default is
// [propagation.Default]. Every hop of a system must use the same names. A
// nil codec, one not made by [propagation.NewCodec] (the zero Codec), or
// two different codecs, are an [ErrConfig] error.
func WithCodec(c *propagation.Codec) Option {
	return option(func(cfg *config) {
		switch {
		case c == nil:
			cfg.fail("WithCodec", "nil codec")
		case len(c.Fields()) == 0:
			// The zero Codec reads no marker (every codec NewCodec
			// makes reads baggage): interceptors built on it would
			// pass every marker on, unjudged.
			cfg.fail("WithCodec", "codec not made by propagation.NewCodec")
		case cfg.codec != nil && cfg.codec != c:
			cfg.fail("WithCodec", "two different codecs")
		default:
			cfg.codec = c
		}
	})
}

// WithLogger sets the logger that receives one audit record per decision
// about sandbox traffic (admitted, stripped, rejected, routed, fallback,
// throttled; see package [github.com/sandboxkit/sandboxkit/audit]).
// Without it, or with a nil logger, the middleware is silent.
func WithLogger(l *slog.Logger) Option {
	return option(func(cfg *config) { cfg.logger = l })
}

// TrustAll makes the server interceptors honour sandbox markers from every
// peer. Use it only on internal hops behind an edge that strips markers
// from untrusted sources. With [WithTrustedNetworks] it is an [ErrConfig]
// error.
func TrustAll() ServerOption {
	return serverOption(func(cfg *config) { cfg.policy.All = true })
}

// WithTrustedNetworks adds networks whose peers may set a sandbox. Calls from
// other peers have their markers stripped unless they carry a valid ticket
// (see [WithVerifier]). Repeated uses add up. Prefixes are masked
// (10.1.2.3/8 is 10.0.0.0/8) and IPv4-mapped IPv6 prefixes taken as the
// IPv4 prefixes they map; an invalid prefix (the zero netip.Prefix) is an
// [ErrConfig] error.
//
// The peer judged is the call's direct peer (peer.FromContext): a proxy
// in a trusted network vouches for every client behind it, since no
// x-forwarded-for metadata is read (a client could write it). Keep
// proxies that carry outside callers out of the trusted networks, or
// strip at an edge in front of them. A peer on a transport that is not IP
// (a Unix socket, bufconn) is in no network: its markers are stripped and
// audited (peer "@" on a Unix socket); a server that listens only for
// trusted local callers there needs [TrustAll].
func WithTrustedNetworks(prefixes ...netip.Prefix) ServerOption {
	return serverOption(func(cfg *config) {
		cfg.networks = append(slices.Clip(cfg.networks), prefixes...)
	})
}

// WithVerifier admits markers carrying a valid signed ticket from any peer,
// and rejects markers whose ticket is invalid, tampered with or expired
// (with codes.InvalidArgument), whatever the peer. A nil verifier, or two
// different ones, is an [ErrConfig] error, as in httpmw.
func WithVerifier(v *propagation.Verifier) ServerOption {
	return serverOption(func(cfg *config) {
		switch {
		case v == nil:
			cfg.fail("WithVerifier", "nil verifier")
		case cfg.policy.Verifier != nil && cfg.policy.Verifier != v:
			cfg.fail("WithVerifier", "two different verifiers")
		default:
			cfg.policy.Verifier = v
		}
	})
}

// withClock sets the clock that checks ticket expiry (default time.Now);
// tests reach it through export_test.go.
func withClock(now func() time.Time) ServerOption {
	return serverOption(func(cfg *config) { cfg.policy.Now = now })
}

// withLookUps makes the server interceptors look each metadata key named
// as one of ours up through gRPC's lookups, as they do when gRPC keeps its
// metadata another way than they read in place (see incomingKey); tests
// reach it through export_test.go.
func withLookUps() ServerOption {
	return serverOption(func(cfg *config) { cfg.lookUp = true })
}

// WithDialOptions sets the options [NewRouter] passes to grpc.NewClient when
// it connects to a sandbox upstream: transport credentials at least, and
// whatever interceptors and stats handlers the baseline connection has.
// Repeated uses add up. Only [NewRouter] uses it.
func WithDialOptions(opts ...grpc.DialOption) RouterOption {
	return routerOption(func(cfg *config) {
		cfg.dialOpts = append(slices.Clip(cfg.dialOpts), opts...)
	})
}

// WithFallbackOnUnavailable makes the [Router] send a sandbox's call to the
// baseline when the sandbox's upstream cannot be reached (no connection
// could be made, so the call was not sent there), instead of failing it
// with codes.Unavailable. Each such fallback is audited. Without this
// option a sandbox call never silently reaches the baseline version of a
// service the sandbox overrides. Only [NewRouter] uses it.
func WithFallbackOnUnavailable() RouterOption {
	return routerOption(func(cfg *config) {
		cfg.fallback = true
	})
}

// WithBreaker puts calls under the per-sandbox budgets of g (see package
// [breaker]): each sandbox's rate limit, cap on calls in flight and circuit
// breaker. Calls without a sandbox are budgeted only when g has a baseline
// budget ([breaker.Settings.Baseline]); otherwise they do not touch g. A
// nil g adds nothing; two different groups are an [ErrConfig] error (the
// same group twice is not). Client interceptors, [Router] and server
// interceptors.
//
// A call over its budget is refused with codes.Unavailable (breaker open,
// too many in flight) or codes.ResourceExhausted (rate limit); the status
// message gives the retry-after hint and the status carries it as an
// errdetails.RetryInfo detail. On the client side (interceptors and
// [Router]) the call is not sent and the error also wraps the group's
// refusal: errors.Is(err, [breaker.ErrThrottled]) (or [breaker.ErrOpen],
// [breaker.ErrTooManyInFlight]) holds and [breaker.RetryAfter] reads the
// hint. On the server side the handler is not called.
//
// A call that ends with codes.Unavailable, Internal, Unknown or
// DeadlineExceeded counts as a failure (on the server side, so does a
// panicking handler); one that ends with codes.Canceled counts for
// nothing; any other code is the application's answer and counts as a
// success. A unary call is in flight until it returns, a stream until it
// ends (gRPC's OnFinish on the client side, the handler's return on the
// server side; a [Router] whose baseline is not a *grpc.ClientConn must
// honour grpc.OnFinish for its streams to be counted out).
//
// Every refusal is one audit record (decision audit.Throttled, with the
// sandbox, its actor and the reason) on the [WithLogger] logger. A group
// guards one dependency: give it to one layer only (the [Router] or the
// client interceptors of its connections, not both).
func WithBreaker(g *breaker.Group) Option {
	return option(func(cfg *config) {
		switch {
		case g == nil:
		case cfg.breaker != nil && cfg.breaker != g:
			cfg.fail("WithBreaker", "two different breaker groups")
		default:
			cfg.breaker = g
		}
	})
}
