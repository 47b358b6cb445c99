package httpmw

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/felixge/httpsnoop"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/egress"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// budget applies the per-sandbox budgets of a [breaker.Group] ([WithBreaker])
// to requests: on the way in for handlers and proxies, on the way out for
// transports. The asking and the throttled record are the shared kernel's
// (internal/egress); the HTTP answers and outcomes are here. Its zero value
// budgets nothing. It is immutable.
type budget struct {
	egress.Budget
}

func newBudget(cfg *config) budget {
	return budget{egress.New(cfg.breaker, cfg.logger, audit.HTTP)}
}

// errPanicked is the outcome of a handler that panicked.
var errPanicked = errors.New("httpmw: handler panicked")

// serve runs next for r under the budget of r's sandbox, or answers 503 or
// 429 itself. target names the service in audit records.
func (b *budget) serve(w http.ResponseWriter, r *http.Request, next http.Handler, target string) {
	ctx := r.Context()
	s, ok := propagation.FromContext(ctx)
	if !b.Covers(ok) {
		next.ServeHTTP(w, r)
		return
	}
	done, err := b.Allow(ctx, s, target, func() string { return r.RemoteAddr })
	if err != nil {
		secs := retryAfter(err)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		http.Error(w, refusalBody(err, secs), refusalStatus(err))
		return
	}
	result := errPanicked
	defer func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			// The client went away: whatever the handler answered (a
			// proxy's 502, say) or however it stopped
			// (http.ErrAbortHandler), it says nothing about the service.
			result = context.Canceled
		}
		done(result)
	}()
	st := &statusHook{}
	next.ServeHTTP(httpsnoop.Wrap(w, httpsnoop.Hooks{WriteHeader: st.hook}), r)
	result = breaker.HTTPStatus(st.code)
}

// statusHook notes the final status a handler writes. httpsnoop keeps the
// optional interfaces of the writer it wraps (Flusher, Hijacker,
// ReaderFrom, Unwrap for http.ResponseController).
type statusHook struct {
	code int
	next httpsnoop.WriteHeaderFunc
}

func (h *statusHook) hook(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
	h.next = next
	return h.writeHeader
}

func (h *statusHook) writeHeader(code int) {
	if h.code == 0 && code >= 200 {
		h.code = code
	}
	h.next(code)
}

// admit asks the budget about an outgoing request; on refusal it closes
// the request's body, as a RoundTripper must, and returns the error to
// give the caller. target is the service or host the request goes to.
func (b *budget) admit(r *http.Request, s propagation.Sandbox, target string) (func(error), error) {
	done, err := b.Allow(r.Context(), s, target, nil)
	if err != nil {
		closeBody(r)
		return nil, fmt.Errorf("httpmw: request to %s refused: %w", target, err)
	}
	return done, nil
}

// outcome is what a request's budget is told: the round trip's error (the
// caller's own cancellation as context.Canceled, which counts for nothing)
// or, for a response, [breaker.HTTPStatus] of its status.
func outcome(ctx context.Context, code int, err error) error {
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return context.Canceled
		}
		return err
	}
	return breaker.HTTPStatus(code)
}

// refusalStatus is the status a refused request is answered with.
func refusalStatus(err error) int {
	if errors.Is(err, breaker.ErrThrottled) {
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// retryAfter is the Retry-After value of a refusal: its hint rounded up to
// whole seconds, at least 1.
func retryAfter(err error) int64 {
	d, _ := breaker.RetryAfter(err)
	return max(1, int64((d+time.Second-1)/time.Second))
}

// refusalBody is the text of a refused request's answer: the refusal with
// the hint of the Retry-After header, secs, so that header and body say
// the same (the error itself carries the exact hint, for the audit log).
func refusalBody(err error, secs int64) string {
	var be *breaker.Error
	if !errors.As(err, &be) {
		return err.Error()
	}
	shown := *be
	shown.RetryAfter = time.Duration(secs) * time.Second
	return shown.Error()
}
