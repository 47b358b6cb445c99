package dbroute

import (
	"errors"
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
)

// RouterOption configures a [Router] ([New]). An option of another role
// (a [GuardOption] only, or an option of dbroute/provision) does not
// compile where a RouterOption is wanted. A nil option is skipped.
type RouterOption interface {
	applyRouter(*config)
}

// GuardOption configures [Guard] and [GuardConn]. A nil option is
// skipped.
type GuardOption interface {
	applyGuard(*config)
}

// Option is an option of every role: a [RouterOption] and a
// [GuardOption].
type Option interface {
	RouterOption
	GuardOption
}

// routerOption is an option of the router only.
type routerOption func(*config)

func (f routerOption) applyRouter(c *config) { f(c) }

// option is an option of every role.
type option func(*config)

func (f option) applyRouter(c *config) { f(c) }
func (f option) applyGuard(c *config)  { f(c) }

type config struct {
	logger        *slog.Logger
	maxPools      int
	idleTimeout   time.Duration
	openTimeout   time.Duration
	table         *routes.Table
	nilTable      bool // WithRoutes(nil)
	poolConfig    func(id string, cfg *pgxpool.Config)
	poolTurn      time.Duration
	meterProvider metric.MeterProvider
	now           func() time.Time // tests: the clock of idle and least-recently-used decisions
}

// newRouterConfig applies opts over the defaults and checks the result:
// the errors wrap [ErrConfig].
func newRouterConfig(opts []RouterOption) (config, error) {
	c := config{
		maxPools:    DefaultMaxPools,
		idleTimeout: DefaultIdleTimeout,
		openTimeout: DefaultOpenTimeout,
		poolTurn:    DefaultPoolTurn,
		now:         time.Now,
	}
	for _, o := range opts {
		if o != nil {
			o.applyRouter(&c)
		}
	}
	var err error
	switch {
	case c.maxPools < 1:
		err = fmt.Errorf("WithMaxPools(%d): want at least 1", c.maxPools)
	case c.idleTimeout < 0:
		err = fmt.Errorf("WithIdleTimeout(%v): must not be negative", c.idleTimeout)
	case c.openTimeout <= 0:
		err = fmt.Errorf("WithOpenTimeout(%v): must be positive", c.openTimeout)
	case c.poolTurn < 0:
		err = fmt.Errorf("WithPoolTurn(%v): must not be negative", c.poolTurn)
	case c.now == nil:
		err = errors.New("nil clock")
	case c.nilTable:
		err = errors.New("WithRoutes: nil route table")
	}
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return c, nil
}

func newGuardConfig(opts []GuardOption) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o.applyGuard(&c)
		}
	}
	return c
}

// WithLogger sets the logger that receives the audit records of a
// [Router] (one per sandbox pool opened, one per wait for a pool slot, one
// per sandbox request refused) or of [Guard] (one per refusal). Without it
// they are silent.
func WithLogger(l *slog.Logger) Option {
	return option(func(c *config) { c.logger = l })
}

// WithMaxPools caps how many sandbox pools a [Router] keeps open (default
// [DefaultMaxPools]). Opening one more closes the least recently used pool
// that is not in use (no call of the router running on it, no connection
// checked out) and has had its turn ([WithPoolTurn]). When every pool is
// in use, the request waits for one until its context ends, then fails
// with an error wrapping [ErrPoolLimit]; waiting sandboxes get the slots in
// the order they started to wait, one swap at a time. Meanwhile the pool
// whose turn ended first drains: it takes no new call (its sandbox's new
// requests wait for a slot behind the others) and is closed once the calls
// running on it end, so that sandboxes that never stop sending share the
// slots too. A pool that has not drained within a turn (a transaction, an
// open Rows or an acquired connection held that long) takes calls again,
// for a new turn, so a request that holds a connection and calls the
// router again for its sandbox waits one turn at most. A pool in use is
// never closed. A reopened pool
// reuses what the provider returned before, without provisioning again.
// Each wait is one audit record (throttled) and one count of
// [MetricPoolLimit].
func WithMaxPools(n int) RouterOption {
	return routerOption(func(c *config) { c.maxPools = n })
}

// WithPoolTurn sets how long a sandbox pool keeps its slot, at least,
// before a waiting sandbox may take it over when more sandboxes are busy
// than [WithMaxPools] allows (default [DefaultPoolTurn]). The turn starts
// when the pool's first call ends, and is stretched, up to four turns, to
// four times what opening the pool cost (dialling, the server check, the
// first statement), so that swapping takes at most a fifth of a slot's
// time. Each takeover costs a connection to the new test database, so a
// short turn shares the slots more evenly and a long one wastes less on
// dialling. A pool whose test database refuses connections, left with no
// connection by a failed call, has no turn: a waiting sandbox may take its
// slot at once.
func WithPoolTurn(d time.Duration) RouterOption {
	return routerOption(func(c *config) { c.poolTurn = d })
}

// WithMeterProvider sets the meter provider of the router's metrics
// (default: the global one).
func WithMeterProvider(mp metric.MeterProvider) RouterOption {
	return routerOption(func(c *config) { c.meterProvider = mp })
}

// WithIdleTimeout sets how long a sandbox pool may stay unused before the
// [Router] closes it (default [DefaultIdleTimeout]; 0 keeps idle pools
// open until they are evicted or the router is closed).
func WithIdleTimeout(d time.Duration) RouterOption {
	return routerOption(func(c *config) { c.idleTimeout = d })
}

// WithOpenTimeout bounds provisioning a test database and opening its pool
// (default [DefaultOpenTimeout]). Provisioning is shared by every request
// waiting for the same sandbox, so it does not stop when one of them gives
// up; each waiter still returns when its own context is done.
func WithOpenTimeout(d time.Duration) RouterOption {
	return routerOption(func(c *config) { c.openTimeout = d })
}

// WithRoutes makes the [Router] resolve only sandboxes that exist in t
// (not expired): any other sandbox gets [ErrNoTestDatabase] and no test
// database is created for it. Before t has ever loaded, a sandbox request
// gets [ErrUnavailable] (audited as not synced): t cannot yet say whether
// the sandbox exists. (Reaping the test databases of sandboxes
// that left t is the provisioner's: see dbroute/provision.) A nil t is an
// error from [New]: it would resolve every sandbox, not none.
func WithRoutes(t *routes.Table) RouterOption {
	return routerOption(func(c *config) {
		if t == nil {
			c.nilTable = true
			return
		}
		c.table = t
	})
}

// WithPoolConfig lets f adjust the configuration of each sandbox pool
// before the [Router] opens it (pool sizes, tracers, hooks). f must not
// change which database the configuration points at.
func WithPoolConfig(f func(id string, cfg *pgxpool.Config)) RouterOption {
	return routerOption(func(c *config) { c.poolConfig = f })
}
