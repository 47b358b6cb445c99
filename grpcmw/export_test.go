package grpcmw

import "time"

// WithClock sets the clock that checks ticket expiry, for tests only: the
// public API has no clock option.
func WithClock(now func() time.Time) ServerOption { return withClock(now) }

// WithLookUps makes the server interceptors look metadata keys up one by
// one, as without gRPC's context key for the incoming metadata.
func WithLookUps() ServerOption { return withLookUps() }

// IncomingKeyFound reports whether the server interceptors read gRPC's
// incoming metadata in place (see incomingKey).
func IncomingKeyFound() bool { return incomingKey() != nil }

// Target exposes the router's reading of a route's upstream to the fuzz
// test.
var Target = target
