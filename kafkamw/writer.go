package kafkamw

import (
	"bytes"
	"context"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/egress"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Writer adds the context's sandbox to the messages it writes. Build one
// with [NewWriter]; the zero value is not usable. It is safe for concurrent
// use, as the kafka.Writer it wraps is.
type Writer struct {
	w       *kafka.Writer
	codec   *propagation.Codec
	markers markers
	budget  egress.Budget // the per-sandbox budget of writes (WithBreaker); zero: none

	// last caches the encoded headers of the last sandbox written, so that
	// a stream of messages of one sandbox encodes them once.
	last atomic.Pointer[encoded]
}

type encoded struct {
	s  propagation.Sandbox
	hs []kafka.Header
}

// NewWriter returns a Writer that writes through w. A nil w, or an
// option given an impossible value, is an error wrapping [ErrConfig];
// nil options are skipped.
func NewWriter(w *kafka.Writer, opts ...WriterOption) (*Writer, error) {
	cfg, err := newWriterConfig(w, opts)
	if err != nil {
		return nil, err
	}
	return &Writer{w: w, codec: cfg.codec, markers: newMarkers(cfg.codec), budget: egress.New(cfg.breaker, cfg.logger, audit.Kafka)}, nil
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
// keeps its other members and gains ours (several baggage headers are
// folded into one, as W3C baggage allows). A message that already names a
// sandbox keeps its headers when that is the context's sandbox; when it is
// another one, or its markers cannot be read, nothing is written and the
// error wraps [ErrConflict].
//
// Without a sandbox in ctx the messages are written as they are, without
// copying or allocating.
//
// Each copy has a header list of its own; the values of our headers are
// shared by the copies of a sandbox, so code that kafka-go hands copies to
// (a Balancer, a Completion callback) must not write into header values.
// The header lists of the copies are never reused: even after WriteMessages
// returned nil, kafka-go's transport may still be encoding an earlier
// attempt of the same batch that timed out and was retried. The slices of
// messages are: kafka-go copies each message into its batches by value and
// keeps nothing of the slice it is given (its WriteMessages leaks the
// content of its argument, never the argument itself).
func (w *Writer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		if w.budget.Covers(false) {
			return w.budgeted(ctx, s, msgs)
		}
		return w.w.WriteMessages(ctx, msgs...)
	}
	var one [1]kafka.Message // the copy of a single message: it stays on the stack
	out, held, err := w.decorate(s, msgs, &one)
	if err != nil {
		return err
	}
	if w.budget.Active() {
		err = w.budgeted(ctx, s, out)
	} else {
		err = w.w.WriteMessages(ctx, out...)
	}
	putBatch(held)
	return err
}

// budgeted writes msgs under the budget of sandbox s (the zero Sandbox for
// baseline writes).
func (w *Writer) budgeted(ctx context.Context, s propagation.Sandbox, msgs []kafka.Message) error {
	done, err := w.budget.Allow(ctx, s, w.w.Topic, nil)
	if err != nil {
		return fmt.Errorf("kafkamw: write to %s refused: %w", w.topic(), err)
	}
	// The group counts an error wrapping context.Canceled (kafka-go
	// returns ctx.Err() when the caller gives up) as neither a success nor
	// a failure; a batch that failed is a failure, whatever became of ctx.
	err = w.w.WriteMessages(ctx, msgs...)
	done(err)
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

// A single message's merged headers and baggage value in one allocation,
// for the caller's baggage header alone or with one other header.
type (
	merge2 struct {
		h   [2]kafka.Header
		buf [mergeRoom]byte
	}
	merge3 struct {
		h   [3]kafka.Header
		buf [mergeRoom]byte
	}
)

// decorate returns copies of msgs carrying s. The copies share the caller's
// keys, values and header values (none of which is changed), and the
// encoded marker values, which nobody changes. Each copy has a header list
// of its own, never shared: kafka-go hands messages back to the caller (to
// a Balancer, a Completion callback, in a MessageTooLargeError), where an
// edit must not reach other messages. The copy of a single message is
// *one; the copies of several are in *held, from the pool, for [putBatch]
// once the write returned (held is nil when not pooled). Header lists are
// allocated, once per write, and never reused.
func (w *Writer) decorate(s propagation.Sandbox, msgs []kafka.Message, one *[1]kafka.Message) (out []kafka.Message, held *[]kafka.Message, err error) {
	if len(msgs) == 0 {
		return msgs, nil, nil
	}
	enc := w.encode(s)
	if len(msgs) == 1 {
		one[0] = msgs[0]
		if err := w.decorateOne(s, &one[0], enc); err != nil {
			return nil, nil, fmt.Errorf("%w: message 0 %w", ErrConflict, err)
		}
		return one[:], nil, nil
	}
	out, held = getBatch(len(msgs))
	n := 0
	for i := range msgs {
		n += len(msgs[i].Headers) + len(enc)
	}
	hs := make([]kafka.Header, 0, n)
	for i := range msgs {
		m := &out[i]
		*m = msgs[i]
		st := w.markers.scan(m.Headers)
		if st == lookalike {
			putBatch(held)
			return nil, nil, fmt.Errorf("%w: message %d %w", ErrConflict, i, errLookalike)
		}
		if st != hasMarkers && hasOTHeader(m.Headers) {
			w.injectAll(s, m, enc)
			continue
		}
		switch st {
		case noMarkers:
			start := len(hs)
			hs = append(hs, m.Headers...)
			hs = append(hs, enc...)
			m.Headers = hs[start:len(hs):len(hs)]
		case bagOnly:
			// Merge into the caller's baggage, keeping its members.
			start := len(hs)
			hs = mergeBaggage(hs, m.Headers, enc, nil)
			m.Headers = hs[start:len(hs):len(hs)]
		case hasMarkers:
			if err := w.tagged(s, m, enc); err != nil {
				putBatch(held)
				return nil, nil, fmt.Errorf("%w: message %d %w", ErrConflict, i, err)
			}
		}
	}
	return out, held, nil
}

// decorateOne adds s to m, a copy of the caller's message, allocating its
// header list (and a merged baggage value with it).
func (w *Writer) decorateOne(s propagation.Sandbox, m *kafka.Message, enc []kafka.Header) error {
	st := w.markers.scan(m.Headers)
	if st == lookalike {
		return errLookalike
	}
	if st != hasMarkers && hasOTHeader(m.Headers) {
		w.injectAll(s, m, enc)
		return nil
	}
	switch st {
	case noMarkers:
		hs := make([]kafka.Header, 0, len(m.Headers)+len(enc))
		hs = append(hs, m.Headers...)
		m.Headers = append(hs, enc...)
	case bagOnly:
		var (
			hs  []kafka.Header
			buf []byte
		)
		// mergeBaggage appends at most len(m.Headers)+1 headers.
		switch len(m.Headers) {
		case 1:
			b := new(merge2)
			hs, buf = b.h[:0], b.buf[:0]
		case 2:
			b := new(merge3)
			hs, buf = b.h[:0], b.buf[:0]
		default:
			hs = make([]kafka.Header, 0, len(m.Headers)+1)
		}
		hs = mergeBaggage(hs, m.Headers, enc, buf)
		m.Headers = hs[:len(hs):len(hs)]
	case hasMarkers:
		return w.tagged(s, m, enc)
	}
	return nil
}

// tagged handles m, a copy of the caller's message whose headers may
// already name a sandbox: kept as they are (in a list of their own) when
// they name s, an error when
// they name another sandbox or cannot be read, and merged into as for
// bagOnly when the baggage only mentions a key of ours inside another
// member.
func (w *Writer) tagged(s propagation.Sandbox, m *kafka.Message, enc []kafka.Header) error {
	got, err := w.codec.Read(&carrier{list: m.Headers})
	switch {
	case err != nil:
		return fmt.Errorf("has unreadable sandbox headers: %w", err)
	case got.Found && got.Sandbox.ID != s.ID:
		return fmt.Errorf("is tagged for sandbox %q, the context for %q", got.Sandbox.ID, s.ID)
	case got.Found && hasOTHeader(m.Headers):
		// Written again, in OpenTracing's form too (see hasOTHeader).
		c := carrier{list: slices.Clone(m.Headers)}
		w.codec.InjectSandbox(got.Sandbox, &c)
		m.Headers = c.list
	case got.Found:
		m.Headers = slices.Clone(m.Headers) // the caller's, in a list of its own
		if got.Ticket != "" {
			// A ticket is an edge credential (propagation.Codec.Inject
			// replaces it too): the caller copied a request's baggage.
			m.Headers = withoutTicket(w.codec, m.Headers)
		}
	default:
		c := carrier{list: append(make([]kafka.Header, 0, len(m.Headers)+len(enc)), m.Headers...)}
		w.codec.InjectSandbox(s, &c)
		m.Headers = c.list
	}
	return nil
}

// maxPooledBatch is the largest batch whose message slice is pooled.
const maxPooledBatch = 1 << 12

// batches[k] pools the message slices, of capacity 1<<k, of multi-message
// writes.
var batches [bits.UintSize]sync.Pool

// getBatch returns a zeroed slice of n messages and, when it is pooled, the
// pointer to hand to [putBatch].
func getBatch(n int) ([]kafka.Message, *[]kafka.Message) {
	if n > maxPooledBatch {
		return make([]kafka.Message, n), nil
	}
	k := bits.Len(uint(n - 1))
	p, _ := batches[k].Get().(*[]kafka.Message)
	if p == nil {
		s := make([]kafka.Message, 1<<k)
		p = &s
	}
	return (*p)[:n], p
}

// putBatch clears a slice from [getBatch] and returns it to its pool. p may
// be nil.
func putBatch(p *[]kafka.Message) {
	if p == nil {
		return
	}
	clear(*p)
	batches[bits.Len(uint(len(*p)-1))].Put(p)
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

// hasOTHeader reports whether hs holds a header in OpenTracing's baggage
// form (ot-baggage-<key>, any case), which a producer's OpenTelemetry
// ottrace propagator writes for every member of its context's baggage. A
// consumer running ottrace replaces its baggage with those members: the
// record must carry the sandbox in that form too
// ([propagation.Codec.InjectSandbox] writes it there on such a list), or
// that consumer goes on as production.
func hasOTHeader(hs []kafka.Header) bool {
	const prefix = "ot-baggage-"
	for _, h := range hs {
		if len(h.Key) > len(prefix) && strings.EqualFold(h.Key[:len(prefix)], prefix) {
			return true
		}
	}
	return false
}

// injectAll writes s into a copy of m's headers, merged with them, in
// every form InjectSandbox writes on that list.
func (w *Writer) injectAll(s propagation.Sandbox, m *kafka.Message, enc []kafka.Header) {
	c := carrier{list: append(make([]kafka.Header, 0, len(m.Headers)+len(enc)+3), m.Headers...)}
	w.codec.InjectSandbox(s, &c)
	m.Headers = c.list
}
