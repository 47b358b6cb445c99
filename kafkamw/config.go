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

// ReaderOption configures a [Reader] ([NewReader]).
type ReaderOption interface {
	applyReader(*readerConfig)
}

// WriterOption configures a [Writer] ([NewWriter]).
type WriterOption interface {
	applyWriter(*writerConfig)
}

// Option configures a [Reader] and a [Writer] alike: it is both a
// [ReaderOption] and a [WriterOption].
type Option interface {
	ReaderOption
	WriterOption
}

// common is the configuration readers and writers share.
type common struct {
	codec    *propagation.Codec
	codecSet bool // WithCodec was given, so that a second, different one is a conflict
	logger   *slog.Logger
	errs     []error // options given impossible values, each naming its option
}

// setCodec records WithCodec(c), refusing nil and a second, different codec.
func (c *common) setCodec(codec *propagation.Codec) {
	switch {
	case codec == nil:
		c.fail(errors.New("WithCodec: the codec is nil"))
	case len(codec.Fields()) == 0:
		// The zero Codec reads no header (every codec NewCodec makes
		// reads baggage): a reader built on it would pass every marker
		// on, unjudged.
		c.fail(errors.New("WithCodec: codec not made by propagation.NewCodec"))
	case c.codecSet && codec != c.codec:
		c.fail(errors.New("WithCodec: given twice with different codecs"))
	default:
		c.codec, c.codecSet = codec, true
	}
}

func (c *common) fail(err error) { c.errs = append(c.errs, err) }

// configError returns errs, wrapping [ErrConfig] and
// prefixed with the package and constructor name; nil when there is none.
func configError(constructor string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrConfig, constructor, errors.Join(errs...))
}

type readerConfig struct {
	common
	table      *routes.Table
	service    string
	sandbox    string
	deadLetter *kafka.Writer
	routeWait  time.Duration
	skipEvery  time.Duration
	meters     metric.MeterProvider
	split      *Split // the split mode; nil for the filter mode
}

type writerConfig struct {
	common
	breaker *breaker.Group
}

// option is an [Option]: it sets what readers and writers share.
type option func(*common)

func (f option) applyReader(c *readerConfig) { f(&c.common) }
func (f option) applyWriter(c *writerConfig) { f(&c.common) }

type readerOption func(*readerConfig)

func (f readerOption) applyReader(c *readerConfig) { f(c) }

type writerOption func(*writerConfig)

func (f writerOption) applyWriter(c *writerConfig) { f(c) }

// newReaderConfig applies opts, skipping nil ones, over the defaults, and
// checks the result: the error wraps [ErrConfig] and names each option at
// fault.
func newReaderConfig(table *routes.Table, service string, opts []ReaderOption) (readerConfig, error) {
	c := readerConfig{
		common:    common{codec: propagation.Default()},
		table:     table,
		service:   service,
		routeWait: DefaultRouteWait,
		skipEvery: DefaultSkipCommitInterval,
	}
	for _, o := range opts {
		if o != nil {
			o.applyReader(&c)
		}
	}
	return c, configError("NewReader", c.validate())
}

// validate checks the reader configuration.
func (c *readerConfig) validate() []error {
	errs := c.errs
	if c.table == nil {
		errs = append(errs, errors.New("the route table is nil: ownership is decided from the route table"))
	}
	if c.service == "" {
		errs = append(errs, errors.New("the service is empty: ownership is decided per service"))
	} else if err := routes.ValidateService(c.service); err != nil {
		errs = append(errs, err)
	}
	if c.sandbox != "" {
		if err := propagation.ValidateID(c.sandbox); err != nil {
			errs = append(errs, fmt.Errorf("AsSandbox: %w", err))
		}
	}
	if c.deadLetter != nil && c.deadLetter.Topic == "" {
		errs = append(errs, errors.New("WithDeadLetter: the writer must have a Topic"))
	}
	if c.deadLetter != nil && (c.deadLetter.Async || c.deadLetter.RequiredAcks == kafka.RequireNone) {
		// A write that does not wait for the broker reports success for a
		// copy the broker refuses (too large, no such partition): the
		// message would be counted dead-lettered and committed past, and
		// be nowhere.
		errs = append(errs, errors.New("WithDeadLetter: the writer must wait for the broker's acknowledgement (RequiredAcks RequireOne or RequireAll, not kafka-go's default RequireNone; not Async)"))
	}
	if c.routeWait <= 0 {
		errs = append(errs, fmt.Errorf("WithRouteWait: %s is not positive", c.routeWait))
	}
	if c.skipEvery <= 0 {
		errs = append(errs, fmt.Errorf("WithSkipCommitInterval: %s is not positive", c.skipEvery))
	}
	return errs
}

// newWriterConfig applies opts, skipping nil ones, over the defaults, and
// checks the result as [newReaderConfig] does.
func newWriterConfig(w *kafka.Writer, opts []WriterOption) (writerConfig, error) {
	c := writerConfig{common: common{codec: propagation.Default()}}
	if w == nil {
		c.fail(errors.New("the kafka.Writer is nil"))
	}
	for _, o := range opts {
		if o != nil {
			o.applyWriter(&c)
		}
	}
	return c, configError("NewWriter", c.errs)
}

// WithCodec sets the codec that reads and writes the sandbox headers
// (default [propagation.Default]). Use the codec the service's HTTP and gRPC
// middleware use, so that the record headers carry the same keys.
//
// A nil codec, one not made by [propagation.NewCodec] (the zero Codec), or
// two WithCodec options with different codecs, is an error from the
// constructor.
func WithCodec(c *propagation.Codec) Option {
	return option(func(cfg *common) { cfg.setCodec(c) })
}

// WithLogger sets the logger that receives the reader's audit records and
// the writer's records of refused writes (see the package documentation).
// Without it, or with a nil logger, both are silent.
func WithLogger(l *slog.Logger) Option {
	return option(func(cfg *common) { cfg.logger = l })
}

// AsSandbox makes the reader the consumer of sandbox id: it processes
// exactly the messages of that sandbox whose timestamps fall in the window
// in which the sandbox overrides the service, in the consumer group
// [SandboxGroup] derives from ReaderConfig.GroupID. Without it the reader is
// the baseline reader. An invalid or empty ID, or two AsSandbox options naming
// different sandboxes, is an error from [NewReader].
func AsSandbox(id string) ReaderOption {
	return readerOption(func(cfg *readerConfig) {
		if id == "" {
			// Not a silent baseline reader: an unset variable feeding
			// AsSandbox must not consume production messages.
			cfg.fail(errors.New("AsSandbox: empty sandbox ID (a baseline reader takes no AsSandbox)"))
			return
		}
		if cfg.sandbox != "" && cfg.sandbox != id {
			cfg.fail(fmt.Errorf("AsSandbox: given twice, %q and %q", cfg.sandbox, id))
			return
		}
		cfg.sandbox = id
	})
}

// WithDeadLetter sets the dead-letter writer: the baseline reader writes
// to it every message whose sandbox headers cannot be read and every
// orphaned message (of a sandbox the route table does not know at the
// message's time) before skipping it, and [Reader.Run], on either reader,
// every message it gives up on. Each copy carries the original's key,
// value, headers and time, plus [HeaderDeadLetterReason] and
// [HeaderDeadLetterSource]. w must have a Topic, not one the reader reads
// (each dead letter would come back to it, for ever), and wait for the broker's
// acknowledgement (RequiredAcks [kafka.RequireOne] or [kafka.RequireAll],
// not Async): a write that does not would report success for a copy the
// broker refused. A failed write does not
// hold the message, except a production message under
// [DeadLetterAndContinue] (see "Dead letters" in the package
// documentation). Each write is
// synchronous and waits for w's batch to flush: give w a short
// BatchTimeout (kafka-go's default is a second, which a stream of orphaned
// messages would then cost per message, in front of production). A nil w
// adds nothing, as a nil group to [WithBreaker] does.
func WithDeadLetter(w *kafka.Writer) ReaderOption {
	return readerOption(func(cfg *readerConfig) {
		if w != nil {
			cfg.deadLetter = w
		}
	})
}

// WithRouteWait sets how long FetchMessage waits for a route table that has
// not yet synced up to a message's timestamp (default [DefaultRouteWait]).
func WithRouteWait(d time.Duration) ReaderOption {
	return readerOption(func(cfg *readerConfig) { cfg.routeWait = d })
}

// WithSkipCommitInterval sets how often the reader commits skipped messages
// that the caller's own commits did not cover (default
// [DefaultSkipCommitInterval]). It bounds the consumer lag that skipped
// messages can leave behind.
func WithSkipCommitInterval(d time.Duration) ReaderOption {
	return readerOption(func(cfg *readerConfig) { cfg.skipEvery = d })
}

// WithBreaker gives each sandbox's writes the budget of g (package
// breaker): a write over its sandbox's rate, concurrency or circuit-breaker
// budget is refused before it reaches the broker, with an error wrapping
// [breaker.ErrThrottled], [breaker.ErrTooManyInFlight] or [breaker.ErrOpen]
// (and [breaker.RetryAfter] giving the hint), and audited as throttled.
// Failed writes count against the breaker; the caller's cancellation does
// not. One call of [Writer.WriteMessages] spends one token, whatever the
// number of messages. Writes without a sandbox are not budgeted unless g's
// settings give baseline traffic a budget. A nil g adds nothing, as in
// httpmw and grpcmw; two different groups are an [ErrConfig] error.
func WithBreaker(g *breaker.Group) WriterOption {
	return writerOption(func(c *writerConfig) {
		switch {
		case g == nil:
		case c.breaker != nil && c.breaker != g:
			c.fail(errors.New("WithBreaker: given twice with different groups"))
		default:
			c.breaker = g
		}
	})
}

// WithMeterProvider sets the meter provider of the reader's metrics
// ([MetricMessages]; default otel.GetMeterProvider()). A nil provider
// keeps the default.
func WithMeterProvider(mp metric.MeterProvider) ReaderOption {
	return readerOption(func(c *readerConfig) { c.meters = mp })
}
