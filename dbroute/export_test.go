package dbroute

import "time"

// WithClock sets the router's clock (default time.Now): idle and
// least-recently-used decisions, and pool turns.
func WithClock(now func() time.Time) RouterOption {
	return routerOption(func(c *config) { c.now = now })
}
