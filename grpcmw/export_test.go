package grpcmw

import "time"

// WithClock sets the clock that checks ticket expiry, for tests only: the
// public API has no clock option.
func WithClock(now func() time.Time) ServerOption { return withClock(now) }
