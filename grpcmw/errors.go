package grpcmw

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandboxkit/sandboxkit/routes"
)

// Errors the interceptors and the [Router] return. They reach the caller
// wrapped (test with errors.Is) inside an error that also carries the gRPC
// status code (status.Code and status.FromError read it).
var (
	// ErrConfig: a constructor ([NewServerInterceptors],
	// [NewClientInterceptors], [NewRouter]) was given options or arguments
	// that cannot work together: a nil or missing required value, options
	// that conflict, an invalid trusted prefix, an option the constructor
	// does not use. The message names the option.
	ErrConfig = errors.New("grpcmw: invalid configuration")

	// ErrRejected: a call carried sandbox markers that cannot be honoured
	// (malformed, conflicting, over the baggage limits, a bad ticket) from
	// a source allowed to set a sandbox, or an invalid ticket from any
	// source. Code InvalidArgument; the handler is not called. Markers from
	// an untrusted source are stripped, not rejected, also when an earlier
	// layer (a [propagation.Propagator] in otelgrpc's propagators) already
	// put their sandbox into the context.
	ErrRejected = errors.New("grpcmw: sandbox markers rejected")

	// ErrSandboxUnavailable: the upstream of the sandbox that overrides the
	// service cannot be reached, and the router does not fall back (see
	// [WithFallbackOnUnavailable]). Code Unavailable.
	// It is [routes.ErrSandboxUnavailable], shared by every adapter.
	ErrSandboxUnavailable = routes.ErrSandboxUnavailable

	// ErrClosed: the [Router] was closed. Code Canceled, as gRPC's own
	// closed connection.
	ErrClosed = errors.New("grpcmw: router closed")
)

// configError is an [ErrConfig] error whose message names the option:
// "grpcmw: WithTrustedNetworks: invalid prefix ...". It also wraps the
// error of a library that refused the option (%w in the format).
type configError struct{ err error }

func configErrorf(opt, format string, args ...any) error {
	return &configError{err: fmt.Errorf("grpcmw: "+opt+": "+format, args...)}
}

func (e *configError) Error() string { return e.err.Error() }

func (e *configError) Unwrap() []error {
	if cause := errors.Unwrap(e.err); cause != nil {
		return []error{ErrConfig, cause}
	}
	return []error{ErrConfig}
}

// statusError is an error with a gRPC status code that still unwraps to
// the sentinel and the cause behind it.
type statusError struct {
	code  codes.Code
	err   error
	retry time.Duration // > 0: sent as a RetryInfo detail
}

func (e *statusError) Error() string { return e.err.Error() }

func (e *statusError) Unwrap() error { return e.err }

// GRPCStatus lets status.FromError, status.Code and the gRPC server read
// the code (and the retry hint of a refusal).
func (e *statusError) GRPCStatus() *status.Status {
	st := status.New(e.code, e.err.Error())
	if e.retry > 0 {
		if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.retry)}); err == nil {
			st = d
		}
	}
	return st
}
