package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"
)

// How the forwarder writes a batch of copies: one produce request per
// partition leader, each partition's answer matched to its copies.

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
