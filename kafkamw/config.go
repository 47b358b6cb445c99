package kafkamw

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Defaults.
const (
	// DefaultRouteWait is how long [Reader.FetchMessage] waits for the
	// route table to catch up with a message before it returns
	// [ErrRoutesBehind].
	DefaultRouteWait = 5 * time.Second
	// DefaultSkipCommitInterval is how often a reader commits the messages
	// it skipped when the caller's own commits have not covered them.
	DefaultSkipCommitInterval = time.Second
	// MaxClockSkew is how far ahead of a reader's clock a message's
	// timestamp may be and still make the reader wait for its route table.
	// A message further ahead comes from a producer whose clock is wrong:
	// it is decided with the table synced up to the reader's now rather
	// than up to its timestamp, so that one bad timestamp cannot stall a
	// partition until the clock reaches it.
	MaxClockSkew = time.Minute
)

// Option configures a [Writer] or a [Reader]. Options that only concern
// readers ([WithRoutes], [WithService], [AsSandbox], [WithDeadLetter],
// [WithRouteWait], [WithSkipCommitInterval], [WithMeterProvider]) are
// ignored by [NewWriter];
// [WithBreaker] concerns only writers.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	codec      *propagation.Codec
	logger     *slog.Logger
	table      *routes.Table
	service    string
	sandbox    string
	deadLetter *kafka.Writer
	routeWait  time.Duration
	skipEvery  time.Duration
	breaker    *breaker.Group
	meters     metric.MeterProvider
}

func newConfig(opts []Option) config {
	c := config{
		codec:     propagation.Default(),
		routeWait: DefaultRouteWait,
		skipEvery: DefaultSkipCommitInterval,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.codec == nil {
		c.codec = propagation.Default()
	}
	return c
}

// validate checks the reader options.
func (c *config) validate() error {
	var errs []error
	if c.table == nil {
		errs = append(errs, errors.New("WithRoutes is required: ownership is decided from the route table"))
	}
	if c.service == "" {
		errs = append(errs, errors.New("WithService is required: ownership is decided per service"))
	}
	if c.sandbox != "" {
		if err := propagation.ValidateID(c.sandbox); err != nil {
			errs = append(errs, fmt.Errorf("AsSandbox: %w", err))
		}
	}
	if c.deadLetter != nil && c.deadLetter.Topic == "" {
		errs = append(errs, errors.New("WithDeadLetter: the writer must have a Topic"))
	}
	if c.routeWait <= 0 {
		errs = append(errs, fmt.Errorf("WithRouteWait: %s is not positive", c.routeWait))
	}
	if c.skipEvery <= 0 {
		errs = append(errs, fmt.Errorf("WithSkipCommitInterval: %s is not positive", c.skipEvery))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
}

// WithCodec sets the codec that reads and writes the sandbox headers
// (default [propagation.Default]). Use the codec the service's HTTP and gRPC
// middleware use, so that the record headers carry the same keys.
func WithCodec(c *propagation.Codec) Option {
	return optionFunc(func(cfg *config) { cfg.codec = c })
}

// WithLogger sets the logger that receives the reader's audit records and
// the writer's records of refused writes (see the package documentation).
// Without it both are silent.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(cfg *config) { cfg.logger = l })
}

// WithRoutes sets the route table the reader decides ownership from.
// Required for readers.
func WithRoutes(t *routes.Table) Option {
	return optionFunc(func(cfg *config) { cfg.table = t })
}

// WithService names the service the reader consumes for, as it appears in
// the route table. Required for readers.
func WithService(name string) Option {
	return optionFunc(func(cfg *config) { cfg.service = name })
}

// AsSandbox makes the reader the consumer of sandbox id: it processes
// exactly the messages of that sandbox whose timestamps fall in the window
// in which the sandbox overrides the service, in the consumer group
// [SandboxGroup] derives from ReaderConfig.GroupID. Without it the reader is
// the baseline reader.
func AsSandbox(id string) Option {
	return optionFunc(func(cfg *config) { cfg.sandbox = id })
}

// WithDeadLetter sets the dead-letter writer: the baseline reader writes
// to it every message whose sandbox headers cannot be read and every
// orphaned message (of a sandbox the route table does not know at the
// message's time) before skipping it, and [Reader.Run], on either reader,
// every message it gives up on. Each copy carries the original's key,
// value, headers and time, plus [HeaderDeadLetterReason] and
// [HeaderDeadLetterSource]. w must have a Topic. A failed write does not
// hold the message, except a production message under
// [DeadLetterAndContinue] (see "Dead letters" in the package
// documentation). Each write is
// synchronous and waits for w's batch to flush: give w a short
// BatchTimeout (kafka-go's default is a second, which a stream of orphaned
// messages would then cost per message, in front of production).
func WithDeadLetter(w *kafka.Writer) Option {
	return optionFunc(func(cfg *config) { cfg.deadLetter = w })
}

// WithRouteWait sets how long FetchMessage waits for a route table that has
// not yet synced up to a message's timestamp (default [DefaultRouteWait]).
func WithRouteWait(d time.Duration) Option {
	return optionFunc(func(cfg *config) { cfg.routeWait = d })
}

// WithSkipCommitInterval sets how often the reader commits skipped messages
// that the caller's own commits did not cover (default
// [DefaultSkipCommitInterval]). It bounds the consumer lag that skipped
// messages can leave behind.
func WithSkipCommitInterval(d time.Duration) Option {
	return optionFunc(func(cfg *config) { cfg.skipEvery = d })
}

// WithBreaker gives each sandbox's writes the budget of g (package
// breaker): a write over its sandbox's rate, concurrency or circuit-breaker
// budget is refused before it reaches the broker, with an error wrapping
// [breaker.ErrThrottled], [breaker.ErrTooManyInFlight] or [breaker.ErrOpen]
// (and [breaker.RetryAfter] giving the hint), and audited as throttled.
// Failed writes count against the breaker; the caller's cancellation does
// not. One call of [Writer.WriteMessages] spends one token, whatever the
// number of messages. Writes without a sandbox are not budgeted unless g's
// settings give baseline traffic a budget. Writers only.
func WithBreaker(g *breaker.Group) Option {
	return optionFunc(func(c *config) { c.breaker = g })
}

// WithMeterProvider sets the meter provider of the reader's metrics
// ([MetricMessages]; default otel.GetMeterProvider()). A nil provider
// keeps the default. Readers only.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meters = mp })
}
