package kafkamw

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// The split mode's forwarder: what the baseline reader does with each
// message a sandbox's reader owns (see split.go), from buffering its copy
// to committing the original once the broker has acknowledged the copy.

// forwarder is the baseline reader's half of the split mode. A nil
// forwarder is the filter mode: a message a sandbox's reader owns is left
// in the topic, which that reader reads too.
//
// Forwards are batched: [Reader.handOff] adds the copy to a buffer, and
// the buffer is written, and acknowledged by all in-sync replicas, by the
// reader's flush loop forwardLinger after the first copy it holds, and no
// sooner than forwardGap after its previous write (see [forwarder.kicks]),
// by the periodic flush (and Close), and when it is
// full. Every commit
// stops short of the first message of its partition whose copy is still
// buffered ([forwarder.capped]); the flush commits the rest once the
// copies are written. No offset is committed past a message whose copy is
// not acknowledged; a crash loses only copies of uncommitted messages,
// which the next reader forwards again.
type forwarder struct {
	split  Split
	group  string
	client *kafka.Client // creates the sandboxes' topics and writes the copies

	// adminMu serializes the creations of sandbox topics (and the
	// describes and raises around them), held over their requests: not
	// mu, which every commit takes (capped) and which a hung controller
	// held for a forwardTimeout. Held before mu, never with flushMu
	// taken after it.
	adminMu sync.Mutex
	parts   map[string]int // partition counts of the source topics; under adminMu

	mu    sync.Mutex
	names map[sandboxTopic]string  // sandbox topics created (or found) by this reader, by source topic and sandbox
	buf   []kafka.Message          // copies not yet written, in fetch order
	src   []topicPartitionOffset   // the source of each copy in buf
	first map[topicPartition]int64 // the lowest source offset in buf, by source partition
	// holding is len(first) > 0, stored under mu, for [forwarder.capped]
	// to read without mu: a split-mode baseline reader with nothing to
	// forward then commits as the filter mode's does.
	holding atomic.Bool

	flushMu sync.Mutex // one flush at a time; held before mu
	// alone holds, by source coordinates, the buffered copies that were
	// in a record set of several the broker refused as too large: each is
	// written in a record set of its own, so that only a copy too large
	// by itself is given up. Under flushMu.
	alone map[topicPartitionOffset]struct{}
	// raisedFor holds, by source coordinates, the buffered copies
	// refused as too large after which the topic's limit was raised
	// ([forwarder.raise]): refused again, such a copy is given up, not
	// kept after another raise (a broker that answers a raise but keeps
	// the limit held its partition for ever). Under flushMu.
	raisedFor map[topicPartitionOffset]struct{}
	// records is the array of the records a write produces, kept for the
	// next ([forwarder.write]). Under flushMu.
	records []kafka.Record

	// arena holds the copies' header lists and source headers, and
	// topicNames the values of their HeaderSplitTopic, under the
	// reader's fetch lock (handOff).
	arena      copyArena
	topicNames map[string][]byte
	// tagTopic is whether copies carry HeaderSplitTopic: the topic's or
	// the group's name has a dot.
	tagTopic bool

	// kick tells the reader's flush loop that copies are buffered: it
	// writes them forwardLinger later (or forwardGap after its previous
	// write), with those buffered meanwhile.
	kick chan struct{}
}

// copyArena hands out the header lists and [HeaderSplitSource] values of
// copies from chunks shared by many copies: two allocations per copy
// were about half of what [Reader.handOff] cost in a profile. A chunk is
// never handed out twice; it is collected once no copy refers to it. The
// zero value is ready.
type copyArena struct {
	hs []kafka.Header
	bs []byte
}

// copyArenaChunk is how many headers, and how many bytes, a chunk holds.
const copyArenaChunk = 1024

// headers returns an empty slice with room for n headers; appending up to
// n headers to it does not touch any other slice it returned.
func (a *copyArena) headers(n int) []kafka.Header {
	if cap(a.hs)-len(a.hs) < n {
		if n > copyArenaChunk/4 {
			return make([]kafka.Header, 0, n)
		}
		a.hs = make([]kafka.Header, 0, copyArenaChunk)
	}
	l := len(a.hs)
	a.hs = a.hs[:l+n]
	return a.hs[l : l : l+n]
}

// bytes returns an empty slice with room for n bytes, as headers does.
func (a *copyArena) bytes(n int) []byte {
	if cap(a.bs)-len(a.bs) < n {
		a.bs = make([]byte, 0, copyArenaChunk*32)
	}
	l := len(a.bs)
	a.bs = a.bs[:l+n]
	return a.bs[l : l : l+n]
}

// sandboxTopic names a sandbox's topic by its source topic and sandbox.
type sandboxTopic struct{ source, sandbox string }

// forwardLinger is how long the flush loop lets copies gather after the
// first one is buffered before it writes them: the latency a forward adds
// to a sandbox's messages, against a produce request (per partition
// leader) per write and a fetch per sandbox partition that receives
// copies. Without it the copies waited for the skip-commit interval (a
// second by default).
const forwardLinger = 10 * time.Millisecond

// forwardGap is the least time between the starts of two writes of the
// flush loop: a sandbox's lone message is written forwardLinger after it
// is buffered, but a busy topic's copies at most every forwardGap. Each
// write wakes a fetch on every sandbox partition it reaches (3 × 16 for
// 16 sandboxes on a topic of three partitions), and those fetches, not
// the copies, were most of what the split mode cost beyond the plain
// reader in BenchmarkSandboxes/steady at forwardGap = forwardLinger
// (about 420 sandbox fetches per pass of 20,000 messages, 170 at 50ms).
const forwardGap = 50 * time.Millisecond

// maxBuffered is how many copies the forwarder buffers before it writes
// them in the fetch path: above what a forwardGap gathers from most
// topics, so that the writes keep to the flush loop's pace.
const maxBuffered = 4000

func newForwarder(s Split, rcfg kafka.ReaderConfig) *forwarder {
	tr := transport(rcfg.Dialer)
	return &forwarder{
		split:     s,
		group:     rcfg.GroupID,
		tagTopic:  strings.Contains(rcfg.Topic, ".") || strings.Contains(rcfg.GroupID, "."),
		client:    &kafka.Client{Addr: kafka.TCP(rcfg.Brokers...), Transport: tr},
		names:     make(map[sandboxTopic]string),
		parts:     make(map[string]int),
		first:     make(map[topicPartition]int64),
		alone:     make(map[topicPartitionOffset]struct{}),
		raisedFor: make(map[topicPartitionOffset]struct{}),
		kick:      make(chan struct{}, 1),
	}
}

// topicPartitionOffset is a message's coordinates.
type topicPartitionOffset struct {
	topicPartition
	offset int64
}

// capped holds back the commits of msgs (see [ledger.capped]) before the
// first message of each partition whose copy is buffered, not yet
// written. A nil f (the filter mode) holds nothing back.
func (f *forwarder) capped(l *ledger, msgs []kafka.Message) []kafka.Message {
	// Without mu when nothing is buffered. handOff stores holding before
	// the ledger records the message whose copy it buffered, so a commit
	// that read that message's offset from the ledger (or was given a
	// message fetched after it) finds holding set, unless a flush has
	// written the copy since.
	if f == nil || len(msgs) == 0 || !f.holding.Load() {
		return msgs
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.first) == 0 {
		return msgs
	}
	return l.capped(msgs, func(topic string, partition int) (int64, bool) {
		o, ok := f.first[topicPartition{topic, partition}]
		return o, ok
	})
}

func (f *forwarder) close() error {
	if f == nil {
		return nil
	}
	if tr, ok := f.client.Transport.(*kafka.Transport); ok {
		tr.CloseIdleConnections()
	}
	return nil
}

// flush writes the buffered copies and waits for the broker's
// acknowledgement; on failure the copies of the partitions that did not
// acknowledge theirs stay buffered, in order, for the next flush. A copy
// the broker refused as too large, alone in its record set, stays
// buffered too when the topic's limit could be raised again ([forwarder.raise]:
// lowered since the forwarder met it); otherwise no write can
// deliver it: it is handed to giveUp (the source message rebuilt, its
// sandbox, and the refusal) and removed from the buffer once giveUp has
// returned, so that its source offset can be committed and it holds
// nothing back, production's messages included. It returns how many it
// wrote. A nil f has nothing to flush.
func (f *forwarder) flush(ctx context.Context, giveUp func(msg *kafka.Message, sandbox string, err error)) (int, error) {
	if f == nil {
		return 0, nil
	}
	f.flushMu.Lock()
	defer f.flushMu.Unlock()
	f.mu.Lock()
	batch := f.buf[:len(f.buf):len(f.buf)] // appends after this go elsewhere
	srcs := f.src[:len(f.src):len(f.src)]
	f.mu.Unlock()
	if len(batch) == 0 {
		return 0, nil
	}
	// A write in progress finishes (within forwardTimeout) when ctx ends,
	// so that a clean shutdown's commit finds the copies acknowledged.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), forwardTimeout)
	defer cancel()
	out, err := f.write(wctx, batch, srcs)
	written, refused, kept := 0, 0, 0
	raised := make(map[string]bool) // by sandbox topic, whether this flush raised its limit
	for i, o := range out {
		if _, again := f.raisedFor[srcs[i]]; o.refused != nil && !again {
			r, asked := raised[batch[i].Topic]
			if !asked {
				r = f.raise(wctx, batch[i].Topic, srcs[i].topic)
				raised[batch[i].Topic] = r
			}
			if r {
				// Lowered since this forwarder met the topic (an
				// operator, a policy putting the default back): raised
				// again, the copy is written on the next flush, once. A
				// limit the broker will not raise, or that is raised
				// already, gives the copy up as before.
				f.raisedFor[srcs[i]] = struct{}{}
				out[i].refused = nil
				kept++
				continue
			}
		}
		switch {
		case o.written:
			written++
		case o.refused != nil:
			// Accounted for (dead-lettered, audited) before it leaves
			// the buffer: no commit passes it before then.
			refused++
			msg, sandbox := f.source(&batch[i], srcs[i])
			giveUp(&msg, sandbox, o.refused)
		default:
			continue
		}
		delete(f.alone, srcs[i])
		delete(f.raisedFor, srcs[i])
	}
	if err != nil || refused > 0 || kept > 0 {
		// The copies the broker acknowledged go, and only the others are
		// written again: a second copy would be processed again by a
		// sandbox reader restarted in between (its marks start empty).
		f.drop(len(out), func(i int) bool { return out[i].written || out[i].refused != nil })
		if kept > 0 {
			select { // the kept copies are written soon, not at the next tick
			case f.kick <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return written, fmt.Errorf("%w: %d messages: %w", ErrForward, len(batch)-written-refused, err)
		}
		return written, nil
	}
	f.mu.Lock()
	// The copies buffered during the write move to the front, in the
	// same arrays: a buffer grown once is not grown again on every flush
	// (copying kafka.Messages was half of what a forward cost the fetch
	// path). The write is done with batch.
	n := copy(f.buf, f.buf[len(batch):])
	clear(f.buf[n:]) // the written copies' keys, values and headers
	f.buf = f.buf[:n]
	f.src = f.src[:copy(f.src, f.src[len(batch):])]
	f.firsts()
	f.mu.Unlock()
	return len(batch), nil
}

// source rebuilds the source message of c, a buffered copy of the message
// at src, for its dead letter and audit record, and names its sandbox.
func (f *forwarder) source(c *kafka.Message, src topicPartitionOffset) (kafka.Message, string) {
	hs := c.Headers
	if n := len(hs); n > 0 && hs[n-1].Key == HeaderSplitSource {
		hs = hs[: n-1 : n-1] // the one handOff added
	}
	if n := len(hs); n > 0 && hs[n-1].Key == HeaderSplitTopic {
		hs = hs[: n-1 : n-1] // and the one before it
	}
	msg := kafka.Message{Topic: src.topic, Partition: src.partition, Offset: src.offset,
		Key: c.Key, Value: c.Value, Headers: hs, Time: c.Time}
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, name := range f.names {
		if name == c.Topic {
			return msg, key.sandbox
		}
	}
	return msg, ""
}

// drop removes from the buffer those of its first n copies that done
// reports written or given up, keeping the rest in order.
func (f *forwarder) drop(n int, done func(i int) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := 0
	for i := range f.buf {
		if i < n && done(i) {
			continue
		}
		f.buf[k], f.src[k] = f.buf[i], f.src[i]
		k++
	}
	clear(f.buf[k:])
	f.buf, f.src = f.buf[:k], f.src[:k]
	f.firsts()
}

// firsts recomputes f.first from f.src. f.mu is held.
func (f *forwarder) firsts() {
	clear(f.first)
	for _, c := range f.src {
		if _, ok := f.first[c.topicPartition]; !ok {
			f.first[c.topicPartition] = c.offset
		}
	}
	f.holding.Store(len(f.first) > 0)
}

// kicks returns the channel on which the forwarder asks for a flush: a
// receive means copies are buffered. nil (never ready) for a nil f.
func (f *forwarder) kicks() <-chan struct{} {
	if f == nil {
		return nil
	}
	return f.kick
}

// lingerFlusher writes a forwarder's copies forwardLinger after it is
// kicked, and no sooner than forwardGap after the previous write it
// started, for the reader's flush loop. The zero value is ready.
type lingerFlusher struct {
	t     *time.Timer
	armed <-chan time.Time // t.C while a write is due, else nil
	last  time.Time        // when the last write was started
}

// kicked arms the timer unless a write is already due: copies buffered
// meanwhile go with that write.
func (l *lingerFlusher) kicked() {
	if l.armed != nil {
		return
	}
	d := max(forwardLinger, time.Until(l.last.Add(forwardGap)))
	if l.t == nil {
		l.t = time.NewTimer(d)
	} else {
		l.t.Reset(d)
	}
	l.armed = l.t.C
}

// due returns the channel that fires when the write is due; nil (never
// ready) when none is.
func (l *lingerFlusher) due() <-chan time.Time { return l.armed }

// fired records that the due write is being done.
func (l *lingerFlusher) fired() { l.armed, l.last = nil, time.Now() }

// stop releases the timer.
func (l *lingerFlusher) stop() {
	if l.t != nil {
		l.t.Stop()
	}
}

// flushForwards writes the forwarder's buffer, counting what it wrote. A
// copy the broker refused as too large, alone in its record set, is
// accounted for as an unforwardable message ([Reader.unforwardable]:
// skipped, dead-lettered when a dead-letter writer is set, counted,
// audited) and its source offset committed past: a sandbox's message
// must never hold production's behind it. A ctx already ended starts no
// write: the reader's flush loop, stopping, finds its tick ready too
// after a write that took long (a hung partition leader) and picks it at
// random, half the time, over its end; each such pick cost Close another
// forwardTimeout.
func (r *Reader) flushForwards(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := r.forward.flush(ctx, func(msg *kafka.Message, sandbox string, err error) {
		r.unforwardable(ctx, msg, sandbox, err)
	})
	r.forwarded.Add(int64(n))
	return err
}

// forwardTimeout bounds a flush, and a topic creation.
const forwardTimeout = 10 * time.Second

// handOff forwards msg, owned by sandbox's reader, to the sandbox's topic:
// it buffers a copy (see [forwarder]), after creating the topic if this
// reader has not met it before. An error wrapping [ErrForward] (the topic
// could not be created, or a full buffer could not be written) keeps the
// message, decided and forwarded again on the next fetch. A sandbox whose
// topic name is not valid has no reader in the split mode: its message is
// skipped, dead-lettered when a dead-letter writer is set, counted as
// Unforwardable and audited, as an orphan is; so is, once the flush has
// found it out, a message whose copy the broker refuses as too large
// ([Reader.flushForwards]). A nil forwarder (the filter mode) leaves the
// message to the sandbox's reader; that check is inlined into the caller,
// so that the filter mode pays no call for each message a sandbox owns.
func (r *Reader) handOff(ctx context.Context, msg *kafka.Message, sandbox string) error {
	if r.forward == nil {
		return nil
	}
	return r.forwardCopy(ctx, msg, sandbox)
}

// forwardCopy is handOff in the split mode.
func (r *Reader) forwardCopy(ctx context.Context, msg *kafka.Message, sandbox string) error {
	f := r.forward
	key := sandboxTopic{msg.Topic, sandbox}
	f.mu.Lock()
	name, ready := f.names[key]
	full := len(f.buf) >= maxBuffered
	f.mu.Unlock()
	if !ready {
		var err error
		if name, err = SplitTopic(msg.Topic, f.group, sandbox); err != nil {
			r.unforwardable(ctx, msg, sandbox, err)
			return nil
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), forwardTimeout)
		err = f.ensure(wctx, key, name)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: message %s: creating %s: %w", ErrForward, coordinates(msg), name, err)
		}
	}
	if full {
		if err := r.flushForwards(ctx); err != nil {
			return fmt.Errorf("message %s: %w", coordinates(msg), err)
		}
	}
	// A source header the message already carries (a service produced
	// it from a forwarded copy, headers and all) is not this copy's: the
	// sandbox's reader would take it for the copy's coordinates and skip
	// a new message as a second copy.
	room := len(msg.Headers) + 1 // and HeaderSplitSource
	if f.tagTopic {
		room++ // and HeaderSplitTopic
	}
	hs := f.arena.headers(room)
	for _, h := range msg.Headers {
		if h.Key != HeaderSplitSource && h.Key != HeaderSplitTopic {
			hs = append(hs, h)
		}
	}
	if f.tagTopic {
		hs = append(hs, kafka.Header{Key: HeaderSplitTopic, Value: f.topicName(msg.Topic)})
	}
	v := f.arena.bytes(2 * 20)
	v = strconv.AppendInt(v, int64(msg.Partition), 10)
	v = strconv.AppendInt(append(v, '/'), msg.Offset, 10)
	hs = append(hs, kafka.Header{Key: HeaderSplitSource, Value: v})
	if mayHoldTicket(hs, r.ticketKey) {
		hs = withoutTicket(r.cfg.codec, hs) // a credential, not the sandbox's
	}
	src := topicPartitionOffset{topicPartition{msg.Topic, msg.Partition}, msg.Offset}
	f.mu.Lock()
	f.buf = append(f.buf, kafka.Message{Topic: name, Partition: msg.Partition, Key: msg.Key, Value: msg.Value, Headers: hs, Time: msg.Time})
	f.src = append(f.src, src)
	if _, ok := f.first[src.topicPartition]; !ok {
		f.first[src.topicPartition] = src.offset
	}
	f.holding.Store(true)
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default: // a flush is asked for already
	}
	return nil
}

// topicName returns topic's name as the value of a [HeaderSplitTopic]
// header, one slice per source topic shared by all its copies (which
// nothing writes to). Under the fetch lock, as handOff.
func (f *forwarder) topicName(topic string) []byte {
	if b, ok := f.topicNames[topic]; ok {
		return b
	}
	if f.topicNames == nil {
		f.topicNames = make(map[string][]byte)
	}
	b := []byte(topic)
	f.topicNames[topic] = b
	return b
}

// unforwardable accounts for a message of a sandbox whose split topic
// cannot be named, or whose copy that topic refuses as too large: no
// reader can read it, so no one owns it.
func (r *Reader) unforwardable(ctx context.Context, msg *kafka.Message, sandbox string, err error) {
	reason := "message of sandbox " + sandbox + " cannot be forwarded in the split mode: " + err.Error()
	dl := r.deadLetterOrSkip(ctx, msg, reason)
	r.unforwardables.Add(1)
	r.gate.Record(ctx, audit.Event{
		Decision: audit.Rejected, Sandbox: propagation.Sandbox{ID: sandbox}, Peer: r.group, Target: msg.Topic,
		Reason: reason + ", skipped" + dl,
	})
}
