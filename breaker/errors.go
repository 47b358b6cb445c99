package breaker

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Refusals. The errors a [Group] returns wrap one of them in an [*Error]
// that carries the retry-after hint; branch with [errors.Is] and read the
// hint with [RetryAfter].
var (
	// ErrOpen reports that the key's circuit breaker is open, or half-open
	// with all its probes taken.
	ErrOpen = errors.New("breaker: circuit breaker is open")
	// ErrThrottled reports that the key's rate limit is exhausted.
	ErrThrottled = errors.New("breaker: rate limit exceeded")
	// ErrTooManyInFlight reports that the key already has as many calls in
	// flight as its budget allows.
	ErrTooManyInFlight = errors.New("breaker: too many calls in flight")
)

// ErrServerStatus is wrapped by the error [HTTPStatus] returns for a 5xx
// status.
var ErrServerStatus = errors.New("breaker: server error status")

// Error is a refusal: which budget refused which key, and when to try
// again.
type Error struct {
	// Err is [ErrOpen], [ErrThrottled] or [ErrTooManyInFlight].
	Err error
	// ID is the sandbox ID of the refused call, "" for baseline traffic.
	ID string
	// RetryAfter is when the refusal is expected to end: exact for
	// [ErrOpen] while the breaker is open and for [ErrThrottled] (the
	// time until the next token), nominal ([BusyRetryAfter]) otherwise.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	who := "baseline traffic"
	if e.ID != "" {
		who = "sandbox " + strconv.Quote(e.ID)
	}
	// Rounded up to the millisecond: the hint is no more precise than that,
	// the message lands in audit records, and it must not promise too early.
	return fmt.Sprintf("%v for %s (retry after %v)", e.Err, who, (e.RetryAfter + time.Millisecond - 1).Truncate(time.Millisecond))
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// RetryAfter returns the retry-after hint carried by err, and false when
// err is not a refusal of this package. HTTP middleware sends it rounded up
// to whole seconds in a Retry-After header.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter, true
	}
	return 0, false
}

// HTTPStatus returns nil for a status below 500 (the server answered) and
// an error wrapping [ErrServerStatus] for a 5xx status, so that a
// transport can report a response to done as done(HTTPStatus(code)).
func HTTPStatus(code int) error {
	if code < 500 || code > 599 {
		return nil
	}
	return fmt.Errorf("%w %d", ErrServerStatus, code)
}
