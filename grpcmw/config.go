package grpcmw

import (
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc"

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
