package kafkamw

import (
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// A Kafka group commits one offset per partition: committing offset n
// commits everything before it. A skipped message may therefore be committed
// only once every message returned before it on its partition has been
// committed by the caller, or the commit would acknowledge work the caller
// has not done. The ledger tracks, per partition, the highest offset
// returned, committed and skipped, and hands out the skipped offsets that
// are safe to commit: with the caller's next commit on that partition, or
// from the reader's periodic flush when the caller has nothing to commit.

type topicPartition struct {
	topic     string
	partition int
}

// partState is a partition's offsets. delivered and skipped are written by
// the holder of the reader's fetch lock alone, without l.mu: recording a
// skipped message is one or two atomic stores, recording a returned one
// none (see [ledger.deliver]). Committers read skipped before delivered
// (see skipReady).
type partState struct {
	// delivered is the highest offset returned to the caller that a
	// committer may need to know of, -1 for none: it is brought up to
	// returned (below) before a skipped offset is stored, and only then.
	delivered atomic.Int64
	skipped   atomic.Int64 // highest offset skipped, -1 for none
	// returned is the highest offset returned to the caller, -1 for none;
	// the fetch lock's holder alone reads and writes it.
	returned  int64
	committed int64 // highest offset committed, -1 for none; l.mu
	// wanted is the highest offset the caller asked to commit that was
	// held back (see [ledger.capped]), -1 for none; l.mu.
	wanted int64
}

func newPartState() *partState {
	st := &partState{returned: -1, committed: -1, wanted: -1}
	st.delivered.Store(-1)
	st.skipped.Store(-1)
	return st
}

// skipReady returns the highest skipped offset and whether it is past what
// is committed and may be committed, given that offsets up to c are (or are
// being) committed.
//
// skipped is read before delivered. Messages are recorded in offset order,
// so every message returned before the skipped offset read was recorded
// before it, and the later read of delivered sees it: the answer is one the
// ledger would have given with both read at once, when the skipped offset
// was recorded. Messages recorded after it come after it and do not matter
// to committing it.
func (st *partState) skipReady(c int64) (int64, bool) {
	s := st.skipped.Load()
	return s, s > c && st.delivered.Load() <= c
}

type ledger struct {
	mu      sync.Mutex
	parts   map[topicPartition]*partState
	lastKey topicPartition // the committers' last partition; l.mu
	last    *partState

	// The fetch side's last partition, read and written only by the
	// holder of the fetch lock: kafka-go hands out runs of one partition,
	// so most messages find their state here without l.mu. fetchKey's
	// partition is -1 while fetchSt is nil.
	fetchKey topicPartition
	fetchSt  *partState
}

func newLedger() ledger {
	// No partition is -1: fetchKey names none until fetchSt is set.
	return ledger{parts: make(map[topicPartition]*partState), fetchKey: topicPartition{partition: -1}}
}

// state returns the partition's state, creating it. l.mu is held.
func (l *ledger) state(topic string, partition int) *partState {
	if l.last != nil && l.lastKey.partition == partition && l.lastKey.topic == topic {
		return l.last
	}
	k := topicPartition{topic, partition}
	st := l.parts[k]
	if st == nil {
		st = newPartState()
		l.parts[k] = st
	}
	l.lastKey, l.last = k, st
	return st
}

// fetchState returns the partition's state for recording a message. The
// fetch lock is held.
func (l *ledger) fetchState(topic string, partition int) *partState {
	if l.fetchKey.partition != partition || l.fetchKey.topic != topic {
		return l.fetchStateSlow(topic, partition)
	}
	return l.fetchSt
}

// fetchStateSlow is fetchState on a change of partition, apart so that
// fetchState's common case is inlined.
func (l *ledger) fetchStateSlow(topic string, partition int) *partState {
	l.mu.Lock()
	st := l.state(topic, partition)
	l.mu.Unlock()
	l.fetchKey, l.fetchSt = topicPartition{topic, partition}, st
	return st
}

// deliver records that m is returned to the caller. The fetch lock is held.
//
// It stores no atomic, which it would do for most messages of the topic:
// a committer needs the highest returned offset only to know whether a
// skipped offset may be committed, and the returned messages after the
// last skipped one come after every skipped offset a committer can see, so
// that committing one of those never commits them. [ledger.skip] makes
// delivered current before it stores a skipped offset, so that a
// committer that sees the skipped offset sees every message returned
// before it.
func (l *ledger) deliver(m *kafka.Message) {
	st := l.fetchState(m.Topic, m.Partition)
	st.returned = max(st.returned, m.Offset)
}

// unreturn records that m, returned before, was put back unprocessed
// ([Reader.Run]) and is now skipped: no one will commit it, so it must
// not hold back the skipped offsets behind it. Nothing after it on its
// partition has been fetched since, so what is returned there before it
// lies below it. The fetch lock is held.
func (l *ledger) unreturn(m *kafka.Message) {
	st := l.fetchState(m.Topic, m.Partition)
	if st.returned == m.Offset {
		st.returned = m.Offset - 1
	}
}

// skip records that m is skipped. The fetch lock is held.
func (l *ledger) skip(m *kafka.Message) {
	st := l.fetchState(m.Topic, m.Partition)
	if st.returned > st.delivered.Load() {
		st.delivered.Store(st.returned) // before skipped: see skipReady
	}
	if m.Offset > st.skipped.Load() {
		st.skipped.Store(m.Offset)
	}
}

// withSkipped returns msgs, followed by the skipped messages that committing
// msgs makes safe to commit. It returns msgs itself when there are none.
func (l *ledger) withSkipped(msgs []kafka.Message) []kafka.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The highest offset of each partition in msgs, by index.
	var buf [8]int
	highest := buf[:0]
	for i := range msgs {
		seen := false
		for k, j := range highest {
			if msgs[j].Partition == msgs[i].Partition && msgs[j].Topic == msgs[i].Topic {
				if msgs[i].Offset > msgs[j].Offset {
					highest[k] = i
				}
				seen = true
				break
			}
		}
		if !seen {
			highest = append(highest, i)
		}
	}
	var extra []kafka.Message
	for _, i := range highest {
		m := &msgs[i]
		st := l.state(m.Topic, m.Partition)
		if s, ok := st.skipReady(max(m.Offset, st.committed)); ok {
			if extra == nil {
				extra = make([]kafka.Message, len(msgs), len(msgs)+len(highest))
				copy(extra, msgs)
			}
			extra = append(extra, kafka.Message{Topic: m.Topic, Partition: m.Partition, Offset: s})
		}
	}
	if extra == nil {
		return msgs
	}
	return extra
}

// committable returns the skipped messages that may be committed now.
func (l *ledger) committable() []kafka.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []kafka.Message
	for k, st := range l.parts {
		done := max(st.committed, st.wanted) // what the caller has processed
		if s, ok := st.skipReady(done); ok {
			out = append(out, kafka.Message{Topic: k.topic, Partition: k.partition, Offset: s})
		} else if st.wanted > st.committed {
			out = append(out, kafka.Message{Topic: k.topic, Partition: k.partition, Offset: st.wanted})
		}
	}
	return out
}

// capped returns msgs, offsets to commit, with each held back before the
// first message of its partition that must not be committed yet (from
// hold: the split mode's copies not yet written): such a commit commits
// up to that message, or is dropped when that is no further than what is
// committed, and the offset asked for is remembered and committed by a
// later flush ([ledger.committable]). It returns msgs itself when nothing
// is held back.
func (l *ledger) capped(msgs []kafka.Message, hold func(topic string, partition int) (int64, bool)) []kafka.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []kafka.Message
	for i := range msgs {
		m := msgs[i]
		first, held := hold(m.Topic, m.Partition)
		if held && m.Offset >= first {
			st := l.state(m.Topic, m.Partition)
			st.wanted = max(st.wanted, m.Offset)
			if out == nil {
				out = make([]kafka.Message, 0, len(msgs))
				out = append(out, msgs[:i]...)
			}
			if first-1 > st.committed {
				out = append(out, kafka.Message{Topic: m.Topic, Partition: m.Partition, Offset: first - 1})
			}
			continue
		}
		if out != nil {
			out = append(out, m)
		}
	}
	if out == nil {
		return msgs
	}
	return out
}

// committed records that msgs were committed.
func (l *ledger) committed(msgs []kafka.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range msgs {
		st := l.state(msgs[i].Topic, msgs[i].Partition)
		st.committed = max(st.committed, msgs[i].Offset)
	}
}
