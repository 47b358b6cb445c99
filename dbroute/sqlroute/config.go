package sqlroute

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Defaults.
const (
	// DefaultMaxPools is how many sandbox *sql.DB a [Router] keeps open.
	DefaultMaxPools = dbroute.DefaultMaxPools
	// DefaultIdleTimeout is how long an unused sandbox *sql.DB stays open.
	DefaultIdleTimeout = dbroute.DefaultIdleTimeout
	// DefaultOpenTimeout bounds provisioning a test database and opening
	// its *sql.DB.
	DefaultOpenTimeout = dbroute.DefaultOpenTimeout
	// DefaultMaxOpenConns is the connection limit of each sandbox *sql.DB
	// (change it with [WithDBConfig]).
	DefaultMaxOpenConns = 4
)

// poolWait is how often a request waiting for a sandbox slot looks again
// (database/sql says nothing when a connection goes back to its pool).
const poolWait = 5 * time.Millisecond

// RouterOption configures a [Router] ([New]). A [GuardOption] only does
// not compile where a RouterOption is wanted. A nil option is skipped.
type RouterOption interface {
	applyRouter(*config)
}

// GuardOption configures [Guard]. A nil option is skipped.
type GuardOption interface {
	applyGuard(*config)
}

// Option is an option of every role: a [RouterOption] and a
// [GuardOption].
type Option interface {
	RouterOption
	GuardOption
}

type routerOption func(*config)

func (f routerOption) applyRouter(c *config) { f(c) }

type option func(*config)

func (f option) applyRouter(c *config) { f(c) }
func (f option) applyGuard(c *config)  { f(c) }

type config struct {
	logger      *slog.Logger
	maxPools    int
	idleTimeout time.Duration
	openTimeout time.Duration
	table       *routes.Table
	nilTable    bool // WithRoutes(nil) was given
	dbConfig    func(id string, db *sql.DB)
	now         func() time.Time // tests: the clock of idle decisions
}

func newRouterConfig(opts []RouterOption) (config, error) {
	c := config{
		maxPools:    DefaultMaxPools,
		idleTimeout: DefaultIdleTimeout,
		openTimeout: DefaultOpenTimeout,
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
	case c.now == nil:
		err = errors.New("nil clock")
	case c.nilTable:
		err = errors.New("WithRoutes: nil route table")
	}
	if err != nil {
		return c, fmt.Errorf("sqlroute: %w: %w", dbroute.ErrConfig, err)
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

// WithLogger sets the logger of the audit records of a [Router] (one per
// sandbox *sql.DB opened, one per sandbox request refused) or of [Guard]
// (one per refusal). Without it they are silent.
func WithLogger(l *slog.Logger) Option {
	return option(func(c *config) { c.logger = l })
}

// WithMaxPools caps how many sandbox *sql.DB a [Router] keeps open
// (default [DefaultMaxPools]). Opening one more closes the least recently
// used one that is not in use (no call of the router running on it, no
// connection checked out: no open Rows, Tx or Conn). When every one is in
// use, the request waits until one is free or its context ends, then fails
// with an error wrapping [dbroute.ErrPoolLimit] and [dbroute.ErrUnavailable].
func WithMaxPools(n int) RouterOption {
	return routerOption(func(c *config) { c.maxPools = n })
}

// WithIdleTimeout sets how long a sandbox *sql.DB may stay unused before
// the [Router] closes it (default [DefaultIdleTimeout]; 0 keeps idle ones
// open until evicted or the router is closed). Idle ones are closed when
// the router opens another one, and their idle connections after the
// timeout (sql.DB.SetConnMaxIdleTime).
func WithIdleTimeout(d time.Duration) RouterOption {
	return routerOption(func(c *config) { c.idleTimeout = d })
}

// WithOpenTimeout bounds provisioning a test database and opening its
// *sql.DB (default [DefaultOpenTimeout]), even for a provider or driver
// that ignores its context: the open is then given up, the requests
// waiting for it get [dbroute.ErrUnavailable], the next request opens
// afresh, and a *sql.DB the provider's late answer opens is closed.
func WithOpenTimeout(d time.Duration) RouterOption {
	return routerOption(func(c *config) { c.openTimeout = d })
}

// WithRoutes makes the [Router] resolve only sandboxes that exist in t
// (not expired): any other sandbox gets [dbroute.ErrNoTestDatabase] and no
// test database is created for it. Before t has loaded (its SyncedAt is
// the zero time) a sandbox it does not hold gets [dbroute.ErrUnavailable]
// instead, audited with the reason audit.ReasonNotSynced: the table
// cannot yet say whether the sandbox exists. A nil t is an error from [New]: it
// would resolve every sandbox, not none.
func WithRoutes(t *routes.Table) RouterOption {
	return routerOption(func(c *config) {
		if t == nil {
			c.nilTable = true
			return
		}
		c.table = t
	})
}

// WithDBConfig lets f adjust each sandbox *sql.DB after the [Router] opens
// it (SetMaxOpenConns, SetMaxIdleConns, SetConnMaxLifetime...). The
// router sets SetMaxOpenConns([DefaultMaxOpenConns]) and
// SetConnMaxIdleTime(idle timeout) before f runs. Statements on db need
// the sandbox id in their context ([ErrForeignContext]).
func WithDBConfig(f func(id string, db *sql.DB)) RouterOption {
	return routerOption(func(c *config) { c.dbConfig = f })
}
