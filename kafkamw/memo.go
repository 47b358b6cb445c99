package kafkamw

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// A stream holds many messages of few sandboxes, each tagged with the same
// header bytes. The memo remembers what the codec read from recent
// distinct marker headers, so that each is parsed once and the messages of
// a known sandbox are decided without allocating. Only messages with at
// most one dedicated header and one baggage header are remembered: the
// codec's answer then depends on those two values alone.
//
// A key is looked for from the slot its hash names, in the slots after it
// up to an empty one (open addressing): a baseline reader sees the
// messages of every sandbox, interleaved, and each of up to memoSlots
// distinct keys keeps a slot of its own. With four slots taken in turn,
// the memo of a topic of five or more active sandboxes missed on nearly
// every tagged message (16 sandboxes in turn: on all of them), each miss
// a codec read and five allocations (TestMemoManySandboxes). Once every
// slot is taken, a new key replaces the one in its hash's slot, and a
// miss looks at every slot.

// memoSlots is the number of the memo's slots, a power of two.
const memoSlots = 64

// memoMaxKey is the most bytes of header values the memo remembers for a
// key: the W3C baggage limit (8192 bytes), so that the memo holds at most
// memoSlots × memoMaxKey bytes (512 KiB) of them however large the
// headers a producer sends. A larger key is read by the codec every time
// (but for a run of messages with the same headers: [lastHeaders]).
const memoMaxKey = 8 << 10

// memoSeed seeds the memo's hash.
var memoSeed = maphash.MakeSeed()

// slot returns the index of k's slot.
func (k *memoKey) slot() int {
	h := maphash.Bytes(memoSeed, k.header)*31 + maphash.Bytes(memoSeed, k.bag)
	return int(h & (memoSlots - 1))
}

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
}

func (k *memoKey) equal(o *memoKey) bool {
	return k.hasHeader == o.hasHeader && k.hasBag == o.hasBag && bytes.Equal(k.header, o.header) && bytes.Equal(k.bag, o.bag)
}

// scanKey is [markers.scan], and sets *k to the memo key of hs, in one pass
// over the headers: the key is only wanted when the headers may hold
// markers, which the scan finds out. memoize is false when hs has several
// dedicated or baggage headers. *k is zero on entry.
func (m *markers) scanKey(hs []kafka.Header, k *memoKey) (st headerState, memoize bool) {
	memoize = true
	for i := range hs {
		switch key := hs[i].Key; {
		case m.header != "" && keyIs(key, m.header):
			st = hasMarkers
			memoize = memoize && !k.hasHeader
			k.header, k.hasHeader = hs[i].Value, true
		case m.memberKey(key):
			st, memoize = hasMarkers, false
		case keyIs(key, baggageKey):
			if st != hasMarkers {
				st = bagOnly
				if m.mentioned(hs[i].Value) {
					st = hasMarkers
				}
			}
			memoize = memoize && !k.hasBag
			k.bag, k.hasBag = hs[i].Value, true
		}
	}
	return st, memoize
}

func (mm *memo) get(k *memoKey) *memoEntry {
	i := k.slot()
	for n := range memoSlots {
		e := mm.slots[(i+n)&(memoSlots-1)].Load()
		if e == nil {
			return nil
		}
		if e.key.equal(k) {
			return e
		}
	}
	return nil
}

// put remembers what the codec read from k's headers: in the first empty
// slot from k's hash's on, or, when none is left, in that slot, whose key
// is forgotten. A slot is never emptied, so that every key stays found.
func (mm *memo) put(k memoKey, m propagation.Markers, err error) {
	if len(k.header)+len(k.bag) > memoMaxKey {
		return
	}
	i := k.slot()
	k.header, k.bag = bytes.Clone(k.header), bytes.Clone(k.bag)
	e := &memoEntry{key: k, m: m, err: err}
	for n := range memoSlots {
		if mm.slots[(i+n)&(memoSlots-1)].CompareAndSwap(nil, e) {
			return
		}
	}
	mm.slots[i].Store(e)
}

// readKey returns what the codec reads from hs, given the memo key and
// memoize that [markers.scanKey] returned for hs.
func (r *Reader) readKey(hs []kafka.Header, k *memoKey, memoize bool) (propagation.Markers, error) {
	if memoize {
		if e := r.memo.get(k); e != nil {
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
		r.memo.put(*k, m, err)
	}
	return m, err
}

// lastHeaders is the header list of the last message read through the memo,
// and what the codec read from it: a stream's messages of one sandbox carry
// the same header bytes, and the next one is read by comparing its headers
// with these, without scanning them for markers or looking the memo up.
// The answer is the codec's, a function of the header list alone. Its
// buffers are reused, so that a stream alternating between sandboxes
// does not allocate. Used under the reader's fetch lock.
type lastHeaders struct {
	hs  []kafka.Header // keys shared with the message (immutable), values in buf
	buf []byte
	ok  bool // hs is set
	m   propagation.Markers
	err error
}

// read returns what the codec read from hs, when hs is the list remembered.
func (l *lastHeaders) read(hs []kafka.Header) (propagation.Markers, error, bool) {
	if !l.ok || len(hs) != len(l.hs) {
		return propagation.Markers{}, nil, false
	}
	for i := range hs {
		if hs[i].Key != l.hs[i].Key || !bytes.Equal(hs[i].Value, l.hs[i].Value) {
			return propagation.Markers{}, nil, false
		}
	}
	return l.m, l.err, true
}

// remember records hs and what the codec read from it.
func (l *lastHeaders) remember(hs []kafka.Header, m propagation.Markers, err error) {
	l.buf = l.buf[:0]
	for i := range hs {
		l.buf = append(l.buf, hs[i].Value...)
	}
	l.hs = l.hs[:0]
	off := 0
	for i := range hs {
		n := len(hs[i].Value)
		l.hs = append(l.hs, kafka.Header{Key: hs[i].Key, Value: l.buf[off : off+n : off+n]})
		off += n
	}
	l.ok, l.m, l.err = true, m, err
}
