// Package clocktest is the injected clock of the library's tests: it moves
// only when told to, so rate limits, expiries and open periods are exact.
package clocktest

import (
	"sync/atomic"
	"time"
)

// Start is where every Clock starts.
var Start = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// Clock is a fake clock, safe for concurrent use. Pass its Now method to a
// WithClock option.
type Clock struct{ ns atomic.Int64 }

// New returns a Clock at [Start].
func New() *Clock {
	c := &Clock{}
	c.ns.Store(Start.UnixNano())
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
