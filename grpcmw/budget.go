package grpcmw

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/egress"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// budget applies the per-sandbox budgets of a [breaker.Group]
// ([WithBreaker]) to calls. The asking and the throttled record are the
// shared kernel's (internal/egress); the gRPC status of a refusal and the
// outcomes of calls are here. Its zero value budgets nothing. It is
// immutable.
type budget struct {
	egress.Budget
}

func newBudget(cfg *config) budget {
	return budget{egress.New(cfg.breaker, cfg.logger, audit.GRPC)}
}

// allow asks the budget of s about a call to target (a method, or the
// router's service); a refusal is audited (with the client's address on
// the server side) and returned as a status error that wraps the group's
// error.
func (b *budget) allow(ctx context.Context, s propagation.Sandbox, target string, server bool) (func(error), error) {
	var from func() string
	if server {
		from = func() string { return peerString(ctx) }
	}
	done, err := b.Allow(ctx, s, target, from)
	if err == nil {
		return done, nil
	}
	code := codes.Unavailable
	if errors.Is(err, breaker.ErrThrottled) {
		code = codes.ResourceExhausted
	}
	d, _ := breaker.RetryAfter(err)
	return nil, &statusError{code: code, err: fmt.Errorf("grpcmw: call to %s refused: %w", target, err), retry: d}
}

// peerString returns the address of ctx's peer, "" when unknown.
func peerString(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// errPanicked is the outcome of a handler that panicked.
var errPanicked = errors.New("grpcmw: handler panicked")

// outcome is what a call's budget is told about the error it ended with:
// nil for a success and for an application's answer, context.Canceled
// (which counts for nothing) for a cancelled call, the error itself for a
// failure.
func outcome(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return context.Canceled
	}
	switch status.Code(err) {
	case codes.Canceled:
		return context.Canceled
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded:
		return err
	}
	return nil
}

// streamEnd reports the end of a budgeted client stream to its done
// function exactly once. gRPC calls the OnFinish callback [streamEnd.finish]
// when the stream ends, or synchronously inside NewStream when opening it
// fails, or not at all when an interceptor cut the call short. So the end
// is held until NewStream has returned ([streamEnd.opened]); an attempt
// that is retried elsewhere (the router's fallback) is dropped
// ([streamEnd.retry]).
type streamEnd struct {
	done func(error)

	mu      sync.Mutex
	opening bool  // NewStream has not returned yet
	fired   bool  // done was called
	ended   bool  // the attempt ended while opening
	err     error // and how
}

func newStreamEnd(done func(error)) *streamEnd { return &streamEnd{done: done, opening: true} }

// option is the call option that reports the stream's end.
func (e *streamEnd) option() grpc.CallOption { return grpc.OnFinish(e.finish) }

func (e *streamEnd) finish(err error) {
	e.mu.Lock()
	if e.fired {
		e.mu.Unlock()
		return
	}
	if e.opening {
		e.ended, e.err = true, err
		e.mu.Unlock()
		return
	}
	e.fired = true
	e.mu.Unlock()
	e.done(outcome(err))
}

// retry forgets the end of a failed attempt that is to be followed by
// another.
func (e *streamEnd) retry() {
	e.mu.Lock()
	e.ended, e.err = false, nil
	e.mu.Unlock()
}

// opened records what NewStream returned: an error ends the stream, a
// stream that ended meanwhile is reported now, and otherwise its end is
// reported when gRPC calls finish.
func (e *streamEnd) opened(err error) {
	e.mu.Lock()
	e.opening = false
	if e.fired || (err == nil && !e.ended) {
		e.mu.Unlock()
		return
	}
	if e.ended {
		err = e.err
	}
	e.fired = true
	e.mu.Unlock()
	e.done(outcome(err))
}
