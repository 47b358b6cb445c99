package dbroute

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxkit/sandboxkit/routes"
)

// Defaults.
const (
	// DefaultMaxPools is how many sandbox pools a [Router] keeps open.
	DefaultMaxPools = 32
	// DefaultIdleTimeout is how long an unused sandbox pool stays open.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultOpenTimeout bounds provisioning a test database and opening
	// its pool.
	DefaultOpenTimeout = time.Minute
	// DefaultPoolTurn is how long a sandbox pool keeps its slot, at
	// least, when more sandboxes are busy than [WithMaxPools] allows.
	DefaultPoolTurn = 250 * time.Millisecond
	// DefaultReapGrace is how old a test database must be before
	// [Router.Reap] may drop it.
	DefaultReapGrace = 10 * time.Minute
	// DefaultPrefix starts the name of every database and schema the
	// provisioning providers create.
	DefaultPrefix = "sbx_"
	// MaxPrefixLen is the longest prefix [WithPrefix] accepts.
	MaxPrefixLen = 24
)

// Option configures a [Router] or a provider ([NewDatabasePerSandbox],
// [NewSchemaPerSandbox]). Each constructor reads the options that concern
// it and ignores the others, so one option list can serve both.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	// Router.
	logger        *slog.Logger
	maxPools      int
	idleTimeout   time.Duration
	openTimeout   time.Duration
	reapGrace     time.Duration
	table         *routes.Table
	poolConfig    func(id string, cfg *pgxpool.Config)
	poolTurn      time.Duration
	meterProvider metric.MeterProvider

	// Both.
	now func() time.Time

	// Providers.
	prefix string
	step   func(step string) // tests: called after each provisioning step
}

func newConfig(opts []Option) config {
	c := config{
		maxPools:    DefaultMaxPools,
		idleTimeout: DefaultIdleTimeout,
		openTimeout: DefaultOpenTimeout,
		reapGrace:   DefaultReapGrace,
		poolTurn:    DefaultPoolTurn,
		now:         time.Now,
		prefix:      DefaultPrefix,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

func (c *config) validateRouter() error {
	switch {
	case c.maxPools < 1:
		return fmt.Errorf("dbroute: WithMaxPools(%d): want at least 1", c.maxPools)
	case c.idleTimeout < 0:
		return fmt.Errorf("dbroute: WithIdleTimeout(%v): must not be negative", c.idleTimeout)
	case c.openTimeout <= 0:
		return fmt.Errorf("dbroute: WithOpenTimeout(%v): must be positive", c.openTimeout)
	case c.poolTurn < 0:
		return fmt.Errorf("dbroute: WithPoolTurn(%v): must not be negative", c.poolTurn)
	case c.reapGrace < 0:
		return fmt.Errorf("dbroute: WithReapGrace(%v): must not be negative", c.reapGrace)
	case c.now == nil:
		return fmt.Errorf("dbroute: WithClock(nil)")
	}
	return nil
}

func (c *config) validateProvider() error {
	if c.now == nil {
		return fmt.Errorf("dbroute: WithClock(nil)")
	}
	return validatePrefix(c.prefix)
}

// WithLogger sets the logger that receives the router's audit records (one
// per sandbox pool opened, one per sandbox request refused). Without it the
// router is silent.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// WithMaxPools caps how many sandbox pools a [Router] keeps open (default
// [DefaultMaxPools]). Opening one more closes the least recently used pool
// that is not in use (no call of the router running on it, no connection
// checked out) and has had its turn ([WithPoolTurn]). When every pool is
// in use, the request waits for one until its context ends, then fails
// with an error wrapping [ErrPoolLimit]; a reopened pool reuses what the
// provider returned before, without provisioning again. Each wait is one
// audit record (throttled) and one count of [MetricPoolLimit].
func WithMaxPools(n int) Option {
	return optionFunc(func(c *config) { c.maxPools = n })
}

// WithPoolTurn sets how long a sandbox pool keeps its slot, at least,
// before a waiting sandbox may take it over when more sandboxes are busy
// than [WithMaxPools] allows (default [DefaultPoolTurn]). Each takeover
// costs a connection to the new test database, so a short turn shares the
// slots more evenly and a long one wastes less on dialling.
func WithPoolTurn(d time.Duration) Option {
	return optionFunc(func(c *config) { c.poolTurn = d })
}

// WithMeterProvider sets the meter provider of the router's metrics
// (default: the global one).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// WithIdleTimeout sets how long a sandbox pool may stay unused before the
// [Router] closes it (default [DefaultIdleTimeout]; 0 keeps idle pools
// open until they are evicted or the router is closed).
func WithIdleTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.idleTimeout = d })
}

// WithOpenTimeout bounds provisioning a test database and opening its pool
// (default [DefaultOpenTimeout]). Provisioning is shared by every request
// waiting for the same sandbox, so it does not stop when one of them gives
// up; each waiter still returns when its own context is done.
func WithOpenTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.openTimeout = d })
}

// WithReapGrace sets how old a test database or schema must be before
// [Router.Reap] drops it (default [DefaultReapGrace]). It covers route
// tables that lag behind one another: a process that has not yet seen a new
// sandbox must not drop the database another process just made for it.
func WithReapGrace(d time.Duration) Option {
	return optionFunc(func(c *config) { c.reapGrace = d })
}

// WithClock sets the clock (default time.Now), for tests. The router uses
// it for idle and least-recently-used decisions and for the reap grace;
// the providers use it to date the databases and schemas they create.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(c *config) { c.now = now })
}

// WithTable makes the [Router] resolve only sandboxes that exist in t (not
// expired): any other sandbox gets [ErrNoTestDatabase] and no test
// database is created for it. [Router.Reap] drops the test databases of
// sandboxes that are not in t.
func WithTable(t *routes.Table) Option {
	return optionFunc(func(c *config) { c.table = t })
}

// WithPoolConfig lets f adjust the configuration of each sandbox pool
// before the [Router] opens it (pool sizes, tracers, hooks). f must not
// change which database the configuration points at.
func WithPoolConfig(f func(id string, cfg *pgxpool.Config)) Option {
	return optionFunc(func(c *config) { c.poolConfig = f })
}

// WithPrefix sets the prefix of every database and schema a provisioning
// provider creates (default [DefaultPrefix]): lower-case letters, digits
// and '_', starting with a letter, at most [MaxPrefixLen] bytes. Providers
// only ever drop objects whose names start with it and that carry their
// marker comment.
func WithPrefix(p string) Option {
	return optionFunc(func(c *config) { c.prefix = p })
}
