package kafkamw

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// A stream holds many messages of few sandboxes, each tagged with the same
// header bytes. The memo remembers what the codec read from the distinct
// marker headers seen lately, so that each is parsed once and the messages
// of a known sandbox are decided without allocating. Only messages with at
// most one dedicated header and one baggage header are remembered: the
// codec's answer then depends on those two values alone.
//
// It is a hashed cache of memoSets sets of memoWays entries: a topic
// shared by many sandboxes (the baseline reader sees every sandbox's
// messages, a sandbox reader reads and skips the others') interleaves
// their header lists, and a memo of four entries filled in turn missed on
// every message once more than four sandboxes took turns, parsing (and
// allocating) for each. A lookup costs one hash of the two header values
// and at most memoWays compares, whatever the number of sandboxes.

const (
	memoSets = 32 // a power of two
	memoWays = 4
)

// memoMaxBytes bounds each of the two header values of a memo key: a
// longer one is read by the codec each time, not remembered. Each entry
// owns a copy of its key and the codec's answer, which may hold a value
// again (an invalid ID is returned as read): unbounded, a stream of
// distinct large headers (up to the broker's message size) kept
// memoSets*memoWays of them alive. Baggage carrying a sandbox over the
// W3C limit, and a dedicated header that long, are unreadable whatever
// they hold, and a codec pass over them costs what hashing them for the
// memo would; every readable tagged message stays within the bound,
// unless it adds baggage of others over the limit to the dedicated header.
const memoMaxBytes = propagation.MaxBaggageBytes

// memoSeed seeds the memo's hash; the process's own, so that no sender
// can choose header values that all land in one set.
var memoSeed = maphash.MakeSeed()

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
	slots [memoSets * memoWays]atomic.Pointer[memoEntry]
	next  atomic.Uint32 // picks the way a full set gives up
}

// set returns the index of k's first slot.
func (k *memoKey) set() int {
	h := maphash.Bytes(memoSeed, k.header)
	if k.hasBag {
		h = h*31 + maphash.Bytes(memoSeed, k.bag)
	}
	return int(h%memoSets) * memoWays
}

func (k *memoKey) equal(o *memoKey) bool {
	return k.hasHeader == o.hasHeader && k.hasBag == o.hasBag && bytes.Equal(k.header, o.header) && bytes.Equal(k.bag, o.bag)
}

// scanKey is [markers.scan], and sets *k to the memo key of hs, in one pass
// over the headers: the key is only wanted when the headers may hold
// markers, which the scan finds out. memoize is false when hs has several
// dedicated or baggage headers, a key header, a lookalike one (then st is
// lookalike), or a value of more than memoMaxBytes.
// *k is zero on entry.
func (m *markers) scanKey(hs []kafka.Header, k *memoKey) (st headerState, memoize bool) {
	memoize = true
	look := false
	for i := range hs {
		key := hs[i].Key
		fk := foldKey{k: key, wide: -1}
		switch {
		case m.header != "" && fk.is(m.header):
			st = hasMarkers
			memoize = memoize && !k.hasHeader
			k.header, k.hasHeader = hs[i].Value, true
		case m.memberKey(&fk):
			st, memoize = hasMarkers, false
		case len(key) > len("ot-baggage-") && key[0]|0x20 == 'o' && m.lookalike(key):
			look = true
		case fk.is(baggageKey):
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
	if look {
		return lookalike, false
	}
	return st, memoize && len(k.header) <= memoMaxBytes && len(k.bag) <= memoMaxBytes
}

func (mm *memo) get(k *memoKey) *memoEntry {
	set := k.set()
	for i := set; i < set+memoWays; i++ {
		if e := mm.slots[i].Load(); e != nil && e.key.equal(k) {
			return e
		}
	}
	return nil
}

// put remembers what the codec read from k's headers, in an empty way of
// k's set, or in place of one of its entries.
func (mm *memo) put(k memoKey, m propagation.Markers, err error) {
	if len(k.header) > memoMaxBytes || len(k.bag) > memoMaxBytes { // scanKey keeps these out too
		return
	}
	k.header, k.bag = bytes.Clone(k.header), bytes.Clone(k.bag)
	set := k.set()
	slot := set + int(mm.next.Add(1)%memoWays)
	for i := set; i < set+memoWays; i++ {
		if mm.slots[i].Load() == nil {
			slot = i
			break
		}
	}
	mm.slots[slot].Store(&memoEntry{key: k, m: m, err: err})
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
	// free is a header key whose value a list may differ in and still
	// match, "" for none: a split-mode sandbox reader's HeaderSplitSource,
	// whose value (the copy's source coordinates) differs from copy to
	// copy, so that no copy matched the one before it and each was
	// scanned, looked up in the memo and remembered anew. Only a key
	// scanKey does not act on ([markers.inert]): the memo already gives
	// two lists that differ only in such a header's value one answer
	// (its key holds the dedicated header's and the baggage's values
	// alone), and a list lastHeaders holds is one the memo would.
	free string
}

// matches reports whether hs is the list remembered, whose answer l.m and
// l.err hold.
func (l *lastHeaders) matches(hs []kafka.Header) bool {
	if !l.ok || len(hs) != len(l.hs) {
		return false
	}
	last := l.hs[:len(hs)] // one bounds check, not one a header
	for i := range hs {
		if hs[i].Key != last[i].Key || !bytes.Equal(hs[i].Value, last[i].Value) && (hs[i].Key != l.free || l.free == "") {
			return false
		}
	}
	return true
}

// inert reports whether scanKey acts on no header named k, whatever its
// value: it is not the dedicated header, baggage, a member key in any
// form, nor a lookalike one.
func (m *markers) inert(k string) bool {
	var key memoKey
	st, memoize := m.scanKey([]kafka.Header{{Key: k}}, &key)
	return st == noMarkers && memoize
}

// lastMaxBytes bounds the keys and values of a list lastHeaders
// remembers: it copies every value, not only the markers, into a buffer
// it reuses and never shrinks, so that one tagged message with a large
// header of its own kept that much held by the reader for good. A longer
// list is read through the memo, each time.
const lastMaxBytes = 2 * memoMaxBytes

// remember records hs and what the codec read from it, or forgets the
// list it held when hs is over lastMaxBytes.
func (l *lastHeaders) remember(hs []kafka.Header, m propagation.Markers, err error) {
	l.buf = l.buf[:0]
	keys := 0
	for i := range hs {
		l.buf = append(l.buf, hs[i].Value...)
		keys += len(hs[i].Key)
	}
	if len(l.buf)+keys > lastMaxBytes {
		*l = lastHeaders{free: l.free}
		return
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
