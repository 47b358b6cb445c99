package propagation

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sandboxkit/sandboxkit/internal/keytext"
)

type keyKind uint8

const (
	kindNone keyKind = iota
	kindID
	kindActor
	kindOrigin
	kindTicket
	kindCompat
)

func (c *Codec) kind(key string) keyKind {
	// Every key of ours starts with the common prefix: most foreign keys
	// are told apart by it alone.
	if len(key) < len(c.prefix) || key[:len(c.prefix)] != c.prefix {
		return kindNone
	}
	switch key {
	case c.cfg.idKey:
		return kindID
	case c.cfg.actorKey:
		return kindActor
	case c.cfg.originKey:
		return kindOrigin
	case c.cfg.ticketKey:
		return kindTicket
	}
	for _, k := range c.cfg.compat {
		if key == k {
			return kindCompat
		}
	}
	return kindNone
}

// classify returns the kind of the raw key of a baggage member (the bytes
// before its first '=', ';' or ','), as any parser a hop may run reads it,
// and whether it is our key as written (only SP and HTAB around it, which
// every parser trims alike). A key that is ours only to a lenient reader is
// a lookalike: OpenTelemetry Go trims every Unicode space around a key,
// OpenTelemetry JS and Python also percent-decode keys (Python reading '+'
// as a space and stripping U+001C..U+001F too), and OpenTelemetry Ruby
// deletes ASCII white space anywhere in the header before it decodes; each
// hop re-serialises the key it read. Such a member is ours (found,
// stripped) but never readable.
func (c *Codec) classify(raw string, w *work) (k keyKind, exact bool) {
	t := trimOWS(raw)
	if k := c.kind(t); k != kindNone {
		return k, true
	}
	if !lenient(t) {
		return kindNone, false
	}
	// Past the work budget every key a lenient parser may read otherwise
	// is taken for a lookalike of the ID key: ours, never readable.
	if !w.spend(keyCost + len(t)) {
		return kindID, false
	}
	if c.odd {
		return c.oddKind(t, w), false
	}
	n, ok := w.normalize(t)
	if !ok {
		return kindID, false
	}
	return c.kindOf(n), false
}

// kindOf is [Codec.kind] of the key b holds, without making a string of it.
func (c *Codec) kindOf(b []byte) keyKind {
	if len(b) < len(c.prefix) || string(b[:len(c.prefix)]) != c.prefix {
		return kindNone
	}
	switch {
	case string(b) == c.cfg.idKey:
		return kindID
	case string(b) == c.cfg.actorKey:
		return kindActor
	case string(b) == c.cfg.originKey:
		return kindOrigin
	case string(b) == c.cfg.ticketKey:
		return kindTicket
	}
	for _, k := range c.cfg.compat {
		if string(b) == k {
			return kindCompat
		}
	}
	return kindNone
}

// Scan limits: the most bytes and members of baggage that may hold a
// member of ours that the codec reads member by member. Above them (four
// and eight times the W3C limits, [MaxBaggageBytes] and
// [MaxBaggageMembers]) such baggage is unreadable (a trusted source's
// request is refused) and [Codec.Strip] removes it whole, decided by one
// linear pass over its bytes: a client cannot make the codec read a
// megabyte of lenient keys on every request. OpenTelemetry Go itself
// reads nothing of a baggage line over 8192 bytes, but OpenTelemetry JS
// and other lenient readers have no such limit, so such baggage cannot
// simply be passed over.
const (
	MaxScanBaggageBytes   = 4 * MaxBaggageBytes
	MaxScanBaggageMembers = 8 * MaxBaggageMembers
)

// overScan reports whether lines, joined by commas, are over the scan
// limits, members counted as commas plus one per line (empty members
// too), and their total length.
func overScan(lines []string) (over bool, total int) {
	for _, line := range lines {
		total += len(line) + 1
	}
	total = max(total-1, 0)
	if total > MaxScanBaggageBytes {
		return true, total
	}
	// There are at most total+1 members (each takes a byte but one):
	// small baggage, all baggage within the W3C limits, is not counted.
	if total < MaxScanBaggageMembers {
		return false, total
	}
	members := 0
	for _, line := range lines {
		members += strings.Count(line, ",") + 1
	}
	return members > MaxScanBaggageMembers, total
}

// work is what is left of the budget for the lenient readings of the keys
// of one baggage header: each key a lenient parser may read otherwise
// costs keyCost and its length, each round of its reading its length
// twice (decoding, squeezing), each reading [Codec.oddKind] follows
// readingCost and three times its length. The budget is workBase and
// workPerByte per byte of the header: enough for any baggage within the
// W3C limits whose keys are all percent-encoded, and a bound on the time
// a hostile header within the scan limits costs. A key met after the
// budget is spent is taken for ours and never readable: the codec fails
// closed.
type work struct {
	left int
	buf  []byte // scratch for [work.normalize]
}

const (
	keyCost     = 16
	readingCost = 192 // a reading in [Codec.oddKind]: three strings made
	workBase    = 8192
	workPerByte = 8
)

func newWork(total int) work { return work{left: workBase + workPerByte*total} }

// spend takes n from w and reports whether w was not overspent.
func (w *work) spend(n int) bool {
	w.left -= n
	return w.left >= 0
}

// maxReadings bounds the readings [Codec.oddKind] looks at for one key.
const maxReadings = 64

// oddKind is the lenient half of [Codec.classify] for a codec with a key
// holding '+' or '%' (token bytes that a lenient parser decodes). For
// such a key the end of [normalizeKey]'s chain is not enough: a parser
// may stop before it, at a spelling that is our key. OpenTelemetry Go
// only trims Unicode spaces (it reads "\u00a0a+b" as "a+b", which
// normalises on to "ab"), and OpenTelemetry JS decodes "a%2Bb" once, to
// "a+b", without reading '+' as a space. So every reading reachable by
// squeezing ([squeeze]), decoding '+' and escapes ([decodeKey]) and
// decoding escapes only ([decodePercent]) is compared with our keys, the
// shortest chains first. Readings only get shorter: one shorter than our
// shortest key is not followed. It allocates; it runs only on keys
// [lenient] flags, with such a codec. Past maxReadings, or past the work
// budget w, it fails closed: the key counts as a lookalike of the ID key.
func (c *Codec) oddKind(t string, w *work) keyKind {
	readings := make([]string, 1, 8)
	readings[0] = t
	for i := 0; i < len(readings); i++ {
		s := readings[i]
		if !w.spend(readingCost + 3*len(s)) {
			return kindID
		}
		for _, r := range [...]string{squeeze(s), decodeKey(s), decodePercent(s)} {
			if len(r) < c.minKey || slices.Contains(readings, r) {
				continue
			}
			if k := c.kind(r); k != kindNone {
				return k
			}
			if len(readings) == maxReadings {
				return kindID
			}
			readings = append(readings, r)
		}
	}
	return kindNone
}

// decodePercent percent-decodes s, leaving '+' and a malformed escape as
// they are (JavaScript's decodeURIComponent, Go's url.PathUnescape,
// .NET's Uri.UnescapeDataString).
func decodePercent(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// lenient reports whether a lenient parser may read key, trimmed of SP and
// HTAB, as another key than its bytes: it holds a percent escape, a '+', a
// space inside it, or a byte outside printable ASCII (a Unicode space, a
// control byte).
func lenient(key string) bool {
	for i := 0; i < len(key); i++ {
		if c := key[i]; c == '%' || keytext.Skippable(c) || c == 0x7f {
			return true
		}
	}
	return false
}

// normalize returns raw as the most lenient chain of hops reads it: what
// any parser drops removed ([squeeze]), then percent-decoded ('+' as a
// space, [decodeKey]) and squeezed again, until nothing changes (at most
// 16 rounds). It works in place in w's scratch buffer, which the result
// lives in until the next call: one allocation per header, not several
// per key. It only runs on keys [lenient] flags. It reports false, the
// reading not made, when it would overspend w.
func (w *work) normalize(raw string) ([]byte, bool) {
	if !w.spend(len(raw)) {
		return nil, false
	}
	b := squeezeBytes(append(w.buf[:0], raw...))
	for range 16 {
		if !w.spend(2 * len(b)) {
			return nil, false
		}
		var changed bool
		b, changed = decodeKeyBytes(b)
		if !changed {
			break // and b, squeezed already, stays as it is
		}
		b = squeezeBytes(b)
	}
	w.buf = b
	return b, true
}

// squeezeBytes is [squeeze] in place.
func squeezeBytes(b []byte) []byte {
	o := 0
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf {
			if c > 0x20 {
				b[o] = c
				o++
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		drop := unicode.IsSpace(r) || r == '\uFEFF'
		if r == utf8.RuneError && n == 1 {
			drop = b[i] == 0x85 || b[i] == 0xa0
		}
		if !drop {
			o += copy(b[o:], b[i:i+n])
		}
		i += n
	}
	return b[:o]
}

// decodeKeyBytes is [decodeKey] in place; it reports whether it changed
// anything (a '+' or a valid escape).
func decodeKeyBytes(b []byte) ([]byte, bool) {
	i := 0
	for i < len(b) && b[i] != '+' && b[i] != '%' {
		i++
	}
	o, changed := i, false
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '+':
			b[o], changed = ' ', true
		case c == '%' && i+2 < len(b) && ishex(b[i+1]) && ishex(b[i+2]):
			b[o], changed = unhex(b[i+1])<<4|unhex(b[i+2]), true
			i += 2
		default:
			b[o] = c
		}
		o++
	}
	return b[:o], changed
}

// decodeKey percent-decodes s, '+' as a space, leaving a malformed escape
// as it is (Python's unquote_plus).
func decodeKey(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// squeeze removes from s every rune some parser drops from a key: ASCII
// space and control characters anywhere (Ruby deletes ASCII white space
// anywhere, Python's str.strip removes U+001C..U+001F around a key),
// Unicode white space (Go's strings.TrimSpace, Python's str.strip) and the
// byte-order mark (JavaScript's String.prototype.trim). Parsers trim the
// latter only around a key; removing them inside too only widens what
// counts as ours. A byte that is not UTF-8 is kept as it is, unless it is
// 0x85 or 0xA0: Node.js hands header values to JavaScript as Latin-1, where
// they are U+0085 and U+00A0, which OpenTelemetry JS (U+00A0) and Python's
// str.strip (both) trim. It returns s itself when there is nothing to
// remove.
func squeeze(s string) string {
	var b []byte
	for i := 0; i < len(s); {
		// ASCII first: of it, unicode.IsSpace holds only for bytes up
		// to 0x20.
		drop, n := s[i] <= 0x20, 1
		if s[i] >= utf8.RuneSelf {
			var r rune
			r, n = utf8.DecodeRuneInString(s[i:])
			drop = unicode.IsSpace(r) || r == '\uFEFF'
			if r == utf8.RuneError && n == 1 {
				drop = s[i] == 0x85 || s[i] == 0xa0
			}
		}
		switch {
		case drop && b == nil:
			b = append(make([]byte, 0, len(s)), s[:i]...)
		case !drop && b != nil:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	if b == nil {
		return s
	}
	return string(b)
}

// minPrefix is the length from which the keys' common prefix alone is a
// selective enough test in [Codec.mentions].
const minPrefix = 4

// mentions reports whether any line may hold a member of ours: it
// contains one of our keys' text anywhere, also with bytes a parser drops
// inside it (see [keytext.Contains]), or a '%', which may hide a
// percent-encoded key. It is the cheap test that lets baggage without our
// members pass without being split. When the keys share a long enough
// prefix, finding the prefix is enough (the scan that follows settles it).
func (c *Codec) mentions(lines []string) bool { return c.holds(lines, &c.ours) }

// holds reports whether any line holds a '%' or the text of one of the
// needles of s (see [keytext.Contains]). Each needle is looked for at its
// anchor byte only (see [needleSet]): one strings.IndexByte per anchor
// byte and line, and a match tried where it stops. Most baggage holds none
// of the anchors; when there are at most four bytes to look for (with the
// default keys '%', 'x' and 'k'), a short line holding none of them is
// passed over by one test of all of them at once, eight bytes at a time
// ([needleSet.any]), for about 25 instructions per 8 bytes. That beats
// the calls of strings.IndexByte on short lines only: at 62 bytes of
// foreign baggage it cost 743 instructions an Extract against 592 without
// it (callgrind), so longer lines go to IndexByte directly.
func (c *Codec) holds(lines []string, s *needleSet) bool {
	for _, line := range lines {
		if s.wide && len(line) <= wideMax && !s.any(line) {
			continue
		}
		for k := 0; k < len(s.bytes); k++ {
			if strings.IndexByte(line, s.bytes[k]) >= 0 && (k == 0 || holdsAt(line, &s.anchors[k-1])) {
				return true
			}
		}
	}
	return false
}

// wideMax is the longest line [needleSet.any] is tried on first.
const wideMax = 32

// lowBits and highBits are the lowest and the highest bit of each byte of
// a word.
const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// any reports whether line holds one of the bytes of s, which is wide:
// a word of eight bytes of line is compared with the four words of s at
// once, each byte with each byte (a zero byte of w^word is a match, found
// exactly by (x-lowBits) &^ x & highBits). A line that is not a multiple of
// eight long ends with the word of its last eight bytes, read again in
// part; a line under eight bytes is read byte by byte.
func (s *needleSet) any(line string) bool {
	w0, w1, w2, w3 := s.words[0], s.words[1], s.words[2], s.words[3]
	n := len(line)
	if n < 8 {
		for i := 0; i < n; i++ {
			if b := uint64(line[i]) * lowBits; b == w0 || b == w1 || b == w2 || b == w3 {
				return true
			}
		}
		return false
	}
	for i := 0; i < n-8; i += 8 {
		if w := load64(line, i); (zeroByte(w^w0)|zeroByte(w^w1)|zeroByte(w^w2)|zeroByte(w^w3))&highBits != 0 {
			return true
		}
	}
	w := load64(line, n-8)
	return (zeroByte(w^w0)|zeroByte(w^w1)|zeroByte(w^w2)|zeroByte(w^w3))&highBits != 0
}

// zeroByte, masked with highBits, is not zero exactly when x has a zero
// byte (the high bit of its lowest zero byte is set; a byte above it may be
// marked too, which a yes-or-no test does not mind).
func zeroByte(x uint64) uint64 { return (x - lowBits) &^ x }

// load64 returns the eight bytes of s from index i as a little-endian
// word: the compiler reads them in one load.
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// holdsAt reports whether line holds one of a's needles with its anchor
// at one of the places line holds a.b.
func holdsAt(line string, a *anchorSet) bool {
	for i := 0; ; i++ {
		n := strings.IndexByte(line[i:], a.b)
		if n < 0 {
			return false
		}
		i += n
		for _, x := range a.at {
			if keytext.At(line, i, x.needle[x.j:]) && endsAt(line, i, x.needle[:x.j]) {
				return true
			}
		}
	}
}

// endsAt reports whether s holds pre right before index i, [Skippable]
// bytes allowed after each of pre's bytes: the part of a needle before its
// anchor, matched backwards. pre holds no byte a parser drops (see
// [newNeedleSet]), so each byte of s either matches or is skipped, and the
// match is the only one.
//
// [Skippable]: keytext.Skippable
func endsAt(s string, i int, pre string) bool {
	for k := len(pre) - 1; k >= 0; {
		i--
		if i < 0 {
			return false
		}
		switch {
		case s[i] == pre[k]:
			k--
		case !keytext.Skippable(s[i]):
			return false
		}
	}
	return true
}

// scanBaggage finds our members in the baggage lines without parsing the
// foreign ones beyond their keys: a malformed foreign member neither hides
// ours nor fails the request. Over-limit baggage is judged only when it
// carries a member of ours. headerID is the ID from the dedicated header,
// which the baggage must agree with.
//
// It is one pass over the bytes: a member's key runs to the first '=',
// ';' or ','; a foreign member is skipped to the next ',' unread.
func (c *Codec) scanBaggage(lines []string, m *Markers, headerID string) error {
	if len(lines) == 0 || !c.mentions(lines) {
		return nil
	}
	over, size := overScan(lines)
	if over {
		m.Found, m.Baggage = true, true
		return fmt.Errorf("%w: %d bytes of baggage that may hold a member of ours, over the scan limits (%d bytes, %d members)", ErrBaggageLimit, size, MaxScanBaggageBytes, MaxScanBaggageMembers)
	}
	w := newWork(size)
	var (
		err            error
		total, members int
		ours           bool
		compatID       string
		bagID          string
	)
	// fail keeps the first error; the others are never made (a hostile
	// baggage may hold hundreds of unreadable members).
	fail := func(e func() error) {
		if err == nil {
			err = e()
		}
	}
	for i, line := range lines {
		if i > 0 {
			total++ // the comma that joins header lines
		}
		total += len(line)
		for len(line) > 0 {
			j := keyEnd(line)
			raw := line[:j]
			if j == len(line) || line[j] == ',' {
				// A member that is a bare key, or empty.
				line = after(line, j)
				if trimOWS(raw) == "" {
					continue
				}
				members++
				if k, _ := c.classify(raw, &w); k != kindNone {
					ours = true
					fail(func() error { return fmt.Errorf("%w: baggage member %s has no value", ErrMalformed, quote(raw)) })
				}
				continue
			}
			members++
			sep, rest := line[j], line[j+1:]
			k, exact := c.classify(raw, &w)
			if k == kindNone {
				// Skip the member: it runs to the next comma.
				if e := strings.IndexByte(rest, ','); e >= 0 {
					line = rest[e+1:]
				} else {
					line = ""
				}
				continue
			}
			// Ours: the member runs to the next comma, its value to the
			// first ';' (member properties are not ours to read, but they
			// must be well formed: OpenTelemetry drops a member whose
			// properties are not).
			e, semi, escaped := 0, -1, false
			for ; e < len(rest) && rest[e] != ','; e++ {
				switch rest[e] {
				case ';':
					if semi < 0 {
						semi = e
					}
				case '%':
					escaped = true
				}
			}
			line = after(rest, e)
			ours = true
			if !exact {
				fail(func() error {
					return fmt.Errorf("%w: baggage key %s reads as %s to a lenient parser", ErrMalformed, quote(raw), quote(c.keyName(k)))
				})
				continue
			}
			if sep == ';' {
				fail(func() error { return fmt.Errorf("%w: baggage member %s has no value", ErrMalformed, quote(raw)) })
				continue
			}
			value := rest[:e]
			if semi >= 0 {
				value = rest[:semi]
				if !validProperties(rest[semi+1 : e]) {
					fail(func() error {
						return fmt.Errorf("%w: baggage member %s has malformed properties", ErrMalformed, quote(raw))
					})
					continue
				}
			}
			v, uerr := trimOWS(value), error(nil)
			if !octets(v) {
				fail(func() error {
					return fmt.Errorf("%w: baggage member %s: value %s holds bytes a baggage value may not", ErrMalformed, quote(raw), shown(k, v))
				})
				continue
			}
			if escaped {
				v, uerr = unescape(v)
			}
			if uerr != nil {
				fail(func() error { return fmt.Errorf("%w: baggage member %s: %v", ErrMalformed, quote(raw), uerr) })
				continue
			}
			if v == "" {
				fail(func() error { return fmt.Errorf("%w: baggage member %s is empty", ErrMalformed, quote(raw)) })
				continue
			}
			var dst *string
			switch k {
			case kindID:
				dst = &bagID
			case kindActor:
				dst = &m.Sandbox.Actor
			case kindOrigin:
				dst = &m.Sandbox.Origin
			case kindTicket:
				dst = &m.Ticket
			case kindCompat:
				dst = &compatID
			}
			if *dst != "" && *dst != v {
				fail(func() error {
					return fmt.Errorf("%w: baggage member %s has %s and %s", ErrConflict, quote(raw), shown(k, *dst), shown(k, v))
				})
				continue
			}
			*dst = v
		}
	}
	if !ours {
		return nil
	}
	m.Found, m.Baggage = true, true
	if members > MaxBaggageMembers || total > MaxBaggageBytes {
		return fmt.Errorf("%w: %d members, %d bytes (limits %d, %d)", ErrBaggageLimit, members, total, MaxBaggageMembers, MaxBaggageBytes)
	}
	if err != nil {
		return err
	}
	id := headerID
	for _, other := range [...]string{bagID, compatID} {
		if other == "" {
			continue
		}
		if id != "" && id != other {
			return fmt.Errorf("%w: sandbox ID %s in one marker and %s in another", ErrConflict, quote(id), quote(other))
		}
		id = other
	}
	m.Sandbox.ID = id
	return nil
}

// shown returns v, a value of a member of kind k, quoted for an error
// message, which reaches 400 bodies and audit records: a ticket, a bearer
// credential, is never shown, only its key ID and expiry (the fields
// before its signature), and only when they are short.
func shown(k keyKind, v string) string {
	if k != kindTicket {
		return quote(v)
	}
	if i := strings.LastIndexByte(v, '.'); i > 0 && i <= 48 {
		return fmt.Sprintf("a ticket %q...", v[:i+1])
	}
	return "a ticket"
}

// after returns s after the separator at index j, or "" when j is the end.
func after(s string, j int) string {
	if j >= len(s) {
		return ""
	}
	return s[j+1:]
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// unescape percent-decodes a baggage value. It allocates only when the value
// holds an escape.
func unescape(s string) (string, error) {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
			return "", fmt.Errorf("bad percent-encoding at byte %d", i)
		}
		b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		i += 2
	}
	return b.String(), nil
}

// escapeTo percent-encodes v as a W3C baggage value: every byte outside
// baggage-octet, and '%' itself, is escaped.
func escapeTo(b *strings.Builder, v string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		if baggageOctet(c) && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
}

// baggageOctet reports whether c may appear unescaped in a baggage value:
// printable ASCII except space, '"', ',', ';' and '\'.
func baggageOctet(c byte) bool {
	return c > 0x20 && c < 0x7f && c != '"' && c != ',' && c != ';' && c != '\\'
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// keyEnd returns the index of the first '=', ';' or ',' in s, or len(s).
func keyEnd(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '=' || c == ';' || c == ',' {
			return i
		}
	}
	return len(s)
}

// keyName returns our key of kind k (the first compatibility key for
// kindCompat).
func (c *Codec) keyName(k keyKind) string {
	switch k {
	case kindID:
		return c.cfg.idKey
	case kindActor:
		return c.cfg.actorKey
	case kindOrigin:
		return c.cfg.originKey
	case kindTicket:
		return c.cfg.ticketKey
	case kindCompat:
		if len(c.cfg.compat) > 0 {
			return c.cfg.compat[0]
		}
	}
	return ""
}

// octets reports whether every byte of s is a W3C baggage-octet: what
// OpenTelemetry accepts in a value once it has trimmed it.
func octets(s string) bool {
	for i := 0; i < len(s); i++ {
		if !baggageOctet(s[i]) {
			return false
		}
	}
	return true
}

// validProperties reports whether the properties of a member (what follows
// its first ';') are well formed as OpenTelemetry Go reads them: each
// non-empty ';'-separated property is OWS key OWS, or OWS key OWS '=' OWS
// value OWS with a valid percent-encoding. OpenTelemetry drops a member
// whose properties are not, so a member of ours with such properties would
// be read by us and not by it.
func validProperties(s string) bool {
	for s != "" {
		var p string
		p, s, _ = strings.Cut(s, ";")
		if p == "" {
			continue
		}
		i := skipOWS(p, 0)
		k := i
		for k < len(p) && isTokenChar(p[k]) {
			k++
		}
		if k == i {
			return false
		}
		i = skipOWS(p, k)
		if i == len(p) {
			continue
		}
		if p[i] != '=' {
			return false
		}
		i = skipOWS(p, i+1)
		v := i
		for v < len(p) && baggageOctet(p[v]) {
			v++
		}
		if skipOWS(p, v) != len(p) {
			return false
		}
		if _, err := unescape(p[i:v]); err != nil {
			return false
		}
	}
	return true
}

func skipOWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}
