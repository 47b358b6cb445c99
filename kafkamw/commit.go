package kafkamw

import (
	"sync"

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

type partState struct {
	delivered int64 // highest offset returned to the caller, -1 for none
	committed int64 // highest offset committed, -1 for none
	skipped   int64 // highest offset skipped, -1 for none
}

// skipReady reports whether the highest skipped message is past what is
// committed and may be committed, given that offsets up to c are (or are
// being) committed.
func (st *partState) skipReady(c int64) bool {
	return st.skipped > c && st.delivered <= c
}

type ledger struct {
	mu      sync.Mutex
	parts   map[topicPartition]*partState
	lastKey topicPartition
	last    *partState
}

func newLedger() ledger {
	return ledger{parts: make(map[topicPartition]*partState)}
}

// state returns the partition's state, creating it. l.mu is held.
func (l *ledger) state(topic string, partition int) *partState {
	if l.last != nil && l.lastKey.partition == partition && l.lastKey.topic == topic {
		return l.last
	}
	k := topicPartition{topic, partition}
	st := l.parts[k]
	if st == nil {
		st = &partState{delivered: -1, committed: -1, skipped: -1}
		l.parts[k] = st
	}
	l.lastKey, l.last = k, st
	return st
}

func (l *ledger) deliver(m *kafka.Message) {
	l.mu.Lock()
	st := l.state(m.Topic, m.Partition)
	st.delivered = max(st.delivered, m.Offset)
	l.mu.Unlock()
}

func (l *ledger) skip(m *kafka.Message) {
	l.mu.Lock()
	st := l.state(m.Topic, m.Partition)
	st.skipped = max(st.skipped, m.Offset)
	l.mu.Unlock()
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
		if c := max(m.Offset, st.committed); st.skipReady(c) {
			extra = append(extra, kafka.Message{Topic: m.Topic, Partition: m.Partition, Offset: st.skipped})
		}
	}
	if extra == nil {
		return msgs
	}
	return append(msgs[:len(msgs):len(msgs)], extra...)
}

// committable returns the skipped messages that may be committed now.
func (l *ledger) committable() []kafka.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []kafka.Message
	for k, st := range l.parts {
		if st.skipReady(st.committed) {
			out = append(out, kafka.Message{Topic: k.topic, Partition: k.partition, Offset: st.skipped})
		}
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
