package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Handler processes one message that a reader owns. ctx carries the
// message's sandbox, if it has one. A nil error means the message is
// processed and may be committed. msg.Headers shares its elements with
// the message Run retries, dead-letters or keeps (and decides again when
// Run is called again): a handler changes a copy, not them in place.
type Handler func(ctx context.Context, msg kafka.Message) error

// ErrStopped reports that [Reader.Run] stopped on a production message
// whose handler kept failing, under [StopRun]. The message is not
// committed: the group's next consumer receives it again.
var ErrStopped = errors.New("kafkamw: stopped on a failing production message")

// ErrHandlerPanic reports that a [Handler] panicked on a sandbox message.
// [Reader.Run] recovers such a panic and gives up on the message at once
// (dead-letters it and commits past it): a bug that only test traffic
// reaches must not crash the consumer, which would restart on the same
// message and crash again, holding production behind it.
var ErrHandlerPanic = errors.New("kafkamw: handler panicked on a sandbox message")

// FailurePolicy is what [Reader.Run] does with a production (untagged)
// message whose handler keeps failing.
type FailurePolicy uint8

const (
	// RetryForever retries the message, with backoff up to the maximum,
	// until the handler succeeds or Run's context is done: the partition
	// waits for it, nothing is dropped. The default.
	RetryForever FailurePolicy = iota
	// DeadLetterAndContinue writes the message to the dead-letter writer
	// ([WithDeadLetter], required) after the retries ([WithRetries]) and
	// commits past it.
	DeadLetterAndContinue
	// StopRun makes Run return an error wrapping [ErrStopped] after the
	// retries, without committing the message.
	StopRun
)

// failFastAfter is how many messages of one sandbox in a row [Reader.Run]
// gives up on before it stops retrying that sandbox's messages: each is
// then tried once, until one succeeds. A sandbox whose consumer is broken
// costs production one handler call per message, not its retries and
// backoff.
const failFastAfter = 3

// Defaults of [Reader.Run].
const (
	DefaultRetries    = 5
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// RunOption configures [Reader.Run].
type RunOption interface{ applyRun(*runConfig) }

type runOptionFunc func(*runConfig)

func (f runOptionFunc) applyRun(c *runConfig) { f(c) }

type runConfig struct {
	attempts      int
	backoff, max  time.Duration
	production    FailurePolicy
	sandboxErrors []error
	onError       func(error)
}

// WithRetries sets how many times Run calls the handler for one message
// before it gives up on it (default [DefaultRetries]; at least 1). A
// sandbox message is then dead-lettered and committed past; a production
// message is handled by the [FailurePolicy].
func WithRetries(attempts int) RunOption {
	return runOptionFunc(func(c *runConfig) { c.attempts = attempts })
}

// WithBackoff sets the wait after a failed handler call, which doubles
// after each failure of the same message up to max (defaults
// [DefaultBackoff], [DefaultMaxBackoff]). Failed fetches back off alike.
func WithBackoff(first, max time.Duration) RunOption {
	return runOptionFunc(func(c *runConfig) { c.backoff, c.max = first, max })
}

// OnProductionFailure sets what Run does with a production message whose
// handler keeps failing (default [RetryForever]).
func OnProductionFailure(p FailurePolicy) RunOption {
	return runOptionFunc(func(c *runConfig) { c.production = p })
}

// WithSandboxErrors sets the errors that mean a sandbox message cannot be
// processed because of the sandbox itself: when the handler's error wraps
// one of them (errors.Is), the message is dead-lettered at once, without
// retries, so that the partition does not wait for a sandbox that cannot
// be served. The default is the refusals of package breaker
// ([breaker.ErrOpen], [breaker.ErrThrottled], [breaker.ErrTooManyInFlight]);
// the given list replaces it. A service that writes through dbroute adds
// dbroute.ErrNoTestDatabase and dbroute.ErrSandboxOnBaseline (kafkamw
// does not import dbroute, which would bring pgx to every Kafka user):
//
//	kafkamw.WithSandboxErrors(append(kafkamw.DefaultSandboxErrors(),
//		dbroute.ErrNoTestDatabase, dbroute.ErrSandboxOnBaseline)...)
//
// The list is never consulted for production messages.
func WithSandboxErrors(errs ...error) RunOption {
	return runOptionFunc(func(c *runConfig) { c.sandboxErrors = errs })
}

// DefaultSandboxErrors returns the errors [WithSandboxErrors] defaults to.
func DefaultSandboxErrors() []error {
	return []error{breaker.ErrOpen, breaker.ErrThrottled, breaker.ErrTooManyInFlight}
}

// OnError sets a function Run calls with each error it meets and goes on
// from: a failed fetch, a failed handler call (wrapping the handler's
// error, naming the message), a failed commit or dead-letter write. Run
// calls it from its own goroutine.
func OnError(f func(error)) RunOption {
	return runOptionFunc(func(c *runConfig) { c.onError = f })
}

func newRunConfig(opts []RunOption) runConfig {
	c := runConfig{attempts: DefaultRetries, backoff: DefaultBackoff, max: DefaultMaxBackoff, sandboxErrors: DefaultSandboxErrors()}
	for _, o := range opts {
		if o != nil {
			o.applyRun(&c)
		}
	}
	return c
}

func (r *Reader) validateRun(ctx context.Context, h Handler, c *runConfig) error {
	var errs []error
	if ctx == nil {
		errs = append(errs, errors.New("Run: the context is nil"))
	}
	if h == nil {
		errs = append(errs, errors.New("Run: the handler is nil"))
	}
	if c.attempts < 1 {
		errs = append(errs, fmt.Errorf("WithRetries: %d is below 1", c.attempts))
	}
	if c.backoff <= 0 || c.max < c.backoff {
		errs = append(errs, fmt.Errorf("WithBackoff: %s, %s: want 0 < first <= max", c.backoff, c.max))
	}
	switch c.production {
	case RetryForever, StopRun:
	case DeadLetterAndContinue:
		if r.cfg.deadLetter == nil {
			errs = append(errs, errors.New("OnProductionFailure(DeadLetterAndContinue) needs WithDeadLetter"))
		}
	default:
		errs = append(errs, fmt.Errorf("OnProductionFailure: unknown policy %d", c.production))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
}

// Run calls h for each message the reader owns, one at a time in the
// order of each partition, and commits each message once h has processed
// it. It returns nil when ctx is done or the reader is closed, after
// committing what was processed; a message whose handling ctx cut short
// is not committed and is received again after a restart (at-least-once).
// [Reader.Close] ends the handler's context as ctx's end does: a handler
// call, retry or backoff in progress stops, and nothing the group reader
// fetched ahead is handled after Close.
// It returns an error for an invalid configuration (wrapping [ErrConfig])
// and, under [StopRun], for a production message whose handler kept
// failing (wrapping [ErrStopped]). A message Run stopped on is kept: the
// reader's next Run or FetchMessage returns it first.
//
// A message that fails is retried with backoff ([WithRetries],
// [WithBackoff]). No sandbox message can hold its partition: one whose
// handler keeps failing, or fails with a sandbox error
// ([WithSandboxErrors]) at once, is written to the dead-letter writer
// ([WithDeadLetter]) with the error in [HeaderDeadLetterReason], audited
// and committed past; without a dead-letter writer it is audited (with the
// error and its topic/partition/offset) and committed past. A production
// message follows [OnProductionFailure]: by default it is retried until it
// succeeds, never dropped. Once Run has given up on three messages of one
// sandbox in a row, it tries that sandbox's next messages once each, until
// one succeeds: a stream of messages of a broken sandbox consumer delays
// production by one handler call per message, not by its retries.
//
// Run must not be called again while it runs, nor together with
// FetchMessage: a second Run, and FetchMessage called while Run runs,
// return an error wrapping [ErrConfig] (a FetchMessage call already in
// progress when Run starts is not detected). Commits are synchronous
// unless ReaderConfig.CommitInterval is set, in which case kafka-go
// commits periodically and on Close.
func (r *Reader) Run(ctx context.Context, h Handler, opts ...RunOption) error {
	rc := newRunConfig(opts)
	if err := r.validateRun(ctx, h, &rc); err != nil {
		return err
	}
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: Run is already running", ErrConfig)
	}
	defer r.running.Store(false)
	// Untagged messages are production's, whatever the caller's context
	// carries.
	ctx = propagation.ContextWithoutSandbox(ctx)
	// Run's context ends with the reader too: Close stops a handler
	// call, a retry or a backoff in progress, whose work could no longer
	// be committed. It is a pointer, which == compares: Run tells a
	// tagged message by its context (mctx != ctx), and == on two values
	// of a type it cannot compare (a caller's struct holding a slice,
	// passed by value) panics.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.gone != nil { // nil in a Reader not built by NewReader (tests)
		defer context.AfterFunc(r.gone, cancel)()
	}
	fetchFailures := 0
	failing := make(map[string]int) // sandbox ID → messages given up on in a row
	for {
		var (
			msg  kafka.Message
			mctx = ctx
			err  error
		)
		inner := r.inner.Load()
		if inner == nil {
			inner, err = r.start(ctx)
		}
		if err == nil {
			mctx, err = r.fetch(ctx, inner, &msg)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			fetchFailures++
			rc.report(err)
			if !sleep(ctx, rc.wait(fetchFailures)) {
				return nil
			}
			continue
		}
		fetchFailures = 0
		if ctx.Err() != nil {
			// A message fetched as ctx ended: not handled, not committed.
			r.putBack(ctx, msg, &rc)
			return nil
		}
		processed, err := r.handle(ctx, mctx, mctx != ctx, msg, h, &rc, failing)
		if err != nil {
			r.putBack(ctx, msg, &rc)
			return err
		}
		if !processed {
			r.putBack(ctx, msg, &rc) // shut down while handling
			return nil
		}
		r.commitProcessed(ctx, msg, &rc)
	}
}

// commitProcessed commits msg, also when ctx has just been cancelled: it
// is processed. A failed commit is reported; the next commit on the
// partition covers it.
func (r *Reader) commitProcessed(ctx context.Context, msg kafka.Message, rc *runConfig) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.CommitMessages(cctx, msg); err != nil {
		rc.report(fmt.Errorf("kafkamw: committing %s: %w", coordinates(&msg), err))
	}
}

// putBack is for a message Run stops on without having processed it: the
// reader's next FetchMessage (or Run) decides and returns it again, rather
// than going on past it (the commits after it would then cover a message
// never processed), and the messages before it are committed.
func (r *Reader) putBack(ctx context.Context, msg kafka.Message, rc *runConfig) {
	r.pending.CompareAndSwap(nil, &keptMessage{msg: msg, returned: true})
	r.commitBefore(ctx, msg, rc)
}

// commitBefore commits the messages of msg's partition before msg, when
// Run stops without having processed msg. Run handles each partition in
// order and commits each message it processes, so everything before msg
// is done: the messages the reader skipped there since the last commit
// are committed, rather than decided again (and dead-lettered again)
// after a restart. msg itself is not.
func (r *Reader) commitBefore(ctx context.Context, msg kafka.Message, rc *runConfig) {
	if msg.Offset <= 0 {
		return
	}
	prev := kafka.Message{Topic: msg.Topic, Partition: msg.Partition, Offset: msg.Offset - 1}
	r.commitProcessed(ctx, prev, rc)
}

// handle runs h on msg until it succeeds or Run gives up on it. It
// reports whether msg may be committed: false when ctx ended first.
func (r *Reader) handle(ctx, mctx context.Context, tagged bool, msg kafka.Message, h Handler, rc *runConfig, failing map[string]int) (bool, error) {
	sb, _ := propagation.FromContext(mctx)
	attempts := rc.attempts
	if tagged && failing[sb.ID] >= failFastAfter {
		attempts = 1 // this sandbox's handler keeps failing: no retries
	}
	// A production handler's panic is the service's own: it is not
	// hidden, but the message is kept, so that Run or FetchMessage called
	// again on this reader (by a supervisor that recovered) returns it
	// rather than going on, and committing, past it. A sandbox message is
	// kept alike when a panic escapes around its handler (whose own
	// panics call recovers): from OnError, the audit logger or the
	// dead-letter writer, all the service's code.
	defer func() {
		if p := recover(); p != nil {
			r.putBack(ctx, msg, rc)
			panic(p)
		}
	}()
	for attempt := 1; ; attempt++ {
		err := call(h, mctx, msg, tagged)
		if err == nil {
			if tagged {
				delete(failing, sb.ID)
			}
			return true, nil
		}
		if ctx.Err() != nil {
			return false, nil
		}
		ferr := fmt.Errorf("kafkamw: handler failed on %s (sandbox %q, attempt %d): %w", coordinates(&msg), sb.ID, attempt, err)
		rc.report(ferr)
		var reason string
		switch {
		case tagged && (rc.isSandboxError(err) || errors.Is(err, ErrHandlerPanic)):
			reason = "sandbox error after " + strconv.Itoa(attempt) + " attempt(s): " + clipReason(err.Error())
		case tagged && attempt >= attempts, !tagged && rc.production == DeadLetterAndContinue && attempt >= attempts:
			reason = "handler failed " + strconv.Itoa(attempt) + " times: " + clipReason(err.Error())
		case !tagged && rc.production == StopRun && attempt >= attempts:
			return false, fmt.Errorf("%w: %w", ErrStopped, ferr)
		}
		if reason != "" {
			if tagged {
				failing[sb.ID]++
			}
			return r.giveUp(ctx, mctx, &msg, reason, rc)
		}
		r.retries.Add(1)
		if !sleep(ctx, rc.wait(attempt)) {
			return false, nil
		}
	}
}

// giveUp dead-letters msg (when there is a dead-letter writer), audits
// and counts it, so that Run commits past it. For a production message, a
// dead-letter write that fails is retried with backoff until it succeeds
// or ctx is done: production data is never committed past without being
// recorded. A sandbox message is tried once ([Reader.deadLetterOrSkip]):
// when the write fails it is audited with its coordinates and committed
// past all the same, so that test traffic cannot hold production while
// the dead-letter topic is down.
func (r *Reader) giveUp(ctx, mctx context.Context, msg *kafka.Message, reason string, rc *runConfig) (bool, error) {
	decision := "committed past it"
	if _, tagged := propagation.FromContext(mctx); tagged && r.cfg.deadLetter != nil {
		decision = "dead-lettered and committed past it"
		if dl := r.deadLetterOrSkip(ctx, msg, reason); dl != "" {
			decision = "committed past it" + dl
			rc.report(fmt.Errorf("%w: %s", ErrDeadLetter, dl[2:]))
		}
	} else if r.cfg.deadLetter != nil {
		for attempt := 1; ; attempt++ {
			err := r.deadLetter(ctx, msg, reason)
			if err == nil {
				// The writer works: the pause a failure in a row set
				// (see [Reader.deadLetterOrSkip]) ends, so that the
				// sandbox messages after this one are written too.
				r.deadLetterUp()
				break
			}
			if ctx.Err() != nil {
				return false, nil
			}
			rc.report(err)
			if !sleep(ctx, rc.wait(attempt)) {
				return false, nil
			}
		}
		decision = "dead-lettered and committed past it"
	}
	r.failed.Add(1)
	if r.gate.Logging() {
		sb, _ := propagation.FromContext(mctx)
		r.gate.Record(mctx, audit.Event{
			Decision: audit.Rejected, Sandbox: sb, Peer: r.group, Target: msg.Topic,
			Reason: "gave up on " + coordinates(msg) + ": " + reason + "; " + decision,
		})
	}
	return true, nil
}

// call runs h on msg, recovering a panic on a sandbox message as an error
// wrapping [ErrHandlerPanic].
func call(h Handler, ctx context.Context, msg kafka.Message, tagged bool) (err error) {
	if tagged {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("%w: %v", ErrHandlerPanic, p)
			}
		}()
	}
	return h(ctx, msg)
}

func (c *runConfig) isSandboxError(err error) bool {
	for _, e := range c.sandboxErrors {
		if e != nil && errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (c *runConfig) report(err error) {
	if c.onError != nil {
		c.onError(err)
	}
}

// wait is the backoff after the n-th failure in a row. It stops doubling
// at the maximum rather than past it: a maximum near the largest Duration
// ("none") wrapped the doubled wait negative, and the failures were
// retried without a pause.
func (c *runConfig) wait(n int) time.Duration {
	d := c.backoff
	for i := 1; i < n && d < c.max; i++ {
		if d > c.max/2 {
			return c.max
		}
		d *= 2
	}
	return min(d, c.max)
}

// maxReason bounds the handler's error in the reason of a message Run
// gives up on (its dead-letter copy's [HeaderDeadLetterReason] and its
// audit record).
const maxReason = 1 << 10

// clipReason returns s, a handler's error, with every ticket's signature
// redacted and clipped to maxReason bytes, at a rune boundary, with "..."
// when clipped. A handler's error may quote a ticket it was given (a
// bearer credential, which the dead-letter copy's headers and the audit
// records show redacted: people read them), or the payload it could not
// parse: whole, that doubled the dead-letter copy, which then exceeded
// what the source topic had taken, and a production message under
// [DeadLetterAndContinue] was retried for ever. Redacted before it is
// cut: cut inside a signature, the rest no longer reads as a ticket.
func clipReason(s string) string {
	s = propagation.RedactTicketText(s)
	if len(s) <= maxReason {
		return s
	}
	n := maxReason
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// coordinates returns "<topic>/<partition>/<offset>" of msg.
func coordinates(msg *kafka.Message) string {
	return msg.Topic + "/" + strconv.Itoa(msg.Partition) + "/" + strconv.FormatInt(msg.Offset, 10)
}

// sleep waits d, and reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
