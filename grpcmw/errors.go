package grpcmw

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors the interceptors and the [Router] return. They reach the caller
// wrapped (test with errors.Is) inside an error that also carries the gRPC
// status code (status.Code and status.FromError read it).
var (
	// ErrRejected: a call carried sandbox markers that cannot be honoured
	// (malformed, conflicting, over the baggage limits, a bad ticket, or
	// untrusted markers an earlier layer had already put in the context).
	// Code InvalidArgument; the handler is not called.
	ErrRejected = errors.New("grpcmw: sandbox markers rejected")

	// ErrSandboxUnavailable: the upstream of the sandbox that overrides the
	// service cannot be reached, and the router does not fall back (see
	// [WithFallbackOnUnavailable]). Code Unavailable.
	ErrSandboxUnavailable = errors.New("grpcmw: sandbox upstream unavailable")

	// ErrClosed: the [Router] was closed. Code Canceled, as gRPC's own
	// closed connection.
	ErrClosed = errors.New("grpcmw: router closed")
)

// statusError is an error with a gRPC status code that still unwraps to
// the sentinel and the cause behind it.
type statusError struct {
	code codes.Code
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }

func (e *statusError) Unwrap() error { return e.err }

// GRPCStatus lets status.FromError, status.Code and the gRPC server read
// the code.
func (e *statusError) GRPCStatus() *status.Status { return status.New(e.code, e.err.Error()) }
