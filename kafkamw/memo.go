package kafkamw

import (
	"bytes"
	"strings"
	"sync/atomic"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// A stream holds many messages of few sandboxes, each tagged with the same
// header bytes. The memo remembers what the codec read from the last few
// distinct marker headers, so that each is parsed once and the messages of
// a known sandbox are decided without allocating. Only messages with at
// most one dedicated header and one baggage header are remembered: the
// codec's answer then depends on those two values alone.

const memoSlots = 4

type memoKey struct {
	header, bag       []byte
	hasHeader, hasBag bool
}

type memoEntry struct {
	key memoKey // owns its bytes
	m   propagation.Markers
	err error
}

type memo struct {
	slots [memoSlots]atomic.Pointer[memoEntry]
	next  atomic.Uint32
}

func (k *memoKey) equal(o *memoKey) bool {
	return k.hasHeader == o.hasHeader && k.hasBag == o.hasBag && bytes.Equal(k.header, o.header) && bytes.Equal(k.bag, o.bag)
}

// key returns the memo key of hs, and false when hs has several dedicated
// or baggage headers.
func (m *markers) key(hs []kafka.Header) (memoKey, bool) {
	var k memoKey
	for i := range hs {
		switch key := hs[i].Key; {
		case m.header != "" && strings.EqualFold(key, m.header):
			if k.hasHeader {
				return k, false
			}
			k.header, k.hasHeader = hs[i].Value, true
		case strings.EqualFold(key, baggageKey):
			if k.hasBag {
				return k, false
			}
			k.bag, k.hasBag = hs[i].Value, true
		}
	}
	return k, true
}

func (mm *memo) get(k *memoKey) *memoEntry {
	for i := range mm.slots {
		if e := mm.slots[i].Load(); e != nil && e.key.equal(k) {
			return e
		}
	}
	return nil
}

func (mm *memo) put(k memoKey, m propagation.Markers, err error) {
	k.header, k.bag = bytes.Clone(k.header), bytes.Clone(k.bag)
	mm.slots[mm.next.Add(1)%memoSlots].Store(&memoEntry{key: k, m: m, err: err})
}

// read returns what the codec reads from hs.
func (r *Reader) read(hs []kafka.Header) (propagation.Markers, error) {
	k, memoize := r.markers.key(hs)
	if memoize {
		if e := r.memo.get(&k); e != nil {
			return e.m, e.err
		}
	}
	c, _ := r.carriers.Get().(*carrier)
	if c == nil {
		c = new(carrier)
	}
	c.list = hs
	m, err := r.cfg.codec.Read(c)
	*c = carrier{}
	r.carriers.Put(c)
	if memoize {
		r.memo.put(k, m, err)
	}
	return m, err
}
