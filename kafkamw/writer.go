package kafkamw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Writer adds the context's sandbox to the messages it writes. Build one
// with [NewWriter]; the zero value is not usable. It is safe for concurrent
// use, as the kafka.Writer it wraps is.
type Writer struct {
	w       *kafka.Writer
	codec   *propagation.Codec
	markers markers
	logger  *slog.Logger

	breaker  *breaker.Group
	baseline bool // breaker budgets writes without a sandbox too

	// last caches the encoded headers of the last sandbox written, so that
	// a stream of messages of one sandbox encodes them once.
	last atomic.Pointer[encoded]
}

type encoded struct {
	s  propagation.Sandbox
	hs []kafka.Header
}

// NewWriter returns a Writer that writes through w. Of the options
// [WithCodec], [WithBreaker] and [WithLogger] apply.
func NewWriter(w *kafka.Writer, opts ...Option) *Writer {
	cfg := newConfig(opts)
	wr := &Writer{w: w, codec: cfg.codec, markers: newMarkers(cfg.codec), logger: cfg.logger, breaker: cfg.breaker}
	if wr.breaker != nil {
		wr.baseline = wr.breaker.GuardsBaseline()
	}
	return wr
}

// Unwrap returns the kafka.Writer that w writes through.
func (w *Writer) Unwrap() *kafka.Writer { return w.w }

// WriteMessages writes msgs as kafka.Writer.WriteMessages does, each carrying
// the context's sandbox in its record headers: the dedicated header
// (sandbox-id by default) and the sandbox's members in a baggage header,
// the same keys the HTTP and gRPC middleware use.
//
// It never changes msgs or the messages in it: with a sandbox it writes
// copies. Headers the caller set are kept; a baggage header the caller set
// keeps its other members and gains ours. A message that already names a
// sandbox keeps its headers when that is the context's sandbox; when it is
// another one, or its markers cannot be read, nothing is written and the
// error wraps [ErrConflict].
//
// Without a sandbox in ctx the messages are written as they are, without
// copying or allocating.
//
// The headers of the copies are never reused: even after WriteMessages
// returned nil, kafka-go's transport may still be encoding an earlier
// attempt of the same batch that timed out and was retried. The message
// structure of a single-message write is reused: kafka-go copies messages
// into its batches by value and keeps nothing of the slice it is given.
func (w *Writer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		if w.baseline {
			return w.budgeted(ctx, s, msgs)
		}
		return w.w.WriteMessages(ctx, msgs...)
	}
	out, one, err := w.decorate(s, msgs)
	if err != nil {
		return err
	}
	if w.breaker != nil {
		err = w.budgeted(ctx, s, out)
	} else {
		err = w.w.WriteMessages(ctx, out...)
	}
	release(one)
	return err
}

// singles holds the message arrays of single-message writes. kafka-go
// copies each message into its batch (batch.add takes it by value) and
// keeps no reference to the slice WriteMessages was given once it
// returns, whatever it returns: what it may still read later (an abandoned
// attempt, a Completion callback, a Balancer) is its own copy, which
// points at the header array, not at this one.
var singles = sync.Pool{New: func() any { return new([1]kafka.Message) }}

// release clears a single-message array and returns it to the pool. one
// may be nil.
func release(one *[1]kafka.Message) {
	if one != nil {
		*one = [1]kafka.Message{}
		singles.Put(one)
	}
}

// budgeted writes msgs under the budget of sandbox s (the zero Sandbox for
// baseline writes).
func (w *Writer) budgeted(ctx context.Context, s propagation.Sandbox, msgs []kafka.Message) error {
	done, err := w.breaker.AllowSandbox(ctx, s)
	if err != nil {
		audit.Emit(ctx, w.logger, audit.Event{
			Decision: audit.Throttled,
			Sandbox:  s,
			Protocol: audit.Kafka,
			Target:   w.w.Topic,
			Reason:   err.Error(),
		})
		return fmt.Errorf("kafkamw: write to %s refused: %w", w.topic(), err)
	}
	err = w.w.WriteMessages(ctx, msgs...)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		done(context.Canceled) // the caller gave up: not the broker's fault
	} else {
		done(err)
	}
	return err
}

func (w *Writer) topic() string {
	if w.w.Topic != "" {
		return "topic " + w.w.Topic
	}
	return "the message topics"
}

// Close closes the underlying writer, flushing pending messages.
func (w *Writer) Close() error { return w.w.Close() }

// Stats returns the underlying writer's statistics.
func (w *Writer) Stats() kafka.WriterStats { return w.w.Stats() }

// encode returns the marker headers of s, from the cache when s is the last
// sandbox encoded.
func (w *Writer) encode(s propagation.Sandbox) []kafka.Header {
	if e := w.last.Load(); e != nil && e.s == s {
		return e.hs
	}
	var c carrier
	w.codec.InjectSandbox(s, &c)
	w.last.Store(&encoded{s: s, hs: c.list})
	return c.list
}

// mergeRoom is the room a single-message copy keeps for a merged baggage
// value, so that merging into a caller's baggage costs no allocation of its
// own: our members and a few of the caller's.
const mergeRoom = 128

// decorate returns copies of msgs carrying s. The copies share the caller's
// keys, values and header values (none of which is changed), and the
// encoded marker values, which nobody changes. The copy of a single message
// with few headers lives in one, from the pool, for [release] after the
// write; its headers are allocated, once, and never reused.
func (w *Writer) decorate(s propagation.Sandbox, msgs []kafka.Message) (out []kafka.Message, one *[1]kafka.Message, err error) {
	if len(msgs) == 0 {
		return msgs, nil, nil
	}
	enc := w.encode(s)
	var (
		hs  []kafka.Header
		buf []byte // room for a merged baggage value
	)
	if n := len(msgs[0].Headers) + len(enc); len(msgs) == 1 && n <= 4 {
		one = singles.Get().(*[1]kafka.Message)
		out = one[:]
		if w.markers.scan(msgs[0].Headers) == bagOnly {
			// The headers and the merged baggage value in one allocation.
			b := new(struct {
				h   [4]kafka.Header
				buf [mergeRoom]byte
			})
			hs, buf = b.h[:0], b.buf[:0]
		} else {
			hs = make([]kafka.Header, 0, n)
		}
	} else {
		n := 0
		for i := range msgs {
			n += len(msgs[i].Headers) + len(enc)
		}
		out, hs = make([]kafka.Message, len(msgs)), make([]kafka.Header, 0, n)
	}
	for i := range msgs {
		m := &out[i]
		*m = msgs[i]
		switch w.markers.scan(m.Headers) {
		case noMarkers:
			start := len(hs)
			hs = append(hs, m.Headers...)
			hs = append(hs, enc...)
			m.Headers = hs[start:len(hs):len(hs)]
		case bagOnly:
			// Merge into the caller's baggage, keeping its members.
			start := len(hs)
			hs = mergeBaggage(hs, m.Headers, enc, buf)
			m.Headers = hs[start:len(hs):len(hs)]
		case hasMarkers:
			got, err := w.codec.Read(&carrier{list: m.Headers})
			switch {
			case err != nil:
				release(one)
				return nil, nil, fmt.Errorf("%w: message %d has unreadable sandbox headers: %w", ErrConflict, i, err)
			case got.Found && got.Sandbox.ID != s.ID:
				release(one)
				return nil, nil, fmt.Errorf("%w: message %d is tagged for sandbox %q, the context for %q", ErrConflict, i, got.Sandbox.ID, s.ID)
			case !got.Found:
				// Baggage that only mentions a key of ours inside
				// another member: merge as above.
				c := carrier{list: append(make([]kafka.Header, 0, len(m.Headers)+len(enc)), m.Headers...)}
				w.codec.InjectSandbox(s, &c)
				m.Headers = c.list
			}
			// Tagged for this sandbox already: kept as the caller set it.
		}
	}
	return out, one, nil
}

// mergeBaggage appends to hs the caller's headers with our encoded markers
// enc merged in, as [propagation.Codec.InjectSandbox] would write them,
// for headers whose baggage holds no member of ours and that have no
// dedicated header (state bagOnly): the first baggage header becomes ours
// followed by the caller's members, further baggage headers are folded
// into it, and the dedicated header comes last. The merged value goes into
// buf when it fits, and is allocated otherwise; at most len(headers)+1
// headers are appended.
func mergeBaggage(hs, headers, enc []kafka.Header, buf []byte) []kafka.Header {
	var ours []byte
	for _, h := range enc {
		if h.Key == baggageKey {
			ours = h.Value
		}
	}
	n := len(ours)
	for _, h := range headers {
		if keyIs(h.Key, baggageKey) {
			n += 1 + len(h.Value)
		}
	}
	merged := buf[:0]
	if cap(merged) < n {
		merged = make([]byte, 0, n)
	}
	merged = append(merged, ours...)
	for _, h := range headers {
		if !keyIs(h.Key, baggageKey) {
			continue
		}
		for v := h.Value; len(v) > 0; {
			member := v
			if i := bytes.IndexByte(v, ','); i >= 0 {
				member, v = v[:i], v[i+1:]
			} else {
				v = nil
			}
			member = trimOWS(member)
			if len(member) == 0 {
				continue
			}
			if len(merged) > 0 {
				merged = append(merged, ',')
			}
			merged = append(merged, member...)
		}
	}
	placed := false
	for _, h := range headers {
		if !keyIs(h.Key, baggageKey) {
			hs = append(hs, h)
		} else if !placed {
			hs = append(hs, kafka.Header{Key: baggageKey, Value: merged})
			placed = true
		}
	}
	for _, h := range enc {
		if h.Key != baggageKey {
			hs = append(hs, h)
		}
	}
	return hs
}

// trimOWS trims the spaces and tabs around a baggage member.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
