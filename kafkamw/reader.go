package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/ingress"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Errors. The returned errors wrap them with details.
var (
	// ErrConfig reports a misconfiguration: an invalid argument or option
	// given to [NewReader] or [NewWriter], conflicting options, or a
	// method called when it cannot work ([Reader.Run] twice).
	ErrConfig = errors.New("kafkamw: invalid configuration")
	// ErrConflict reports a message given to [Writer.WriteMessages] that
	// already names another sandbox than the context's, or whose sandbox
	// headers cannot be read.
	ErrConflict = errors.New("kafkamw: message sandbox headers conflict with the context")
	// ErrRoutesBehind reports a message newer than the route table's last
	// sync, for longer than the reader waits ([WithRouteWait]). The reader
	// keeps the message and decides it again on the next FetchMessage. A
	// sandbox reader's first FetchMessage reports it too when its sandbox
	// has no route in a table that has not synced up to that moment.
	ErrRoutesBehind = errors.New("kafkamw: route table has not synced up to the message's time")
	// ErrNoRoute reports a sandbox reader whose sandbox has no route for the
	// service in the route table, so that it cannot know where its
	// messages start.
	ErrNoRoute = errors.New("kafkamw: sandbox has no route for the service")
	// ErrDeadLetter reports a failed write to the dead-letter writer, as
	// [Reader.Run] reports it to [OnError]. Only a production message under
	// [DeadLetterAndContinue] waits for the write to succeed; any other
	// message is accounted for in Counts.DeadLetterFailed and its audit
	// record, and not held.
	ErrDeadLetter = errors.New("kafkamw: writing to the dead-letter topic failed")
)

// errUnreadable is the reason of the record of a message whose sandbox
// headers cannot be read; the codec's error follows it.
var errUnreadable = errors.New("unreadable sandbox headers, message skipped")

// Headers the reader adds to a message it writes to the dead-letter topic.
const (
	// HeaderDeadLetterReason holds why the message was dead-lettered: why
	// its sandbox headers could not be read, why it is orphaned, or the
	// error on which [Reader.Run] gave up on it (the handler's error
	// clipped to 1 KiB: it may quote the payload, and a copy twice the
	// message's size may exceed what the topic took).
	HeaderDeadLetterReason = "sandboxkit-dead-letter-reason"
	// HeaderDeadLetterSource holds "<topic>/<partition>/<offset>" of the
	// original message.
	HeaderDeadLetterSource = "sandboxkit-dead-letter-source"
)

// Counts are a reader's cumulative message counts since it was built.
type Counts struct {
	// Delivered is the number of messages FetchMessage returned.
	Delivered int64
	// Skipped is the number of messages left to their owner (or dropped
	// as unreadable) and committed by the reader.
	Skipped int64
	// Unreadable is the number of skipped messages whose sandbox headers
	// could not be read.
	Unreadable int64
	// Orphaned is the number of skipped messages that belong to no reader:
	// their sandbox was not in the route table at the message's time
	// (never existed, expired or removed). A sandbox reader counts those of
	// its own sandbox; the baseline reader counts them all.
	Orphaned int64
	// DeadLettered is the number of messages written to the dead-letter
	// writer: unreadable and orphaned ones (baseline reader), and those
	// [Reader.Run] gave up on.
	DeadLettered int64
	// DeadLetterFailed is the number of messages given up on whose
	// dead-letter write failed: they were skipped or committed past all
	// the same (test traffic never holds production), and each is audited
	// with the write's error and its topic/partition/offset, where it can
	// still be read.
	DeadLetterFailed int64
	// Failed is the number of messages [Reader.Run] gave up on after its
	// handler failed: dead-lettered, or without a dead-letter writer
	// audited and committed past.
	Failed int64
	// Retries is the number of handler calls [Reader.Run] repeated after
	// a failure.
	Retries int64
	// Waits is the number of times FetchMessage waited for the route table
	// to sync up to a message's time.
	Waits int64
	// Future is the number of tagged messages whose timestamp was more than
	// [MaxClockSkew] ahead of this reader's clock: decided with the table
	// synced up to the reader's now, rather than stalling the partition
	// until the clock reaches the timestamp.
	Future int64
	// Forwarded is the number of messages the baseline reader forwarded
	// to their sandbox's topic in the split mode ([WithSplit]), each
	// acknowledged by the broker before it was committed; they are
	// counted in Skipped too.
	Forwarded int64
	// Unforwardable is the number of messages the baseline reader could
	// not forward in the split mode because their sandbox's topic cannot
	// be named ([SplitTopic]), or refused the copy as too large: skipped,
	// dead-lettered when a dead-letter writer is set, and audited.
	Unforwardable int64
	// Duplicates is the number of forwarded copies a sandbox reader
	// skipped in the split mode because it had decided a copy of the same
	// source message before (the baseline forwarded it again after a
	// crash), or because its group processed the message in the filter
	// mode before the switch. Counted in Skipped too.
	Duplicates int64
}

// Reader reads messages through a kafka-go group reader and returns each
// with a context carrying its sandbox, deciding which messages are its own
// (see the package documentation). Build one with [NewReader]; the zero
// value is not usable. Its methods are safe for concurrent use.
type Reader struct {
	cfg     readerConfig
	rcfg    kafka.ReaderConfig
	markers markers
	// ticketKey is the codec's ticket key, which the split mode's copies
	// drop (see ticket.go).
	ticketKey []byte
	group     string
	topics    []string
	gate      ingress.Gate   // the audit records, span attributes and context of the messages decided
	events    [2]audit.Event // the audit record of a tagged message, by "route active"
	role      role

	// The split mode ([WithSplit]), nil in the filter mode: the baseline
	// reader's forwarder, which hands each message a sandbox's reader
	// owns on to the sandbox's topic, and a sandbox reader's record of
	// what its filter-mode predecessor processed.
	forward *forwarder
	marks   *marks
	source  string                      // a split-mode sandbox reader's source topic
	prepare func(context.Context) error // readies a sandbox reader before it joins: seed, or prepareSplit

	inner atomic.Pointer[kafka.Reader] // nil before a sandbox reader starts and after Close
	// closedInner is the group reader Close closed, for Stats; startMu.
	closedInner *kafka.Reader

	startMu sync.Mutex // guards starting and closing
	closed  bool
	stop    context.CancelFunc
	flushed chan struct{} // closed when the flush loop has returned
	// gone ends once Close has closed the group reader: a synchronous
	// commit kafka-go took after its commit loop stopped is never
	// answered (see commit).
	gone     context.Context
	markGone context.CancelFunc

	// fetching serialises fetch: taking the next message, deciding it and
	// recording it in the ledger happen in offset order, one goroutine at
	// a time, so that concurrent callers neither overwrite each other's
	// pending message nor let a commit pass a message still being decided.
	// A waiting caller's context still cancels the wait.
	fetching fetchLock
	// pending is a message whose decision failed (routes behind, dead
	// letter failed), or one [Reader.Run] returned and put back unprocessed:
	// decided again before the next fetch.
	pending atomic.Pointer[keptMessage]

	carriers sync.Pool // of *carrier, to read tagged messages' headers
	memo     memo
	// Under the fetch lock: the last tagged message's headers, the last
	// sandbox's ownership facts, and the context the last owned tagged
	// message was returned with.
	last    lastHeaders
	owners  ownerMemo
	entered enterMemo

	commitMu sync.Mutex // serialises commits, so skipped offsets never go back
	ledger   ledger
	// sendCtx is the context the last synchronous commit waited on (see
	// send), kept for the next one made with a context of the same end;
	// commitMu.
	sendCtx sendContext

	running         atomic.Bool         // Run is running
	shut            atomic.Bool         // Close was called: a fetch in progress takes no further message
	deadLetterDown  atomic.Int64        // unix nanoseconds until which the dead-letter writer is not tried; 0 when healthy
	deadLetterFails atomic.Int64        // dead-letter writes failed in a row, which the pause doubles with
	metrics         metric.Registration // the metrics callback; nil when none

	delivered, skipped, unreadable, orphans, deadLettered, deadLetterFailed, failed, retries, waits, future atomic.Int64
	forwarded, unforwardables, duplicates                                                                   atomic.Int64
}

// NewReader returns a reader for cfg that decides, from table, which
// messages of service are its own. cfg must name a consumer group (GroupID)
// and a Topic or GroupTopics; table must not be nil, nor service empty or
// a name no route table holds ([routes.ValidateService]). A
// misconfiguration, of cfg or of an option, is an error wrapping
// [ErrConfig] that names what is wrong; nil options are skipped.
//
// A baseline reader joins cfg.GroupID at once, as kafka.NewReader does. A
// sandbox reader ([AsSandbox]) joins [SandboxGroup](cfg.GroupID, id) on its
// first FetchMessage, after setting the group's start offsets (see the
// package documentation).
func NewReader(cfg kafka.ReaderConfig, table *routes.Table, service string, opts ...ReaderOption) (*Reader, error) {
	c, err := newReaderConfig(table, service, opts)
	if err != nil {
		return nil, err
	}
	if cfg.GroupID == "" {
		return nil, configError("NewReader", []error{errors.New("ReaderConfig.GroupID is required: skipped messages are committed")})
	}
	var source string
	if c.split != nil {
		if source, err = splitConfig(&cfg, c.sandbox); err != nil {
			return nil, configError("NewReader", []error{err})
		}
	}
	if c.sandbox != "" {
		cfg.GroupID = SandboxGroup(cfg.GroupID, c.sandbox)
	}
	if err := validateReaderConfig(cfg); err != nil {
		return nil, configError("NewReader", []error{fmt.Errorf("ReaderConfig: %w", err)})
	}
	if dl := c.deadLetter; dl != nil && (cfg.Topic == dl.Topic || slices.Contains(cfg.GroupTopics, dl.Topic)) {
		// Each message dead-lettered would come back to the reader,
		// be dead-lettered again, and loop through the topic for ever.
		return nil, configError("NewReader", []error{fmt.Errorf("WithDeadLetter: the reader reads the dead-letter topic %q", dl.Topic)})
	}
	r := &Reader{
		fetching:  fetchLock{},
		cfg:       c,
		rcfg:      cfg,
		markers:   newMarkers(c.codec),
		ticketKey: ticketKey(c.codec),
		group:     cfg.GroupID,
		topics:    cfg.GroupTopics,
		ledger:    newLedger(),
	}
	r.gone, r.markGone = context.WithCancel(context.Background())
	if len(r.topics) == 0 {
		r.topics = []string{cfg.Topic}
	}
	r.gate = c.gate()
	r.role = role(c.sandbox)
	r.prepare = r.seed
	switch {
	case c.split != nil && c.sandbox == "":
		r.forward = newForwarder(*c.split, cfg)
	case c.split != nil:
		r.source, r.prepare = source, r.prepareSplit
		r.freeSplitSource()
	}
	r.events = decisionEvents(c.sandbox == "", c.service, r.group)
	r.metrics = r.observe(c.meters)
	if c.sandbox == "" {
		r.startMu.Lock()
		r.startLocked()
		r.startMu.Unlock()
	}
	return r, nil
}

// gate returns the admission kernel of a reader configured by c.
func (c *readerConfig) gate() ingress.Gate {
	return ingress.Gate{Codec: c.codec, Logger: c.logger, Protocol: audit.Kafka}
}

// validateReaderConfig runs the checks with which kafka.NewReader would
// panic.
func validateReaderConfig(cfg kafka.ReaderConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	gc := kafka.ConsumerGroupConfig{
		ID:                     cfg.GroupID,
		Brokers:                cfg.Brokers,
		Dialer:                 cfg.Dialer,
		Topics:                 cfg.GroupTopics,
		GroupBalancers:         cfg.GroupBalancers,
		HeartbeatInterval:      cfg.HeartbeatInterval,
		PartitionWatchInterval: cfg.PartitionWatchInterval,
		WatchPartitionChanges:  cfg.WatchPartitionChanges,
		SessionTimeout:         cfg.SessionTimeout,
		RebalanceTimeout:       cfg.RebalanceTimeout,
		JoinGroupBackoff:       cfg.JoinGroupBackoff,
		RetentionTime:          cfg.RetentionTime,
		StartOffset:            cfg.StartOffset,
	}
	if len(gc.Topics) == 0 {
		gc.Topics = []string{cfg.Topic}
	}
	if err := gc.Validate(); err != nil {
		return err
	}
	if cfg.ReadBackoffMin > 0 && cfg.ReadBackoffMax > 0 && cfg.ReadBackoffMax < cfg.ReadBackoffMin {
		return fmt.Errorf("ReadBackoffMax %s is below ReadBackoffMin %s", cfg.ReadBackoffMax, cfg.ReadBackoffMin)
	}
	return nil
}

// startLocked creates the group reader and the loop that commits skipped
// messages. startMu is held.
func (r *Reader) startLocked() {
	inner := kafka.NewReader(r.rcfg)
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.flushed = make(chan struct{})
	r.inner.Store(inner)
	go r.flushLoop(ctx, inner)
}

// start returns the group reader, starting a sandbox reader's on first
// use (preparing the sandbox group first), or io.EOF once the reader is
// closed. FetchMessage and Run load r.inner themselves and call start only
// while it is nil: a call for every message of the topic cost more than
// the load it is for (a function wrapping both is over the inlining
// budget).
func (r *Reader) start(ctx context.Context) (*kafka.Reader, error) {
	r.startMu.Lock()
	defer r.startMu.Unlock()
	if r.closed {
		return nil, io.EOF
	}
	if in := r.inner.Load(); in != nil {
		return in, nil
	}
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	r.startLocked()
	return r.inner.Load(), nil
}

// Config returns the configuration of the group reader; its GroupID is
// the sandbox group for a sandbox reader.
func (r *Reader) Config() kafka.ReaderConfig { return r.rcfg }

// Counts returns the reader's cumulative counts.
func (r *Reader) Counts() Counts {
	return Counts{
		Delivered:        r.delivered.Load(),
		Skipped:          r.skipped.Load(),
		Unreadable:       r.unreadable.Load(),
		Orphaned:         r.orphans.Load(),
		DeadLettered:     r.deadLettered.Load(),
		DeadLetterFailed: r.deadLetterFailed.Load(),
		Failed:           r.failed.Load(),
		Retries:          r.retries.Load(),
		Waits:            r.waits.Load(),
		Future:           r.future.Load(),
		Forwarded:        r.forwarded.Load(),
		Unforwardable:    r.unforwardables.Load(),
		Duplicates:       r.duplicates.Load(),
	}
}

// Stats returns the group reader's statistics (kafka.Reader.Stats), zero
// for a sandbox reader that has not started.
func (r *Reader) Stats() kafka.ReaderStats {
	if in := r.inner.Load(); in != nil {
		return in.Stats()
	}
	r.startMu.Lock()
	in := r.closedInner
	r.startMu.Unlock()
	if in != nil {
		return in.Stats()
	}
	return kafka.ReaderStats{}
}

// FetchMessage returns the next message this reader owns and a context
// derived from ctx that carries the message's sandbox (ctx itself for an
// untagged message). Messages it does not own, and messages whose sandbox
// headers cannot be read, are skipped, counted and committed; they are
// never returned.
//
// Commit returned messages with [Reader.CommitMessages]. After [Reader.Close]
// FetchMessage returns io.EOF. While [Reader.Run] runs on the reader it
// returns an error wrapping [ErrConfig]: a message it took would be
// processed by no one, and Run's next commit on the partition would commit
// past it.
func (r *Reader) FetchMessage(ctx context.Context) (_ context.Context, msg kafka.Message, err error) {
	if r.running.Load() {
		return ctx, msg, fmt.Errorf("%w: FetchMessage while Run is running", ErrConfig)
	}
	// The group reader, started on first use, loaded here rather than by
	// a helper: one with the call to start is too large to inline, and
	// FetchMessage runs for every message returned (Run does the same).
	inner := r.inner.Load()
	if inner == nil {
		if inner, err = r.start(ctx); err != nil {
			return ctx, msg, err
		}
	}
	// The message is read straight into the result: a named result whose
	// address is taken is not copied on return, where a local one was
	// (one copy of the 152-byte message fewer for each message returned).
	ctx, err = r.fetch(ctx, inner, &msg)
	return ctx, msg, err
}

// source is what fetch reads the topic from: the group reader, or a
// stand-in in tests ([sourceFunc]). An interface rather than a function
// value: the method value inner.FetchMessage is a wrapper that copies
// each 152-byte message once more on its way (82 instructions a message
// of the topic, callgrind).
type source interface {
	FetchMessage(context.Context) (kafka.Message, error)
}

// sourceFunc is a function used as a [source].
type sourceFunc func(context.Context) (kafka.Message, error)

// FetchMessage calls f.
func (f sourceFunc) FetchMessage(ctx context.Context) (kafka.Message, error) { return f(ctx) }

// fetch reads the next message of src that is this reader's into *msg,
// which is left zero on error. It runs for every message of the topic,
// and a kafka.Message is large enough for each copy to count: the message
// is read straight into *msg, not passed up through the return values.
//
// Most messages of a topic are untagged (no header, or none that a
// marker can be: [markers.plain]): their fate is the reader's role's
// alone ([role.untagged]), with no header to read, no route table to
// wait for and nothing to hand on, and fetch settles them itself. Every
// other message (one with a header that may be a marker, the pending
// one, any message of a split-mode sandbox reader, which checks each for
// duplicates) is settled by fetchLoop. The fetch lock is released by
// defer on both paths: a panic in the source, the user's logger or
// dead-letter writer must not leave it held and wedge the reader (an
// open-coded defer costs a few instructions a message; unlocking by hand
// on the fast path saved them and wedged the reader after a panicking
// source, TestFetchFastPathPanic).
func (r *Reader) fetch(ctx context.Context, src source, msg *kafka.Message) (context.Context, error) {
	if err := r.fetching.lock(ctx); err != nil {
		return ctx, err
	}
	defer r.fetching.unlock()
	if r.pending.Load() != nil || r.marks != nil {
		return r.fetchLoop(ctx, src, msg, false, false)
	}
	var err error
	if *msg, err = src.FetchMessage(ctx); err != nil {
		*msg = kafka.Message{}
		return ctx, err
	}
	plain := r.markers.plain(msg.Headers)
	if !plain || r.role.untagged() != fateMine {
		return r.fetchLoop(ctx, src, msg, true, plain)
	}
	r.ledger.deliver(msg)
	r.delivered.Add(1)
	return ctx, nil
}

// fetchLoop is fetch once the lock is taken, for what its fast path does
// not settle: it settles *msg first when fetched is set (plain saying
// whether fetch found its headers [markers.plain]: each list is tested
// once), then reads and settles messages until one is the reader's.
// fetch releases the lock.
func (r *Reader) fetchLoop(ctx context.Context, src source, msg *kafka.Message, fetched, plain bool) (context.Context, error) {
	for {
		if r.shut.Load() {
			// Closed while this call settled the messages before: the
			// group reader's messages fetched ahead are the next
			// consumer's (their commits, or the skipped ones', can no
			// longer succeed), and so is the one in hand.
			*msg = kafka.Message{}
			return ctx, io.EOF
		}
		var (
			err   error
			again bool
		)
		switch p := r.pending.Load(); {
		case fetched:
			fetched = false
		case p != nil && r.pending.CompareAndSwap(p, nil):
			*msg, again, plain = p.msg, p.returned, false
		default:
			if *msg, err = src.FetchMessage(ctx); err != nil {
				*msg = kafka.Message{}
				return ctx, err
			}
			plain = r.marks == nil && r.markers.plain(msg.Headers)
		}
		if plain {
			// Untagged, as in fetch, for a reader that skips them (a
			// sandbox reader in the filter mode).
			if r.role.untagged() == fateMine {
				r.ledger.deliver(msg)
				r.delivered.Add(1)
				return ctx, nil
			}
			r.ledger.skip(msg)
			r.skipped.Add(1)
			continue
		}
		out, own, err := r.settle(ctx, msg, again)
		if err != nil {
			*msg = kafka.Message{}
			return ctx, err
		}
		if own {
			return out, nil
		}
	}
}

// keptMessage is the reader's pending message. returned is set when it is
// one the reader returned before and [Reader.Run] put back unprocessed.
type keptMessage struct {
	msg      kafka.Message
	returned bool
}

// settle decides msg and records the decision: in the ledger and the counts
// when msg is decided (and, for a message a sandbox reader owns, handed on),
// as the pending message when the decision or the hand-off failed. again
// reports a message returned before and put back unprocessed: in the split
// mode its copy's source offset is already marked as decided, and it is
// not a duplicate of itself. The caller holds the fetch lock (r.fetching).
func (r *Reader) settle(ctx context.Context, msg *kafka.Message, again bool) (context.Context, bool, error) {
	var (
		part           int
		off            int64
		dup, forwarded bool
	)
	if r.marks != nil { // the split mode's sandbox reader; a call saved on every message otherwise
		part, off, dup, forwarded = r.marks.check(msg)
		dup = dup && !again
	}
	if dup {
		r.duplicates.Add(1)
		r.ledger.skip(msg)
		r.skipped.Add(1)
		return ctx, false, nil
	}
	out, v, err := r.decide(ctx, msg)
	if err == nil && v.fate == fateSandbox {
		err = r.handOff(ctx, msg, v.sandbox)
	}
	if err != nil {
		r.pending.Store(&keptMessage{msg: *msg, returned: again})
		return ctx, false, err
	}
	if forwarded {
		r.marks.advance(part, off)
	}
	if v.fate == fateMine {
		r.ledger.deliver(msg)
		r.delivered.Add(1)
		return out, true, nil
	}
	if again {
		r.ledger.unreturn(msg) // put back, now skipped: see unreturn
	}
	r.ledger.skip(msg)
	r.skipped.Add(1)
	return out, false, nil
}

// deadLetterTimeout bounds a dead-letter write.
const deadLetterTimeout = 10 * time.Second

// deadLetter writes msg to the dead-letter writer, if there is one.
func (r *Reader) deadLetter(ctx context.Context, msg *kafka.Message, reason string) error {
	w := r.cfg.deadLetter
	if w == nil {
		return nil
	}
	hs := make([]kafka.Header, 0, len(msg.Headers)+2)
	hs = append(hs, msg.Headers...)
	// A ticket on the message stays there, as unreadable as it was, but
	// without its signature: people read dead letters.
	c := carrier{list: hs}
	r.cfg.codec.RedactTicket(&c)
	// RedactTicket reads one value of each key by text; a record may
	// hold several headers of one name, each kept as it came.
	for i, h := range c.list {
		if v := propagation.RedactTicketText(string(h.Value)); v != string(h.Value) {
			c.list[i].Value = []byte(v)
		}
	}
	hs = append(c.list,
		kafka.Header{Key: HeaderDeadLetterReason, Value: []byte(reason)},
		kafka.Header{Key: HeaderDeadLetterSource, Value: []byte(msg.Topic + "/" + strconv.Itoa(msg.Partition) + "/" + strconv.FormatInt(msg.Offset, 10))},
	)
	dl := kafka.Message{Key: msg.Key, Value: msg.Value, Headers: hs, Time: msg.Time}
	// A write cut short by the caller's cancellation may still reach the
	// broker, and the message would be written again when decided anew:
	// a write in progress finishes (within deadLetterTimeout) even when
	// ctx ends, so that a clean shutdown leaves one copy.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadLetterTimeout)
	defer cancel()
	if err := w.WriteMessages(wctx, dl); err != nil {
		return fmt.Errorf("%w: message %s/%d/%d: %w", ErrDeadLetter, msg.Topic, msg.Partition, msg.Offset, err)
	}
	r.deadLettered.Add(1)
	return nil
}

// deadLetterPause is how long, after a failed dead-letter write,
// [Reader.deadLetterOrSkip] does not try the dead-letter writer again.
const deadLetterPause = 5 * time.Second

// deadLetterMaxPause is the longest pause: the pause doubles with each
// failed write in a row (see [Reader.deadLetterOrSkip]).
const deadLetterMaxPause = 2 * time.Minute

// deadLetterOrSkip writes msg, a message no reader will process (an
// orphan, an unreadable one, a sandbox message Run gave up on), to the
// dead-letter writer, if there is one. A failed write does not keep the
// message: test traffic must not hold the production messages behind it
// while the dead-letter topic is down. It is counted (DeadLetterFailed)
// and the result, for the message's audit record, names the failure and
// the message's coordinates, where it can still be read. For
// deadLetterPause after a failure the writer is not tried again, and for
// twice as long after each further failure in a row, up to
// deadLetterMaxPause, so that a dead-letter topic that hangs costs one
// bounded write (deadLetterTimeout) per pause, not one per message, and
// a pause that grows: a fixed pause of 5s after a 10s write held
// production two thirds of the time. A refusal of the message for its
// size pauses nothing ([refusedForSize]). The result is empty when the
// write succeeded or there is no writer.
func (r *Reader) deadLetterOrSkip(ctx context.Context, msg *kafka.Message, reason string) string {
	if r.cfg.deadLetter == nil {
		return ""
	}
	var err error
	if until := r.deadLetterDown.Load(); until != 0 && time.Now().UnixNano() < until {
		err = errors.New("the dead-letter writer failed, not tried again until " + time.Unix(0, until).UTC().Format(time.RFC3339))
	} else if err = r.deadLetter(ctx, msg, reason); err != nil {
		if !refusedForSize(err) { // a refusal of this message alone says nothing of the next
			pause := deadLetterPause << min(r.deadLetterFails.Add(1)-1, 8)
			r.deadLetterDown.Store(time.Now().Add(min(pause, deadLetterMaxPause)).UnixNano())
		}
	} else {
		r.deadLetterUp()
		return ""
	}
	r.deadLetterFailed.Add(1)
	return "; dead-letter write failed, message left at " + coordinates(msg) + ": " + err.Error()
}

// deadLetterUp records a dead-letter write that succeeded: the writer
// is tried again at once, and the next failure pauses it deadLetterPause.
func (r *Reader) deadLetterUp() {
	if r.deadLetterDown.Load() != 0 {
		r.deadLetterDown.Store(0)
	}
	if r.deadLetterFails.Load() != 0 {
		r.deadLetterFails.Store(0)
	}
}

// refusedForSize reports whether err, from a dead-letter write of one
// message, is a refusal of that message for its size: by kafka-go (over
// the writer's BatchBytes) or by the partition (over the topic's
// max.message.bytes). The writer is healthy, and the next message may
// well be taken: an outsider's oversized message must not keep the
// others out of the dead-letter topic.
func refusedForSize(err error) bool {
	var big kafka.MessageTooLargeError
	if errors.As(err, &big) || tooLarge(err) {
		return true
	}
	var werrs kafka.WriteErrors // kafka-go's per-message errors, which do not unwrap
	if !errors.As(err, &werrs) || werrs.Count() == 0 {
		return false
	}
	for _, e := range werrs {
		if e != nil && !tooLarge(e) {
			return false
		}
	}
	return true
}

// CommitMessages commits msgs as kafka.Reader.CommitMessages does, together
// with the messages the reader skipped on the same partitions once every
// message it returned before them is committed.
//
// With synchronous commits (no CommitInterval), a commit still waiting
// for its answer when [Reader.Close] closes the group reader returns an
// error saying so, rather than waiting for ctx to end (kafka-go never
// answers it). Such a commit may or may not have been applied: the next
// member of the group reprocesses at most the messages it named.
func (r *Reader) CommitMessages(ctx context.Context, msgs ...kafka.Message) error {
	inner := r.inner.Load()
	if inner == nil {
		if len(msgs) == 0 {
			return nil
		}
		r.startMu.Lock()
		closed := r.closed
		r.startMu.Unlock()
		if closed {
			return errors.New("kafkamw: CommitMessages on a closed reader")
		}
		return fmt.Errorf("kafkamw: CommitMessages on a reader that has not fetched a message")
	}
	return r.commit(ctx, inner.CommitMessages, msgs)
}

// commit commits msgs through send, the group reader's CommitMessages,
// with the skipped messages that may ride on them (see CommitMessages).
func (r *Reader) commit(ctx context.Context, send func(context.Context, ...kafka.Message) error, msgs []kafka.Message) error {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	all := r.forward.capped(&r.ledger, r.ledger.withSkipped(msgs))
	if len(all) == 0 {
		return nil
	}
	if err := r.send(ctx, send, all); err != nil {
		return err
	}
	r.ledger.committed(all)
	return nil
}

// errClosedWhileCommitting is what a synchronous commit returns when the
// reader was closed before the commit's answer was read. kafka-go may
// have applied it (its commit loop's last drain commits what is queued
// and answers on a buffered channel, which a caller not yet scheduled
// reads after Close only half the time: TestA14pAnsweredCommitRacingClose),
// so it is not recorded as committed; the next member of the group
// starts from what the broker holds, and reprocesses at most what this
// commit named.
var errClosedWhileCommitting = errors.New("kafkamw: the reader was closed before the commit was answered; it may or may not have been applied")

// send calls the group reader's CommitMessages. With synchronous commits
// (no CommitInterval) kafka-go queues the request for its commit loop and
// waits for the answer or ctx's end, but not for Close: a request queued
// after the loop's last drain is never answered, and a caller committing
// with context.Background() waited for ever, holding commitMu and so
// every other commit (TestA14CommitRacingCloseReturns). send ends such a
// wait once Close has closed the group reader. Asynchronous commits
// return once queued, and kafka-go's own queueing watches Close.
//
// The context it waits on is kept for the next commit (r.sendCtx, under
// commitMu, which every caller of send holds): a consume loop commits
// with the same context each time, and building one per commit (a child
// of the caller's and a callback on the reader's end: six allocations)
// cost about as much CPU as kafka-go's own CommitMessages.
func (r *Reader) send(ctx context.Context, send func(context.Context, ...kafka.Message) error, msgs []kafka.Message) error {
	if r.rcfg.CommitInterval != 0 || r.gone == nil { // gone: nil in a Reader not built by NewReader (tests)
		return send(ctx, msgs...)
	}
	sctx := r.sendCtx.get(ctx, r.gone)
	err := send(sctx, msgs...)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(sctx), errClosedWhileCommitting) {
		return errClosedWhileCommitting
	}
	return err
}

// sendContext is the context a synchronous commit waits on: the caller's,
// ended also once the reader is gone (with errClosedWhileCommitting as
// its cause), kept from commit to commit.
//
// It is reused for a caller's context that ends with the one it was built
// from: the same Done channel, so the same end and the same error (a
// context with values added over the previous one, or any context that
// never ends). kafka-go's CommitMessages reads nothing of its context but
// its end. It holds the caller's context (and its values) until a commit
// with another one, or Close, releases it.
type sendContext struct {
	done   <-chan struct{} // the Done of the caller's context ctx was built from
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool // removes the callback on the reader's end
}

// get returns the context a commit made with ctx waits on, gone being the
// reader's end. The reader's commitMu is held.
func (c *sendContext) get(ctx, gone context.Context) context.Context {
	done := ctx.Done()
	if c.ctx != nil && c.done == done && c.ctx.Err() == nil {
		return c.ctx
	}
	c.release()
	sctx, cancel := context.WithCancelCause(ctx)
	c.done, c.ctx, c.cancel = done, sctx, cancel
	c.stop = context.AfterFunc(gone, func() { cancel(errClosedWhileCommitting) })
	return sctx
}

// release drops the kept context, detaching it from the caller's context
// and from the reader's end. The reader's commitMu is held.
func (c *sendContext) release() {
	if c.ctx == nil {
		return
	}
	c.stop()
	c.cancel(nil)
	*c = sendContext{}
}

// flushSkipped commits the skipped messages that no returned message waits
// before.
func (r *Reader) flushSkipped(ctx context.Context, inner *kafka.Reader) error {
	// Copies are written even when there is nothing to commit: the
	// sandbox's reader waits for them. The write is not under commitMu:
	// a hung sandbox partition leader held every CommitMessages,
	// production's too, for forwardTimeout. Copies buffered after it
	// hold their partition back (capped): handOff buffers a copy before
	// the ledger records its message.
	if err := r.flushForwards(ctx); err != nil {
		return err
	}
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	msgs := r.forward.capped(&r.ledger, r.ledger.committable())
	if len(msgs) == 0 {
		return nil
	}
	if err := inner.CommitMessages(ctx, msgs...); err != nil {
		return err
	}
	r.ledger.committed(msgs)
	return nil
}

func (r *Reader) flushLoop(ctx context.Context, inner *kafka.Reader) {
	defer close(r.flushed)
	t := time.NewTicker(r.cfg.skipEvery)
	defer t.Stop()
	var forwards lingerFlusher // the split mode's copies, written soon after they are buffered
	defer forwards.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A failure (a rebalance, the broker away) is retried on
			// the next tick; the group reader logs its own errors.
			_ = r.flushSkipped(ctx, inner)
		case <-r.forward.kicks():
			forwards.kicked()
		case <-forwards.due():
			forwards.fired()
			_ = r.flushForwards(ctx) // a failure is retried on the next tick
		}
	}
}

// Close commits the skipped messages it can, then closes the group reader.
// FetchMessage then returns io.EOF and [Reader.Run] returns once its
// handler returns, also when the group reader had fetched messages ahead:
// none is handed out whose commit could no longer succeed.
func (r *Reader) Close() error {
	r.startMu.Lock()
	defer r.startMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.shut.Store(true)
	if r.metrics != nil {
		r.metrics.Unregister()
	}
	defer r.forward.close()
	inner := r.inner.Load()
	if inner == nil {
		return nil
	}
	r.stop()
	<-r.flushed
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ferr := r.flushSkipped(ctx, inner)
	err := inner.Close()
	// kafka-go's closed reader still hands out the messages it fetched
	// ahead: FetchMessage, and Run, load r.inner for each call and find
	// none, and a call in progress checks r.shut before each message it
	// takes, so they return io.EOF rather than messages whose commits
	// cannot succeed any more (each would be handled again after the
	// restart). The group reader's statistics stay readable.
	r.closedInner = inner
	r.inner.Store(nil)
	if r.markGone != nil {
		r.markGone()
	}
	r.commitMu.Lock()
	r.sendCtx.release() // the caller's context, which it holds
	r.commitMu.Unlock()
	if err != nil {
		return err
	}
	if ferr != nil {
		return fmt.Errorf("kafkamw: committing skipped messages on close: %w", ferr)
	}
	return nil
}
