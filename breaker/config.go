package breaker

import (
	"log/slog"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxkit/sandboxkit/routes"
)

// Defaults used for zero fields of [Settings].
const (
	// DefaultFailures is how many consecutive failures open a breaker.
	DefaultFailures = 5
	// DefaultOpenTimeout is how long a breaker stays open before it
	// lets probes through.
	DefaultOpenTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long a key may go unused before it is
	// evicted.
	DefaultIdleTimeout = 5 * time.Minute
)

// BusyRetryAfter is the retry-after hint of refusals whose end cannot be
// predicted: [ErrTooManyInFlight], and [ErrOpen] while the breaker is
// half-open and its probes are all taken.
const BusyRetryAfter = time.Second

// Budget is the traffic budget of one key. In [Settings.Budget] and
// [Settings.Baseline] a zero field means "no limit"; in an override (the
// route table's budget or [Settings.Override]) a zero field keeps the
// default. Negative values and NaN count as zero.
type Budget struct {
	// Rate is the sustained rate of admitted calls per second, enforced
	// by a token bucket. Zero: no rate limit. +Inf: no rate limit.
	Rate float64
	// Burst is the size of the token bucket. Zero: one second's worth of
	// Rate, at least 1.
	Burst int
	// MaxInFlight caps the calls admitted and not yet done. Zero: no cap.
	MaxInFlight int
}

// Settings configures a [Group]. It is plain data; every zero field has a
// documented default, so the zero Settings is a group that circuit-breaks
// each sandbox on its own and neither rate-limits nor caps it.
type Settings struct {
	// Name names what the group guards (a downstream service, a topic).
	// It is the target of the audit records and the breaker.name
	// attribute of the metrics. Optional.
	Name string

	// Budget is the default budget of every sandbox.
	Budget Budget

	// Baseline, when not nil, is the budget of traffic without a sandbox,
	// which then also gets a circuit breaker of its own. When nil,
	// baseline traffic is never refused and costs nothing.
	Baseline *Budget

	// Override, when set, returns a sandbox's own budget; its non-zero
	// fields replace the defaults (and the route table's budget, see
	// [WithRoutes]). It is called when a sandbox's key is created (its
	// first call, or its first call after eviction) and again after the
	// route table changes; it must be safe for concurrent use. It is not
	// called for baseline traffic. The id it gets is its own to keep.
	Override func(id string) (Budget, bool)

	// Failures is how many consecutive failures open the breaker.
	// Zero: [DefaultFailures].
	Failures uint32

	// OpenTimeout is how long an open breaker refuses calls before it
	// turns half-open. Zero: [DefaultOpenTimeout].
	OpenTimeout time.Duration

	// Probes is how many calls a half-open breaker admits at once, and
	// how many of them must succeed in a row to close it again; a failed
	// probe reopens it. Zero: 1.
	Probes uint32

	// IsFailure decides whether the error a call reported to its done
	// function counts as a failure; when it returns false the call counts
	// as a success. It is never asked about nil (a success) nor about
	// errors wrapping context.Canceled: the caller's own cancellation is
	// neither a success nor a failure. Nil: every other error is a
	// failure. Use [HTTPStatus] to turn a response status into an error.
	IsFailure func(err error) bool

	// IdleTimeout is how long a key may go without calls (a call's start,
	// or a failure it reports) before it is evicted (together with its
	// counters), provided no call of it is in flight and its breaker is
	// not open, nor its token bucket still refilling (a key whose rate
	// takes longer than IdleTimeout to refill its burst stays until it
	// has). Zero: [DefaultIdleTimeout].
	IdleTimeout time.Duration
}

// Option configures the dependencies of a [Group]: logger, meter provider,
// clock and route table.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithLogger sets the logger that receives one audit record per breaker
// state change. Without it the group is silent.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// WithMeterProvider sets the meter provider of the group's metrics
// (default: otel.GetMeterProvider()). A nil provider keeps the default.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// WithClock sets the group's clock (default time.Now). Rate limits, open
// periods and idle eviction all read it, so tests can drive a group with a
// fake clock instead of sleeping. A nil function keeps the default.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(c *config) { c.now = now })
}

// WithRoutes takes per-sandbox budgets from the route table: the non-zero
// fields of a sandbox's routes.Sandbox.Budget replace the defaults
// ([Settings.Override] still wins over them). A change of the table is
// applied to existing keys at their next call.
func WithRoutes(t *routes.Table) Option {
	return optionFunc(func(c *config) { c.routes = t })
}

type config struct {
	Settings

	logger        *slog.Logger
	meterProvider metric.MeterProvider
	now           func() time.Time
	routes        *routes.Table
}

func newConfig(s Settings, opts []Option) config {
	c := config{Settings: s, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.Failures == 0 {
		c.Failures = DefaultFailures
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.Probes == 0 {
		c.Probes = 1
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	c.Budget = clean(c.Budget)
	if c.Baseline != nil {
		b := clean(*c.Baseline)
		c.Baseline = &b
	}
	return c
}

// clean turns the values Budget documents as "zero" into zero.
func clean(b Budget) Budget {
	if b.Rate < 0 || math.IsNaN(b.Rate) {
		b.Rate = 0
	}
	b.Burst = max(b.Burst, 0)
	b.MaxInFlight = max(b.MaxInFlight, 0)
	return b
}

// merge returns base with the non-zero fields of o.
func merge(base, o Budget) Budget {
	o = clean(o)
	if o.Rate != 0 {
		base.Rate = o.Rate
	}
	if o.Burst != 0 {
		base.Burst = o.Burst
	}
	if o.MaxInFlight != 0 {
		base.MaxInFlight = o.MaxInFlight
	}
	return base
}

// burst is the bucket size b enforces.
func (b Budget) burst() int {
	if b.Burst > 0 {
		return b.Burst
	}
	return max(1, int(math.Min(math.Ceil(b.Rate), math.MaxInt32)))
}

// limited reports whether b has a rate limit.
func (b Budget) limited() bool { return b.Rate > 0 && !math.IsInf(b.Rate, 1) }
