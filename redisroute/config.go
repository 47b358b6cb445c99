package redisroute

import (
	"fmt"
	"log/slog"

	"github.com/sandboxkit/sandboxkit/routes"
)

// MarkerKey is the key that marks a database of the router's range as owned
// by one sandbox: its value is the sandbox ID. A database is free when it
// is empty; [Router.Destroy] and [Router.Reap] flush only databases whose
// marker names a sandbox they were asked to remove. Sandboxes cannot read,
// write or delete it (any command that names it is refused).
const MarkerKey = "sandboxkit:sandbox"

// RouterOption configures [New].
type RouterOption interface{ applyRouter(*config) }

// GuardOption configures [Guard].
type GuardOption interface{ applyGuard(*config) }

// Option configures both [New] and [Guard].
type Option interface {
	RouterOption
	GuardOption
}

type config struct {
	logger *slog.Logger
	table  *routes.Table
	err    error
}

type option func(*config)

func (f option) applyRouter(c *config) { f(c) }
func (f option) applyGuard(c *config)  { f(c) }

type routerOption func(*config)

func (f routerOption) applyRouter(c *config) { f(c) }

// WithLogger writes one audit record (package
// github.com/sandboxkit/sandboxkit/audit, protocol redis) for each sandbox
// database opened (routed), and for each refused command (rejected). A nil
// logger is an ErrConfig error; without the option the package is silent.
func WithLogger(l *slog.Logger) Option {
	return option(func(c *config) {
		if l == nil {
			c.fail(fmt.Errorf("%w: redisroute: WithLogger: nil logger", ErrConfig))
		}
		c.logger = l
	})
}

// WithRoutes makes the router refuse sandboxes that the route table does
// not hold (ErrNoSandboxDatabase), and lets [Router.Reap] flush the
// databases of sandboxes the table no longer holds. While the table has
// never loaded, sandbox commands fail with [ErrNotSynced] and Reap
// flushes nothing. A nil table is an ErrConfig error.
func WithRoutes(t *routes.Table) RouterOption {
	return routerOption(func(c *config) {
		if t == nil {
			c.fail(fmt.Errorf("%w: redisroute: WithRoutes: nil table", ErrConfig))
		}
		c.table = t
	})
}

func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

func newRouterConfig(opts []RouterOption) config { return newConfig(opts, RouterOption.applyRouter) }
func newGuardConfig(opts []GuardOption) config   { return newConfig(opts, GuardOption.applyGuard) }

// newConfig applies the options of one role, skipping nil ones.
func newConfig[O comparable](opts []O, apply func(O, *config)) config {
	var c config
	var none O
	for _, o := range opts {
		if o != none {
			apply(o, &c)
		}
	}
	return c
}
