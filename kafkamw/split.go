package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The split mode ([WithSplit]). The baseline reader, which reads every
// message of the topic anyway, forwards each message a sandbox's reader
// owns to that sandbox's topic ([SplitTopic]) and commits it once the
// broker has acknowledged the copy; a sandbox reader reads its own topic
// only. Both decide each message with the same decision as in the filter
// mode ([ownerOf], [role.fate]): the split mode only changes where a
// sandbox's messages are read from.

// HeaderSplitSource is the header the baseline reader adds to each
// message it forwards in the split mode: "<partition>/<offset>" of the
// original in the source topic.
const HeaderSplitSource = "sandboxkit-split-source"

// HeaderSplitTopic is the header the baseline reader adds to each copy,
// before [HeaderSplitSource], when its topic's or group's name has a
// dot: the source topic's name. Two such sources can share a sandbox
// topic: [SplitTopic] of topic "t" and group "b.c" is that of topic "t.b"
// and group "c" (names without dots cannot meet: a sandbox ID has none).
// A sandbox reader skips the copies of another source topic's messages
// (counted as Counts.Duplicates): it processed them, and skipped its own
// copies of the same coordinates as second copies. Only then: the
// header costs each sandbox reader two allocations per copy it reads
// (BenchmarkSandboxes/steady, about 5% of a pass's).
const HeaderSplitTopic = "sandboxkit-split-topic"

// maxTopicLen is the longest topic name Kafka accepts.
const maxTopicLen = 249

// ErrForward reports a message the baseline reader could not forward to
// its sandbox's topic in the split mode (the topic could not be created,
// or the broker did not acknowledge the copy). The reader keeps the
// message and forwards it again on the next FetchMessage. A copy the
// broker refuses as too large, alone in its record set, is not kept: it
// is given up as unforwardable (see "Split mode" in the package
// documentation).
var ErrForward = errors.New("kafkamw: forwarding to the sandbox's topic failed")

// Split configures the split mode ([WithSplit]). Its zero value gives each
// sandbox's topic the source topic's partition count and the broker's
// default replication factor.
type Split struct {
	// Partitions is the partition count of each sandbox's topic; 0 for
	// the source topic's. A message of source partition p goes to
	// partition p modulo the count, so that per-key order holds. A
	// sandbox's traffic is small: 1 gives each sandbox reader one fetch
	// loop and connection instead of one per partition
	// (BenchmarkSandboxes' mode=split-1p).
	Partitions int
	// ReplicationFactor of each sandbox's topic; 0 for the broker's
	// default.
	ReplicationFactor int
}

// WithSplit turns the split mode on (see "Split mode" in the package
// documentation): on the baseline reader, forwarding the messages each
// sandbox's reader owns to the sandbox's own topic; on a sandbox reader,
// reading that topic instead of the source. The reader's ReaderConfig must
// name one Topic (not GroupTopics), and the sandbox topic's name must be a
// valid Kafka topic name ([SplitTopic]); otherwise [NewReader] returns an
// [ErrConfig] error. Off by default.
func WithSplit(s Split) ReaderOption {
	return readerOption(func(c *readerConfig) {
		if s.Partitions < 0 || s.ReplicationFactor < 0 {
			c.fail(fmt.Errorf("WithSplit: negative Partitions (%d) or ReplicationFactor (%d)", s.Partitions, s.ReplicationFactor))
			return
		}
		c.split = &s
	})
}

// SplitTopic returns the topic of sandbox id's messages of topic for the
// baseline consumer group group in the split mode:
// "<topic>.<group>.sandbox.<id>", the sandbox group's name ([SandboxGroup])
// after the topic's. It is an error, wrapping [ErrConfig], when the result
// is not a valid Kafka topic name (characters other than ASCII letters,
// digits, '.', '_' and '-', or longer than 249): such a sandbox cannot be
// split, and its messages are not forwarded anywhere else.
func SplitTopic(topic, group, id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", fmt.Errorf("%w: split topic: %w", ErrConfig, err)
	}
	name := topic + "." + SandboxGroup(group, id)
	if err := validTopic(name); err != nil {
		return "", fmt.Errorf("%w: split topic of %q for group %q and sandbox %q: %w", ErrConfig, topic, group, id, err)
	}
	return name, nil
}

// validTopic checks Kafka's rules for a topic name.
func validTopic(name string) error {
	if len(name) > maxTopicLen {
		return fmt.Errorf("%d characters, Kafka allows %d", len(name), maxTopicLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q at %d is not allowed in a topic name", c, i)
		}
	}
	return nil
}

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

// write produces batch, copies whose Partition is their source
// partition, each to that partition modulo its topic's partition count (so
// that the copies of one source partition keep their order): one produce
// request per partition leader, acknowledged by all in-sync replicas. A
// kafka.Writer would look each message's topic up in its client's view of
// the cluster and batch each partition apart; the copies of a flush go
// together instead, which is most of what a forward costs the baseline
// and the broker. It reports which copies the broker acknowledged
// (written, by index in batch): on an error the caller keeps the others
// and writes them again. Those of a request that got no answer may have
// been written nonetheless: the sandbox's reader skips the second copies
// (Counts.Duplicates).
//
// A record set the broker refuses as too large (MESSAGE_TOO_LARGE,
// RECORD_LIST_TOO_LARGE: the sandbox topic's max.message.bytes is below
// the source's, or the copies of a set add up to more) is not written
// again as it was: a set of several is an error, and its copies, srcs
// naming them (the source coordinates of each copy in batch), go one per
// set on the next write (f.alone); a copy alone in its set is refused
// for good (out[i].refused), which is no error, and its partition's later
// sets are still written, in order.
func (f *forwarder) write(ctx context.Context, batch []kafka.Message, srcs []topicPartitionOffset) (out []copyOutcome, err error) {
	var topics []string
	for i := range batch {
		if !slices.Contains(topics, batch[i].Topic) {
			topics = append(topics, batch[i].Topic)
		}
	}
	// Served from the client's cached view, which a creation refreshes.
	md, err := f.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	// A sandbox topic deleted since this forwarder created it (by an
	// operator, or a reaper) is created again: its copies would otherwise
	// stay buffered for ever, holding every commit of their partitions
	// back, production's too, and a full buffer would stop the reader. A
	// topic of a removed sandbox is reaped again.
	var missing []string
	for _, t := range md.Topics {
		if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			missing = append(missing, t.Name)
		}
	}
	if len(missing) > 0 {
		for _, name := range missing {
			if err := f.recreate(ctx, name); err != nil {
				return nil, fmt.Errorf("creating %s again: %w", name, err)
			}
		}
		if md, err = f.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics}); err != nil {
			return nil, err
		}
	}
	layout := make(map[string][]kafka.Partition, len(md.Topics))
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", t.Name, t.Error)
		}
		ps := slices.Clone(t.Partitions)
		slices.SortFunc(ps, func(a, b kafka.Partition) int { return a.ID - b.ID })
		layout[t.Name] = ps
	}
	// The copies of each partition, in order, cut in record sets the
	// broker accepts (maxRecordSet), then one request per leader for each
	// round of record sets: a partition's second set goes once its first
	// is acknowledged.
	type recordSet struct {
		leader  int
		tp      topicPartition
		records []kafka.Record
		copies  []int // their indexes in batch
		bytes   int
		alone   bool // a copy that goes in a set of its own (f.alone)
	}
	// Each copy's partition first, and how many copies each partition
	// gets: the records and indexes of a partition's sets are then cut
	// in place from one array each, the records' kept by the forwarder
	// from one write to the next. Appended one set at a time, they were
	// most of the bytes the baseline allocated for its copies: about
	// 2.5 MB per 20,000-message pass of BenchmarkSandboxes/steady at
	// N = 16, against 1.2 MB for the copies' headers.
	var targets []topicPartition // the partitions, in the order of their first copy
	var leaders []int            // of each partition
	at := make(map[topicPartition]int)
	group := make([]int, len(batch)) // each copy's partition, by index in targets
	for i := range batch {
		m := &batch[i]
		ps := layout[m.Topic]
		if len(ps) == 0 {
			return nil, fmt.Errorf("metadata of %s: no partitions", m.Topic)
		}
		p := ps[m.Partition%len(ps)]
		key := topicPartition{m.Topic, p.ID}
		g, ok := at[key]
		if !ok {
			g = len(targets)
			at[key] = g
			targets = append(targets, key)
			leaders = append(leaders, p.Leader.ID)
		}
		group[i] = g
	}
	// Partition g's copies take [next[g], end[g]) of records and idx.
	next := make([]int, len(targets))
	end := make([]int, len(targets))
	for _, g := range group {
		end[g]++
	}
	for g, n := 0, 0; g < len(targets); g++ {
		next[g] = n
		n += end[g]
		end[g] = n
	}
	if cap(f.records) < len(batch) {
		f.records = make([]kafka.Record, len(batch))
	}
	// The array is only the material of the record sets: each is copied
	// by kafka.NewRecordReader before its request is sent, and the
	// copies' bytes and header lists are never written to. A request
	// the transport still holds when write returns (its deadline fired
	// before the connection's goroutine encoded it) so carries its own
	// copies, not the cleared array or the next write's
	// (TestSplitWriteLateRequest).
	records := f.records[:len(batch)]
	defer clear(records) // the copies' keys, values and headers
	idx := make([]int, len(batch))
	parts := make([][]recordSet, len(targets))
	for i := range batch {
		m := &batch[i]
		g := group[i]
		size := recordSize(m)
		_, alone := f.alone[srcs[i]]
		sets := parts[g]
		if len(sets) == 0 || alone || sets[len(sets)-1].alone ||
			sets[len(sets)-1].bytes+size > maxRecordSet && len(sets[len(sets)-1].records) > 0 {
			n := next[g]
			sets = append(sets, recordSet{leader: leaders[g], tp: targets[g], alone: alone,
				records: records[n:n:end[g]], copies: idx[n:n:end[g]]})
		}
		last := &sets[len(sets)-1]
		last.records = append(last.records, kafka.Record{Time: m.Time, Key: bytesOrNil(m.Key), Value: bytesOrNil(m.Value), Headers: m.Headers})
		last.copies = append(last.copies, i)
		last.bytes += size
		next[g]++
		parts[g] = sets
	}
	out = make([]copyOutcome, len(batch))
	for round := 0; ; round++ {
		reqs := make(map[int]*produce.Request) // by leader
		sets := make(map[topicPartition]*recordSet)
		for _, ps := range parts {
			if round >= len(ps) {
				continue
			}
			rs := &ps[round]
			req := reqs[rs.leader]
			if req == nil {
				req = &produce.Request{Acks: int16(kafka.RequireAll), Timeout: int32(forwardTimeout / time.Millisecond)}
				reqs[rs.leader] = req
			}
			addPartition(req, rs.tp, kafka.NewRecordReader(rs.records...))
			sets[rs.tp] = rs
		}
		if len(reqs) == 0 {
			return out, nil
		}
		errs := make([]error, 0, len(reqs))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, req := range reqs {
			wg.Go(func() {
				answers, err := f.produce(ctx, req)
				mu.Lock()
				defer mu.Unlock()
				errs = append(errs, err)
				for _, a := range answers {
					rs := sets[a.tp]
					switch {
					case rs == nil:
					case a.err == nil:
						for _, i := range rs.copies {
							out[i].written = true
						}
					case !tooLarge(a.err):
						errs = append(errs, fmt.Errorf("%s/%d: %w", a.tp.topic, a.tp.partition, a.err))
					case len(rs.copies) == 1:
						out[rs.copies[0]].refused = fmt.Errorf("its copy (about %d bytes) is too large for %s/%d: %w",
							rs.bytes, a.tp.topic, a.tp.partition, a.err)
					default:
						for _, i := range rs.copies {
							f.alone[srcs[i]] = struct{}{}
						}
						errs = append(errs, fmt.Errorf("%s/%d: a record set of %d copies (%d bytes), written one per set next: %w",
							a.tp.topic, a.tp.partition, len(rs.copies), rs.bytes, a.err))
					}
				}
			})
		}
		wg.Wait()
		// A partition's later sets wait for this one: the next flush
		// writes what is left, in order.
		if err := errors.Join(errs...); err != nil {
			return out, err
		}
	}
}

// copyOutcome is what a write did with a copy: acknowledged by the
// broker, refused for good (too large alone in its record set), or
// neither (kept for the next write).
type copyOutcome struct {
	written bool
	refused error
}

// tooLarge reports whether err is a partition's refusal of a record set
// for its size.
func tooLarge(err error) bool {
	return errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge)
}

// maxRecordSet is the most bytes (as [recordSize] counts them) of copies
// written to one partition in one produce request: below the brokers'
// default message.max.bytes (1 MiB), which a record set may not exceed.
const maxRecordSet = 900 << 10

// recordSize is about what m takes in a record set, uncompressed.
func recordSize(m *kafka.Message) int {
	n := 32 + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 8 + len(h.Key) + len(h.Value)
	}
	return n
}

// addPartition adds records to req, for tp.
func addPartition(req *produce.Request, tp topicPartition, records kafka.RecordReader) {
	i := slices.IndexFunc(req.Topics, func(t produce.RequestTopic) bool { return t.Topic == tp.topic })
	if i < 0 {
		i = len(req.Topics)
		req.Topics = append(req.Topics, produce.RequestTopic{Topic: tp.topic})
	}
	req.Topics[i].Partitions = append(req.Topics[i].Partitions, produce.RequestPartition{
		Partition: int32(tp.partition), RecordSet: protocol.RecordSet{Records: records},
	})
}

// partitionAnswer is a partition's answer to a produce request: nil err
// when it acknowledged its records.
type partitionAnswer struct {
	tp  topicPartition
	err error
}

// produce sends req and returns every partition's answer; the error is
// the request's (no answer, or not one from every partition).
func (f *forwarder) produce(ctx context.Context, req *produce.Request) ([]partitionAnswer, error) {
	m, err := f.client.Transport.RoundTrip(ctx, f.client.Addr, req)
	if err != nil {
		return nil, err
	}
	res, ok := m.(*produce.Response)
	if !ok {
		return nil, fmt.Errorf("produce: unexpected response %T", m)
	}
	// Each partition of the request answered once, and no other: an
	// answer that names one twice and leaves another out has the count
	// of the request, but the copies of the one left out were taken
	// for acknowledged (the flush found no error) and committed past,
	// never written. Such an answer is the request's error, none of it
	// trusted: its copies are written again.
	asked := make(map[topicPartition]bool) // whether answered
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			asked[topicPartition{t.Topic, int(p.Partition)}] = false
		}
	}
	var answers []partitionAnswer
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			a := partitionAnswer{tp: topicPartition{t.Topic, int(p.Partition)}}
			if answered, ok := asked[a.tp]; !ok || answered {
				return nil, fmt.Errorf("produce: an answer for %s/%d, asked no such partition or answered it already", a.tp.topic, a.tp.partition)
			}
			asked[a.tp] = true
			if p.ErrorCode != 0 {
				a.err = kafka.Error(p.ErrorCode)
			}
			answers = append(answers, a)
		}
	}
	if len(answers) != len(asked) {
		return answers, fmt.Errorf("produce: %d of %d partitions answered", len(answers), len(asked))
	}
	return answers, nil
}

// bytesOrNil wraps b for a record; nil stays nil (a null key or value).
func bytesOrNil(b []byte) kafka.Bytes {
	if b == nil {
		return nil
	}
	return kafka.NewBytes(b)
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

// ensure creates the sandbox topic name of key, unless this forwarder has
// created or found it before.
func (f *forwarder) ensure(ctx context.Context, key sandboxTopic, name string) error {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	f.mu.Lock()
	_, ok := f.names[key]
	f.mu.Unlock()
	if ok {
		return nil
	}
	n := f.split.Partitions
	if n == 0 {
		var err error
		if n, err = f.partitions(ctx, key.source); err != nil {
			return err
		}
	}
	if err := createTopic(ctx, f.client, name, n, f.split.ReplicationFactor, sandboxTopicConfig(ctx, f.client, key.source)); err != nil {
		return err
	}
	f.mu.Lock()
	f.names[key] = name
	f.mu.Unlock()
	return nil
}

// recreate creates again the sandbox topic name, which this forwarder
// created (or found) before and which is gone.
func (f *forwarder) recreate(ctx context.Context, name string) error {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	f.mu.Lock()
	var key sandboxTopic
	found := false
	for k, n := range f.names {
		if n == name {
			key, found = k, true
			break
		}
	}
	f.mu.Unlock()
	if found {
		parts := f.split.Partitions
		if parts == 0 {
			var err error
			if parts, err = f.partitions(ctx, key.source); err != nil {
				return err
			}
		}
		return createTopic(ctx, f.client, name, parts, f.split.ReplicationFactor, sandboxTopicConfig(ctx, f.client, key.source))
	}
	return fmt.Errorf("metadata of %s: %w", name, kafka.UnknownTopicOrPartition)
}

// partitions returns the partition count of topic, cached. f.adminMu is
// held.
func (f *forwarder) partitions(ctx context.Context, topic string) (int, error) {
	if n, ok := f.parts[topic]; ok {
		return n, nil
	}
	n, err := partitionCount(ctx, f.client, topic)
	if err != nil {
		return 0, err
	}
	f.parts[topic] = n
	return n, nil
}

// partitionCount asks the broker for topic's partition count.
func partitionCount(ctx context.Context, cl *kafka.Client, topic string) (int, error) {
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		if len(md.Topics) == 1 {
			return 0, fmt.Errorf("metadata of %s: %w", topic, md.Topics[0].Error)
		}
		return 0, fmt.Errorf("metadata of %s: no answer", topic)
	}
	return len(md.Topics[0].Partitions), nil
}

// createTopic creates topic, a sandbox topic ([SplitTopic]), with n
// partitions and the topic configuration configs. One that exists
// already is fine (another baseline instance, or the sandbox's reader,
// created it), whatever its partitions; its max.message.bytes is raised
// to configs' when lower ([raiseMaxMessageBytes]).
func createTopic(ctx context.Context, cl *kafka.Client, topic string, n, replication int, configs []kafka.ConfigEntry) error {
	if replication == 0 {
		replication = -1 // the broker's default
	}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: n, ReplicationFactor: replication, ConfigEntries: configs,
	}}})
	if err != nil {
		return err
	}
	err = resp.Errors[topic]
	if errors.Is(err, kafka.TopicAlreadyExists) {
		for _, c := range configs {
			if c.ConfigName == maxMessageBytes {
				raiseMaxMessageBytes(ctx, cl, topic, c.ConfigValue)
			}
		}
		return nil
	}
	return err
}

// raise raises the max.message.bytes of name, a sandbox topic of source
// that this forwarder created or found (so a name made by [SplitTopic]),
// to what sandboxTopicConfig asks when it is lower, and reports whether
// it did: a copy the topic refused as too large fits now.
func (f *forwarder) raise(ctx context.Context, name, source string) bool {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	f.mu.Lock()
	ours := false
	for key, n := range f.names {
		ours = ours || n == name && key.source == source
	}
	f.mu.Unlock()
	if !ours {
		return false
	}
	for _, c := range sandboxTopicConfig(ctx, f.client, source) {
		if c.ConfigName == maxMessageBytes {
			return raiseMaxMessageBytes(ctx, f.client, name, c.ConfigValue)
		}
	}
	return false
}

// raiseMaxMessageBytes sets the max.message.bytes of topic, a sandbox
// topic that exists already, to want when its own is lower: created by
// an older baseline reader, or before the source's limit was raised, it
// would refuse the copies of the source's largest messages. Only
// createTopic calls it, with a name made by [SplitTopic]: topics of the
// split mode, never another. It never lowers a limit. A failure (the
// describe or the alter refused, say by an ACL) leaves the topic as it
// is: a copy it refuses as too large is given up ([forwarder.flush]),
// as when the source's limit cannot be read. It reports whether the
// broker accepted a raise.
func raiseMaxMessageBytes(ctx context.Context, cl *kafka.Client, topic, want string) bool {
	w, err := strconv.ParseInt(want, 10, 32)
	if err != nil {
		return false
	}
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{maxMessageBytes},
	}}})
	if err != nil {
		return false
	}
	for _, res := range resp.Resources {
		if res.ResourceName != topic || res.Error != nil {
			return false
		}
		for _, e := range res.ConfigEntries {
			if e.ConfigName != maxMessageBytes {
				continue
			}
			if have, err := strconv.ParseInt(e.ConfigValue, 10, 32); err != nil || have >= w {
				return false
			}
			resp, err := cl.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
				ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
				Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: maxMessageBytes, Value: want, ConfigOperation: kafka.ConfigOperationSet}},
			}}})
			if err != nil || len(resp.Resources) == 0 {
				return false
			}
			for _, r := range resp.Resources {
				if r.Error != nil {
					return false
				}
			}
			return true
		}
	}
	return false
}

// maxMessageBytes is the topic configuration that bounds a record set,
// so the largest message, a topic accepts.
const maxMessageBytes = "max.message.bytes"

// copyHeadroom is what a copy may take in a record set beyond its source
// message alone in one: the [HeaderSplitSource] header and the lengths
// around it.
const copyHeadroom = 1 << 10

// sandboxTopicConfig returns the configuration of a sandbox topic of
// source: max.message.bytes at the source's plus copyHeadroom, so that
// the copy of every message the source accepted fits (a source topic may
// accept larger messages than the broker's default, which a topic
// created without it would get). nil when the source's cannot be read
// (the describe is refused, or times out): the topic is then created
// with the broker's default, and a copy it refuses as too large is given
// up ([forwarder.flush]) rather than the forward failing.
func sandboxTopicConfig(ctx context.Context, cl *kafka.Client, source string) []kafka.ConfigEntry {
	// Half the creation's time at most: the creation still has the rest.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
		defer cancel()
	}
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: source, ConfigNames: []string{maxMessageBytes},
	}}})
	if err != nil {
		return nil
	}
	for _, res := range resp.Resources {
		if res.ResourceName != source || res.Error != nil {
			continue
		}
		for _, e := range res.ConfigEntries {
			if e.ConfigName != maxMessageBytes {
				continue
			}
			n, err := strconv.ParseInt(e.ConfigValue, 10, 32)
			if err != nil || n <= 0 {
				return nil
			}
			n = min(n+copyHeadroom, math.MaxInt32)
			return []kafka.ConfigEntry{{ConfigName: maxMessageBytes, ConfigValue: strconv.FormatInt(n, 10)}}
		}
	}
	return nil
}

// marks is a split-mode sandbox reader's record, per source partition, of
// the first source offset whose forwarded copy it has not yet decided. A
// copy below its mark was decided before: a second copy the baseline
// forwarded again after a crash between its forward and its commit, or a
// message the group's filter-mode reader processed before the switch to
// the split mode (the marks start at the offsets the group committed on
// the source topic). Copies of one source partition reach one partition
// of the sandbox's topic in source order, so a mark only moves forward.
// nil outside a split-mode sandbox reader. Used under the fetch lock.
type marks struct {
	next   map[int]int64
	source string // the source topic
}

// check returns the source coordinates of msg, a forwarded copy, and
// whether it was decided before. A message without readable coordinates
// (not forwarded by a baseline reader) is not a duplicate; ok is false.
// The coordinates are the last header of that name, the one the baseline
// added (copies forwarded before it dropped inherited ones may carry
// others before it). A copy whose [HeaderSplitTopic], the header before
// it, names another source topic is a duplicate: not this reader's
// (see HeaderSplitTopic); ok is false.
func (m *marks) check(msg *kafka.Message) (part int, off int64, dup, ok bool) {
	if m == nil {
		return 0, 0, false, false
	}
	for i := len(msg.Headers) - 1; i >= 0; i-- {
		if msg.Headers[i].Key != HeaderSplitSource {
			continue
		}
		if i > 0 && msg.Headers[i-1].Key == HeaderSplitTopic && string(msg.Headers[i-1].Value) != m.source {
			return 0, 0, true, false
		}
		p, o, found := strings.Cut(string(msg.Headers[i].Value), "/")
		if !found {
			return 0, 0, false, false
		}
		part, err1 := strconv.Atoi(p)
		off, err2 := strconv.ParseInt(o, 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, false, false
		}
		next, seen := m.next[part]
		return part, off, seen && off < next, true
	}
	return 0, 0, false, false
}

// advance records that the copy of source offset off of partition part
// is decided.
func (m *marks) advance(part int, off int64) {
	if m != nil && off >= m.next[part] {
		m.next[part] = off + 1
	}
}

// prepareSplit readies a split-mode sandbox reader before it joins its
// group: it creates the sandbox's topic if no baseline reader has
// forwarded anything to it yet (so that the group has partitions to read
// and starts at their beginning), and starts its [marks] at the offsets
// its group committed on the source topic in the filter mode.
func (r *Reader) prepareSplit(ctx context.Context) error {
	tr := transport(r.rcfg.Dialer)
	// The transport's view of the cluster covers the two topics, not
	// every topic of the cluster (kafka-go's default), which it would
	// fetch again after creating the sandbox's.
	tr.MetadataTopics = []string{r.source, r.rcfg.Topic}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(r.rcfg.Brokers...), Transport: tr}
	fail := func(step string, err error) error {
		return fmt.Errorf("kafkamw: preparing the split topic %s of group %s: %s: %w", r.rcfg.Topic, r.group, step, err)
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: tr.MetadataTopics})
	if err != nil {
		return fail("metadata", err)
	}
	sn, exists := 0, false
	for _, t := range md.Topics {
		switch {
		case t.Name == r.source && t.Error != nil:
			return fail("source partitions", fmt.Errorf("metadata of %s: %w", r.source, t.Error))
		case t.Name == r.source:
			sn = len(t.Partitions)
		case t.Name == r.rcfg.Topic:
			exists = t.Error == nil && len(t.Partitions) > 0
		}
	}
	if sn == 0 {
		return fail("source partitions", fmt.Errorf("metadata of %s: no answer", r.source))
	}
	if !exists {
		n := sn
		if r.cfg.split.Partitions > 0 {
			n = r.cfg.split.Partitions
		}
		if err := createTopic(ctx, cl, r.rcfg.Topic, n, r.cfg.split.ReplicationFactor, sandboxTopicConfig(ctx, cl, r.source)); err != nil {
			return fail("create", err)
		}
	}
	ps := make([]int, sn)
	for p := range ps {
		ps[p] = p
	}
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.group, Topics: map[string][]int{r.source: ps}})
	if err != nil {
		return fail("committed source offsets", err)
	}
	if of.Error != nil && !errors.Is(of.Error, kafka.GroupIdNotFound) {
		return fail("committed source offsets", of.Error)
	}
	m := &marks{next: make(map[int]int64), source: r.source}
	for _, p := range of.Topics[r.source] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			m.next[p.Partition] = p.CommittedOffset
		}
	}
	r.marks = m
	return nil
}

// ReapSplitTopics deletes the sandbox topics of the split mode
// ([SplitTopic]) of cfg's Topic and GroupID whose sandbox is not in table
// (removed or expired), and returns their names. It touches only topics
// named by that rule for a valid sandbox ID: topics the split mode
// creates. table must have loaded from its source (else [ErrRoutesBehind]):
// an empty table would reap every sandbox's topic. Call it periodically
// (from sandbox teardown, or a loop), from one process or from all.
func ReapSplitTopics(ctx context.Context, cfg kafka.ReaderConfig, table *routes.Table) ([]string, error) {
	if table == nil || cfg.Topic == "" || cfg.GroupID == "" || len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("%w: ReapSplitTopics: needs a route table and a ReaderConfig with Brokers, Topic and GroupID", ErrConfig)
	}
	if table.SyncedAt().IsZero() {
		return nil, fmt.Errorf("%w: ReapSplitTopics: the route table has never loaded", ErrRoutesBehind)
	}
	tr := transport(cfg.Dialer)
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("kafkamw: ReapSplitTopics: metadata: %w", err)
	}
	prefix := cfg.Topic + "." + SandboxGroup(cfg.GroupID, "")
	var gone []string
	for _, t := range md.Topics {
		id, ok := strings.CutPrefix(t.Name, prefix)
		if !ok || propagation.ValidateID(id) != nil {
			continue
		}
		if _, live := table.Sandbox(id); live {
			continue
		}
		gone = append(gone, t.Name)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	resp, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: gone})
	if err != nil {
		return nil, fmt.Errorf("kafkamw: ReapSplitTopics: %w", err)
	}
	var deleted []string
	var errs []error
	for _, name := range gone {
		if err := resp.Errors[name]; err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		deleted = append(deleted, name)
	}
	return deleted, errors.Join(errs...)
}

// splitConfig checks cfg for the split mode and, for sandbox id's reader,
// points it at the sandbox's topic from its start. It returns the source
// topic.
func splitConfig(cfg *kafka.ReaderConfig, id string) (string, error) {
	if cfg.Topic == "" || len(cfg.GroupTopics) > 0 {
		return "", errors.New("WithSplit: ReaderConfig must name one Topic, not GroupTopics")
	}
	source := cfg.Topic
	// The names of every sandbox's topic share this prefix: checked once
	// here, so that a baseline reader fails at construction rather than on
	// its first forward. A sandbox ID is a DNS label, made of allowed
	// characters; only its length can still make a name too long.
	if err := validTopic(source + "." + SandboxGroup(cfg.GroupID, "")); err != nil {
		return "", fmt.Errorf("WithSplit: topic %q and group %q make no valid sandbox topic name: %w", source, cfg.GroupID, err)
	}
	if id == "" {
		return source, nil
	}
	name, err := SplitTopic(source, cfg.GroupID, id)
	if err != nil {
		return "", fmt.Errorf("WithSplit: %w", err)
	}
	// Everything in the sandbox's topic was forwarded for it: a new group
	// starts at the beginning (what its filter-mode predecessor processed
	// is skipped, see marks).
	cfg.Topic, cfg.StartOffset = name, kafka.FirstOffset
	return source, nil
}
