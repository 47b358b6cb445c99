package kafkamw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
// On a synchronous kafka.Writer (Async false, no Completion callback) the
// copy of a one-message write is reused once the write has returned nil,
// when kafka-go holds nothing of it any more; after an error, a cancelled
// context included, it is left to the garbage collector, since kafka-go
// may still be sending it. A custom Balancer must therefore not keep the
// messages it is given beyond the call, which no kafka-go balancer does.
func (w *Writer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		if w.baseline {
			return w.budgeted(ctx, s, msgs)
		}
		return w.w.WriteMessages(ctx, msgs...)
	}
	reuse := w.reusable()
	out, one, err := w.decorate(s, msgs, reuse)
	if err != nil {
		return err
	}
	if w.breaker != nil {
		err = w.budgeted(ctx, s, out)
	} else {
		err = w.w.WriteMessages(ctx, out...)
	}
	if err == nil && reuse {
		// A synchronous write that succeeded has been sent: kafka-go
		// keeps nothing of it (it asks callers to leave a message's bytes
		// alone only after a write it returned from early).
		release(one)
	}
	return err
}

// reusable reports whether the copies of a successful write can be reused:
// the writer is synchronous and hands no messages to a Completion
// callback, which could keep them.
func (w *Writer) reusable() bool { return !w.w.Async && w.w.Completion == nil }

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

// single is the copy of a one-message write, with room for its headers:
// one allocation, or none when a pooled one is reused.
type single struct {
	m [1]kafka.Message
	h [singleHeaders]kafka.Header
}

const singleHeaders = 4

var singles = sync.Pool{New: func() any { return new(single) }}

// release returns a single-message copy to the pool, cleared so that it
// keeps nothing of the caller's message alive. one may be nil.
func release(one *single) {
	if one == nil {
		return
	}
	*one = single{}
	singles.Put(one)
}

// decorate returns copies of msgs carrying s. The copies share the caller's
// keys, values and header values (none of which is changed), and the
// encoded marker values, which nobody changes. A single message with few
// headers is copied into a [single], taken from the pool when reuse is set
// and returned as one for [Writer.release]; other writes return a nil one.
func (w *Writer) decorate(s propagation.Sandbox, msgs []kafka.Message, reuse bool) (out []kafka.Message, one *single, err error) {
	if len(msgs) == 0 {
		return msgs, nil, nil
	}
	enc := w.encode(s)
	var hs []kafka.Header
	if len(msgs) == 1 && len(msgs[0].Headers)+len(enc) <= singleHeaders {
		if reuse {
			one = singles.Get().(*single)
		} else {
			one = new(single)
		}
		out, hs = one.m[:], one.h[:0]
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
			hs = mergeBaggage(hs, m.Headers, enc)
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
// into it, and the dedicated header comes last. It allocates the merged
// value only, and appends at most len(headers)+1 headers.
func mergeBaggage(hs, headers, enc []kafka.Header) []kafka.Header {
	var ours []byte
	for _, h := range enc {
		if h.Key == baggageKey {
			ours = h.Value
		}
	}
	n := len(ours)
	for _, h := range headers {
		if strings.EqualFold(h.Key, baggageKey) {
			n += 1 + len(h.Value)
		}
	}
	merged := append(make([]byte, 0, n), ours...)
	for _, h := range headers {
		if !strings.EqualFold(h.Key, baggageKey) {
			continue
		}
		for v := h.Value; len(v) > 0; {
			member := v
			if i := bytes.IndexByte(v, ','); i >= 0 {
				member, v = v[:i], v[i+1:]
			} else {
				v = nil
			}
			member = bytes.Trim(member, " \t")
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
		if !strings.EqualFold(h.Key, baggageKey) {
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
