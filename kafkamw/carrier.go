package kafkamw

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/keytext"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// carrier is a message's record headers as an OpenTelemetry TextMapCarrier.
// Keys are matched case-insensitively and written lower-case. Set and
// Delete change list in place: use it only on headers the package owns.
type carrier struct {
	list []kafka.Header
	buf  [2]string // backs what Values returns: valid until the next call
}

var (
	_ otelprop.TextMapCarrier = (*carrier)(nil)
	_ otelprop.ValuesGetter   = (*carrier)(nil)
)

// Get returns the value of the first header named key, or "".
func (c *carrier) Get(key string) string {
	for _, h := range c.list {
		if strings.EqualFold(h.Key, key) {
			return string(h.Value)
		}
	}
	return ""
}

// Values returns the values of every header named key, in order. The
// slice is only valid until the next call.
func (c *carrier) Values(key string) []string {
	out := c.buf[:0]
	for _, h := range c.list {
		if strings.EqualFold(h.Key, key) {
			out = append(out, string(h.Value))
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Set replaces the headers named key with one header key=value, written
// where the first of them was, or appended.
func (c *carrier) Set(key, value string) {
	key = strings.ToLower(key)
	set := false
	out := c.list[:0]
	for _, h := range c.list {
		if !strings.EqualFold(h.Key, key) {
			out = append(out, h)
			continue
		}
		if !set {
			out = append(out, kafka.Header{Key: key, Value: []byte(value)})
			set = true
		}
	}
	if n := len(out); n < len(c.list) {
		clear(c.list[n:])
	}
	if !set {
		out = append(out, kafka.Header{Key: key, Value: []byte(value)})
	}
	c.list = out
}

// Delete removes every header named key.
func (c *carrier) Delete(key string) {
	out := c.list[:0]
	for _, h := range c.list {
		if !strings.EqualFold(h.Key, key) {
			out = append(out, h)
		}
	}
	clear(c.list[len(out):])
	c.list = out
}

// Keys returns the header keys, lower-case, each once.
func (c *carrier) Keys() []string {
	out := make([]string, 0, len(c.list))
	for _, h := range c.list {
		k := strings.ToLower(h.Key)
		dup := false
		for _, o := range out {
			dup = dup || o == k
		}
		if !dup {
			out = append(out, k)
		}
	}
	return out
}

const baggageKey = "baggage"

// markers is the cheap test run on every message before the codec: which of
// the codec's carrier keys a message's headers hold. It is computed from the
// codec so that the keys are exactly those of HTTP and gRPC.
type markers struct {
	header string   // the codec's dedicated header, lower-case; "" when disabled
	keys   []string // the codec's baggage member keys
	named  []string // header keys that are markers (Codec.KeyHeaders)
	// namedLen holds, by length, the indexes in named of the keys of
	// that length (see memberKey); namedMin is the shortest's.
	namedLen [][]int
	namedMin int
	// lookalike is Codec.IsKeyHeaderLookalike: a header key that is a
	// marker no reading accepts.
	lookalike func(string) bool
	prefix    string // their common prefix, searched for first

	// A header key [markers.scanKey] may act on is at least minKey
	// bytes long and starts with a byte of firsts: see plain.
	minKey int
	firsts [4]uint64 // a bit per byte value
}

// plain reports whether no header of hs can be one that
// [markers.scanKey] acts on (the dedicated header, baggage, or a header
// named as one of our member keys), so that the message is untagged
// without a closer look: most production messages carry headers of
// their own (traceparent, content-type), and without this test each of
// those was compared, folding case, with every marker key. It is
// conservative: a key is passed on to scanKey when it is long enough and
// its first byte may start a marker key as scanKey compares them
// (strings.EqualFold): either ASCII case of a key's first byte, and
// every byte above 0x7F, which may start a rune that folds to an ASCII
// letter (ſ to s, K to k; such a rune is longer in UTF-8 than its
// letter, so no matching key is shorter than minKey).
// FuzzPlainHeaders checks it against scanKey.
func (m *markers) plain(hs []kafka.Header) bool {
	for i := range hs {
		k := hs[i].Key
		if len(k) >= m.minKey && m.firsts[k[0]>>6]&(1<<(k[0]&63)) != 0 {
			return false
		}
	}
	return true
}

func newMarkers(c *propagation.Codec) markers {
	m := markers{header: c.Header()}
	m.keys = c.Keys()
	m.named = c.KeyHeaders()
	m.namedMin = math.MaxInt
	for i, k := range m.named {
		for len(m.namedLen) <= len(k) {
			m.namedLen = append(m.namedLen, nil)
		}
		m.namedLen[len(k)] = append(m.namedLen[len(k)], i)
		m.namedMin = min(m.namedMin, len(k))
	}
	m.lookalike = c.IsKeyHeaderLookalike
	all := append([]string{baggageKey}, m.named...)
	if m.header != "" {
		all = append(all, m.header)
	}
	m.minKey = len(baggageKey)
	first := func(b byte) { m.firsts[b>>6] |= 1 << (b & 63) }
	for _, k := range all {
		m.minKey = min(m.minKey, len(k))
		if len(k) > 0 {
			first(k[0])
			first(byte(unicode.ToUpper(rune(k[0]))))
			first(byte(unicode.ToLower(rune(k[0]))))
		}
	}
	m.firsts[2], m.firsts[3] = ^uint64(0), ^uint64(0) // bytes 0x80-0xFF
	if m.minKey == 0 {
		m.firsts = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
	}
	m.prefix = m.keys[0]
	for _, k := range m.keys[1:] {
		for !strings.HasPrefix(k, m.prefix) {
			m.prefix = m.prefix[:len(m.prefix)-1]
		}
	}
	return m
}

// errLookalike is why a message holding a lookalike key header is
// unreadable.
var errLookalike = fmt.Errorf("%w: a header in OpenTracing's baggage form (ot-baggage-) is named as a sandbox key only once decoded ('%%' or '+' in its name), which ottrace reads into baggage and no reading of ours accepts", propagation.ErrMalformed)

// headerState is what [markers.scan] found.
type headerState uint8

const (
	noMarkers  headerState = iota // neither the dedicated header nor baggage
	bagOnly                       // baggage that does not mention our keys
	hasMarkers                    // the dedicated header, or baggage mentioning our keys
	// lookalike: a header in OpenTracing's form whose key only a
	// decoding parser reads as ours (propagation.Codec.IsKeyHeaderLookalike):
	// unreadable, whatever else the headers hold.
	lookalike
)

// scan reports whether hs may hold our markers without allocating: a header
// named as the dedicated header, or a baggage header whose value contains
// one of our member keys (the codec decides whether it really is one).
func (m *markers) scan(hs []kafka.Header) headerState {
	var k memoKey
	st, _ := m.scanKey(hs, &k)
	return st
}

// mentioned reports whether a baggage value contains one of our member
// keys, also with bytes a parser drops inside it (see keytext.Contains),
// or a '%', which may hide a percent-encoded one (see
// propagation.Codec.Strip).
func (m *markers) mentioned(bag []byte) bool {
	if bytes.IndexByte(bag, '%') >= 0 {
		return true
	}
	if !keytext.ContainsBytes(bag, m.prefix) {
		return false // the one search that most baggage needs
	}
	for _, mk := range m.keys {
		if keytext.ContainsBytes(bag, mk) {
			return true
		}
	}
	return false
}

// memberKey reports whether header key k is one of the codec's baggage
// member keys (kcat -H sandbox.id=pr-1), also in Jaeger's or OpenTracing's
// baggage header form (see propagation.Codec.KeyHeaders): a marker the
// codec reads as unreadable, never a message to hand to baseline code.
//
// k is matched as the carrier matches it, with Unicode case folding: a
// key may be longer than the member key it folds to (ſ, two bytes, folds
// to s; K, three, to k), never shorter (see [foldKey.is]).
func (m *markers) memberKey(k *foldKey) bool {
	n := len(k.k)
	if n < m.namedMin {
		return false
	}
	// A key of a named key's length, compared with those alone; a longer
	// one can fold to a shorter named key only through runes of several
	// bytes (see foldKey.is), so an ASCII key is not compared with them:
	// scanKey asked this of every header, twelve keys each by default.
	if n < len(m.namedLen) {
		for _, i := range m.namedLen[n] {
			if strings.EqualFold(k.k, m.named[i]) {
				return true
			}
		}
	}
	// Longer: a key whose first byte cannot start one of ours (firsts,
	// see plain) is settled without looking for bytes above 0x7F.
	if c := k.k[0]; n == m.namedMin || m.firsts[c>>6]&(1<<(c&63)) == 0 || !k.isWide() {
		return false
	}
	for _, mk := range m.named {
		if n > len(mk) && strings.EqualFold(k.k, mk) {
			return true
		}
	}
	return false
}

// keyIs reports whether header key k is name, a lower-case ASCII key (a
// token: the package's keys and the codec's are), ignoring case as
// strings.EqualFold does. The keys the package writes are lower-case:
// they match without case folding.
func keyIs(k, name string) bool {
	if k == name {
		return true
	}
	f := foldKey{k: k, wide: -1}
	return f.is(name)
}

// foldKey is a header key compared with several of the package's keys
// (lower-case ASCII tokens) under Unicode case folding, as [keyIs]
// compares one: whether it holds a byte above 0x7F is worked out once,
// when a comparison first needs it.
type foldKey struct {
	k    string
	wide int8 // 1: k holds a byte above 0x7F; 0: it does not; -1: not yet known
}

// is reports whether the key is name, an ASCII key, as strings.EqualFold
// compares them. EqualFold walks both strings a rune at a time and needs
// them to end together; each rune of name is one byte, so a key that
// folds to it is never shorter, and is longer only through runes of
// several bytes (ſ folds to s, K to k). An ASCII key of another length is
// settled without EqualFold, which compared a key sharing a prefix with
// one of ours rune by rune up to the prefix's end: the split mode's
// sandboxkit-split-source against sandbox-id and each sandbox.* key, on
// every copy a split-mode sandbox reader decides.
//
// A key whose first byte is ASCII and another letter, or another byte,
// than name's first is settled first, also without looking for bytes
// above 0x7F: most keys differ from ours there (traceparent, baggage
// against sandbox-id), and EqualFold settled those at once.
func (f *foldKey) is(name string) bool {
	switch {
	case f.k == name:
		return true
	case len(f.k) < len(name) || name == "":
		return false
	case f.k[0] < utf8.RuneSelf && lowerASCII(f.k[0]) != lowerASCII(name[0]),
		len(f.k) > len(name) && !f.isWide():
		return false
	}
	return strings.EqualFold(f.k, name)
}

// lowerASCII is c in lower case when it is an ASCII capital letter.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isWide reports whether the key holds a byte above 0x7F.
func (f *foldKey) isWide() bool {
	if f.wide < 0 {
		f.wide = wideKey(f.k)
	}
	return f.wide == 1
}

// wideKey is 1 when k holds a byte above 0x7F, else 0.
func wideKey(k string) int8 {
	for i := 0; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			return 1
		}
	}
	return 0
}
