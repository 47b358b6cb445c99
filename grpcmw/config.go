package grpcmw

import (
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Option configures the interceptors and the [Router]. Options are resolved
// once, when the interceptor or router is built. An option that does not
// concern a constructor is ignored by it (the trust options only matter to
// the server interceptors, the dial and fallback options only to
// [NewRouter]).
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	codec    *propagation.Codec
	logger   *slog.Logger
	policy   trust.Policy
	dialOpts []grpc.DialOption
	fallback bool
	breaker  *breaker.Group
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
	return c
}

// WithCodec sets the codec that reads and writes sandbox markers (header
// and baggage key names, compatible keys). The default is
// [propagation.Default]. A nil codec keeps the default.
func WithCodec(c *propagation.Codec) Option {
	return optionFunc(func(cfg *config) { cfg.codec = c })
}

// WithLogger sets the logger that receives one audit record per decision
// about sandbox traffic (admitted, stripped, rejected, routed, fallback).
// Without a logger the middleware is silent.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(cfg *config) { cfg.logger = l })
}

// TrustAll makes the server interceptors honour sandbox markers from every
// peer. Use it only on internal hops behind an edge that strips markers
// from untrusted sources.
func TrustAll() Option {
	return optionFunc(func(cfg *config) { cfg.policy.All = true })
}

// WithTrustedNetworks adds networks whose peers may set a sandbox. Calls from
// other peers have their markers stripped unless they carry a valid ticket
// (see [WithVerifier]). Repeated uses add up.
func WithTrustedNetworks(prefixes ...netip.Prefix) Option {
	return optionFunc(func(cfg *config) {
		cfg.policy.Networks = append(slices.Clip(cfg.policy.Networks), prefixes...)
	})
}

// WithVerifier admits markers carrying a valid signed ticket from any peer,
// and rejects markers whose ticket is invalid, tampered with or expired
// (with codes.InvalidArgument), whatever the peer.
func WithVerifier(v *propagation.Verifier) Option {
	return optionFunc(func(cfg *config) { cfg.policy.Verifier = v })
}

// WithClock sets the clock used to check ticket expiry (default time.Now).
func WithClock(now func() time.Time) Option {
	return optionFunc(func(cfg *config) { cfg.policy.Now = now })
}

// WithDialOptions sets the options [NewRouter] passes to grpc.NewClient when
// it connects to a sandbox upstream: transport credentials at least, and
// whatever interceptors and stats handlers the baseline connection has.
// Repeated uses add up.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(cfg *config) {
		cfg.dialOpts = append(slices.Clip(cfg.dialOpts), opts...)
	})
}

// WithFallbackOnUnavailable makes the [Router] send a sandbox's call to the
// baseline when the sandbox's upstream cannot be reached (no connection
// could be made, so the call was not sent there), instead of failing it
// with codes.Unavailable. Each such fallback is audited. Without this
// option a sandbox call never silently reaches the baseline version of a
// service the sandbox overrides.
func WithFallbackOnUnavailable() Option {
	return optionFunc(func(cfg *config) { cfg.fallback = true })
}

// WithBreaker puts calls under the per-sandbox budgets of g (see package
// [breaker]): each sandbox's rate limit, cap on calls in flight and circuit
// breaker. Calls without a sandbox are budgeted only when g has a baseline
// budget ([breaker.Settings.Baseline]); otherwise they do not touch g. A
// nil g adds nothing. Client interceptors, [Router] and server
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
// Every refusal is one audit record (decision "throttled", with the
// sandbox, its actor and the reason) on the [WithLogger] logger. A group
// guards one dependency: give it to one layer only (the [Router] or the
// client interceptors of its connections, not both).
func WithBreaker(g *breaker.Group) Option {
	return optionFunc(func(cfg *config) { cfg.breaker = g })
}
