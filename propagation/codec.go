package propagation

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/keytext"
)

// Codec reads and writes a [Sandbox] on a carrier. Build one with
// [NewCodec]; the zero value is not usable. A Codec is immutable and safe for
// concurrent use.
type Codec struct {
	cfg config

	header      string // lower-case, for gRPC metadata, Kafka headers, maps
	headerCanon string // canonical MIME form, for http.Header
	keys        []string
	prefix      string // common prefix of keys, searched first
	// odd is set when a key holds '+' or '%', which lenient parsers
	// decode: lookalikes are then looked for by [Codec.oddKind]. minKey
	// is the length of the shortest key.
	odd    bool
	minKey int
	fields []string

	// keyHeaders are our baggage keys used as header names, as they are
	// and in Jaeger's and OpenTracing's baggage header forms: markers too.
	// The ID key's forms come first.
	keyHeaders []name
	// aliasHeaders are the underscore spellings of the dedicated header,
	// the key headers and the foreign headers, which CGI-style hops read as
	// the hyphenated ones.
	aliasHeaders []name
	// foreignKeys and foreignHeaders are other tools' routing keys, in
	// baggage and as headers, that the codec does not read as its own
	// and strips from untrusted sources (none with
	// [KeepForeignRoutingKeys]).
	foreignKeys    []string
	foreignHeaders []name

	// foreignCanon are the canonical forms of aliasHeaders and
	// foreignHeaders: what [Codec.Foreign] looks for in one pass over a
	// small http.Header. foreignLens[b] has bit n%64 set when one of them,
	// or "Baggage" while there are foreign keys, starts with byte b and
	// is n bytes long: the filter that lets every other key pass unread.
	foreignCanon []string
	foreignLens  [256]uint64

	// markerCanon are the canonical names whose presence alone makes a
	// small http.Header worth reading (the dedicated header, httpKeyHeaders),
	// and actCanon those and foreignCanon: what [Codec.Quiet] looks for.
	// markerLens and actLens are their first byte and length filters, as
	// foreignLens, "Baggage" included.
	markerCanon, actCanon []string
	markerLens, actLens   [256]uint64
	// markerO, actO and keyO are what markerLens, actLens and keyLens
	// held for 'O' and 'o' (in that order) before every bit was set
	// there for a lookalike in OpenTracing's form (see otLookalike),
	// which may have any length: a key that passes for that alone
	// (Origin) is tried as one, and compared with nothing else.
	markerO, actO, keyO [2]uint64
	// markerNames, actNames and keyNames are markerCanon, actCanon and
	// keyCanon by length, what a key that passes the filter is compared
	// with (see byLength).
	markerNames, actNames, keyNames byLength

	// gw* are grpc-gateway's forms of the marker headers, read on an
	// http.Header only: its default header matcher turns a header named
	// Grpc-Metadata-<name> into gRPC metadata named <name>, which a gRPC
	// hop behind it reads as a marker. gwHeader is the dedicated header's
	// (canon "" when it is disabled), read as another value of it;
	// Grpc-Metadata-Baggage is read as baggage (see gatewayBaggage).
	// gwKeyHeaders and gwForeign are those of keyHeaders, and of
	// aliasHeaders and foreignHeaders. httpKeyHeaders is keyHeaders with
	// their gateway forms: on an http.Header each is a marker alone, as
	// a key header is on every other carrier (see NewCodec).
	gwHeader                name
	gwKeyHeaders, gwForeign []name
	httpKeyHeaders          []name
	// gwBases are the names a header stands for under one or more
	// grpc-gateway prefixes (see [Codec.deepForm]): "baggage" first, then
	// the dedicated header, keyHeaders and foreignHeaders, lower-case
	// with '-' for '_'. gwRead are the canonical gateway forms
	// [Codec.Read] reads (the dedicated header's, the baggage's, the key
	// headers'), which are not deep forms.
	gwBases []string
	gwRead  []string
	// gwNames are gwBases as configured, before '-' for '_'.
	gwNames []string
	// gwBaseLens has bit n%64 set when a name of gwBases is n bytes
	// long: most keys under the prefix that are none of them (a
	// client's Grpc-Metadata-X-User) are passed by it.
	gwBaseLens uint64
	// aliasLens[b] has bit n%64 set when a name of gwBases that holds a
	// '-' or a '_' starts with byte b, in either case and spelling, and
	// is n bytes long: the filter of [Codec.alias], which lets a
	// browser's Sec-Fetch-Site pass unread though Sandbox.origin is as
	// long. foreignLens and actLens hold it.
	aliasLens [256]uint64
	// keyCanon are the canonical names of keyHeaders and gwKeyHeaders,
	// keyLens their first byte and length filter (see foreignLens).
	keyCanon []string
	keyLens  [256]uint64

	// ours and act are what [Codec.holds] looks for in baggage: ours our
	// keys' common prefix when it is long enough (minPrefix), else each
	// key; act those and the foreign keys too.
	ours, act needleSet
}

// needleSet is what [Codec.holds] looks for: needles, each found by its
// rarest byte (its anchor, see [rarity]) rather than its first, so that
// most baggage, which holds none of them, is passed over by one
// strings.IndexByte per anchor and never looked at byte by byte.
type needleSet struct {
	// bytes is '%' and then the anchor bytes, anchors[k] the needles
	// anchored at bytes[k+1].
	bytes   string
	anchors []anchorSet
	// wide is set when bytes holds at most four bytes, each then in
	// every byte of one of words (repeated to fill the four): the first
	// test of [Codec.holds], which looks for all of them at once, eight
	// bytes of baggage at a time (see [needleSet.any]).
	wide  bool
	words [4]uint64
}

// anchorSet is the needles that share an anchor byte b, each with the
// index of b in it.
type anchorSet struct {
	b  byte
	at []anchored
}

type anchored struct {
	needle string
	j      int // needle[j] is the anchor
}

// commonBytes lists the bytes of baggage from the most common to the
// least (separators, digits, lower-case letters in English order); any
// other byte is rarer than all of them.
const commonBytes = "=,;-_.:/ 0123456789etaoinsrhldcumfpgwybvkjxqz"

// rarity ranks byte b: higher is rarer in baggage.
func rarity(b byte) int {
	if i := strings.IndexByte(commonBytes, b); i >= 0 {
		return i
	}
	return len(commonBytes)
}

// newNeedleSet anchors each needle at its rarest byte, or at its first
// when it holds a byte a parser may drop (the first-byte test is then
// exactly [keytext.Contains]).
func newNeedleSet(needles []string) needleSet {
	var s needleSet
	for _, k := range needles {
		j := 0
		if !strings.ContainsFunc(k, func(r rune) bool { return r > 0x7f || keytext.Skippable(byte(r)) }) {
			for i := 1; i < len(k); i++ {
				if rarity(k[i]) > rarity(k[j]) {
					j = i
				}
			}
		}
		// One anchor is enough: wherever the needle is, its byte j is
		// one of the places strings.IndexByte stops at.
		s.add(k, j)
	}
	s.bytes = "%"
	for _, a := range s.anchors {
		s.bytes += string([]byte{a.b})
	}
	if len(s.bytes) <= len(s.words) {
		s.wide = true
		for i := range s.words {
			s.words[i] = uint64(s.bytes[min(i, len(s.bytes)-1)]) * lowBits
		}
	}
	return s
}

func (s *needleSet) add(k string, j int) {
	for a := range s.anchors {
		if s.anchors[a].b == k[j] {
			s.anchors[a].at = append(s.anchors[a].at, anchored{k, j})
			return
		}
	}
	s.anchors = append(s.anchors, anchorSet{b: k[j], at: []anchored{{k, j}}})
}

// gatewayPrefix is the prefix under which grpc-gateway's default header
// matcher passes an HTTP header on as gRPC metadata (Grpc-Metadata-Sandbox-Id
// becomes sandbox-id), and gatewayBaggage the baggage header under it.
// gatewayCanon is gatewayPrefix in canonical form, as a server hands it
// over.
const (
	gatewayPrefix  = "grpc-metadata-"
	gatewayCanon   = "Grpc-Metadata-"
	gatewayBaggage = "Grpc-Metadata-Baggage"
)

// name is a carrier key, lower-case and in canonical MIME form.
type name struct{ lower, canon string }

func newName(s string) name { return name{strings.ToLower(s), canonical(s)} }

// Markers is what [Codec.Read] found on a carrier.
type Markers struct {
	// Sandbox is the sandbox the markers name; valid when Found is true and
	// Read returned no error.
	Sandbox Sandbox
	// Ticket is the signed ticket, if one was sent (see [Verifier]).
	Ticket string
	// Found reports whether the carrier holds any of our markers, readable
	// or not. Middleware strips them from untrusted sources when it is set.
	Found bool
	// Baggage reports whether any marker was found in baggage (as opposed
	// to the dedicated header only).
	Baggage bool
}

var defaultCodec = func() *Codec {
	c, err := NewCodec()
	if err != nil {
		panic(err) // unreachable: the defaults are valid
	}
	return c
}()

// Default returns the codec with the default names and no options. It is
// shared and immutable.
func Default() *Codec { return defaultCodec }

// NewCodec returns a codec configured by opts. It fails only when a
// configured header name or baggage key is not a valid token, two keys
// are the same, or a header name or key is, ignoring case and reading '_'
// as '-', a standard HTTP header that clients send for their own reasons
// (Origin, From, Authorization, X-Request-Id, ...): a header named as a
// key is a marker alone, and every request carrying it would hold one.
func NewCodec(opts ...Option) (*Codec, error) {
	cfg := newConfig(opts)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Codec{
		cfg:         cfg,
		header:      strings.ToLower(cfg.header),
		headerCanon: canonical(cfg.header),
	}
	c.keys = append([]string{cfg.idKey, cfg.actorKey, cfg.originKey, cfg.ticketKey}, cfg.compat...)
	c.prefix = commonPrefix(c.keys)
	c.minKey = len(c.keys[0])
	for _, k := range c.keys {
		c.odd = c.odd || strings.ContainsAny(k, "%+")
		c.minKey = min(c.minKey, len(k))
	}
	c.fields = []string{baggageHeader}
	if c.header != "" {
		c.fields = append(c.fields, c.header)
	}
	for _, k := range c.keys {
		for _, p := range baggageHeaderPrefixes {
			n := newName(p + k)
			c.keyHeaders = append(c.keyHeaders, n)
		}
	}

	if !cfg.keepForeign {
		for _, k := range [...]string{SignadotKey, OktetoKey} {
			if c.kind(k) == kindNone {
				c.foreignKeys = append(c.foreignKeys, k)
			}
		}
		for _, h := range [...]string{SignadotJaegerHeader, SignadotDatadogHeader} {
			c.foreignHeaders = append(c.foreignHeaders, newName(h))
		}
	}
	// CGI, WSGI, Rack and PHP hops read Sandbox_Id as Sandbox-Id (both
	// become HTTP_SANDBOX_ID): those spellings are markers to them.
	var hyphened []string
	if c.header != "" {
		hyphened = append(hyphened, c.header)
	}
	for _, n := range append(append([]name(nil), c.keyHeaders...), c.foreignHeaders...) {
		hyphened = append(hyphened, n.lower)
	}
	for _, h := range hyphened {
		if strings.Contains(h, "-") {
			c.aliasHeaders = append(c.aliasHeaders, newName(strings.ReplaceAll(h, "-", "_")))
		}
	}
	// grpc-gateway's forms of each marker header: what its default
	// header matcher passes on to a gRPC hop as that header.
	if c.header != "" {
		c.gwHeader = newName(gatewayPrefix + c.header)
	}
	for _, n := range c.keyHeaders {
		c.gwKeyHeaders = append(c.gwKeyHeaders, newName(gatewayPrefix+n.lower))
	}
	for _, n := range append(append([]name(nil), c.aliasHeaders...), c.foreignHeaders...) {
		c.gwForeign = append(c.gwForeign, newName(gatewayPrefix+n.lower))
	}
	// Every key header names a marker alone, the actor's, origin's and
	// ticket's too, and so does each under the gateway's prefix: the gRPC
	// hop behind the gateway, or a header-copying handler, reads any
	// metadata key named as one of our keys as an unreadable marker (see
	// [Codec.keyHeader]), as a Kafka hop does a record header, and a
	// Jaeger or OpenTracing propagator turns Uberctx-Sandbox.actor into
	// baggage sandbox.actor, which the next hop refuses. So the HTTP side
	// finds them too (stripped from untrusted clients, 400 from trusted
	// ones): one key, one answer on every carrier.
	c.httpKeyHeaders = slices.Concat(c.keyHeaders, c.gwKeyHeaders)
	// Deep forms: any number of gateway prefixes (each gateway removes
	// one) before the name of a header some hop acts on.
	c.gwBases = []string{baggageHeader}
	if c.header != "" {
		c.gwBases = append(c.gwBases, c.header)
		c.gwRead = append(c.gwRead, c.gwHeader.canon)
	}
	for _, n := range slices.Concat(c.keyHeaders, c.foreignHeaders) {
		c.gwBases = append(c.gwBases, n.lower)
	}
	c.gwNames = slices.Clone(c.gwBases)
	for i, b := range c.gwBases {
		c.gwBases[i] = strings.ReplaceAll(b, "_", "-")
		c.gwBaseLens |= 1 << (len(b) % 64)
		if i > 0 && strings.ContainsAny(b, "-_") {
			for _, f := range []byte{b[0], strings.ToUpper(b[:1])[0], strings.ToLower(b[:1])[0], strings.NewReplacer("-", "_", "_", "-").Replace(b[:1])[0]} {
				c.aliasLens[f] |= 1 << (len(b) % 64)
			}
		}
	}
	c.gwRead = append(c.gwRead, gatewayBaggage)
	for _, n := range c.gwKeyHeaders {
		c.gwRead = append(c.gwRead, n.canon)
	}
	for _, n := range slices.Concat(c.keyHeaders, c.gwKeyHeaders) {
		c.keyCanon = append(c.keyCanon, n.canon)
		c.keyLens[n.canon[0]] |= 1 << (len(n.canon) % 64)
	}
	for _, n := range slices.Concat(c.aliasHeaders, c.foreignHeaders, c.gwForeign) {
		c.foreignCanon = append(c.foreignCanon, n.canon)
	}
	lens := c.foreignCanon
	if len(c.foreignKeys) > 0 {
		lens = append(lens[:len(lens):len(lens)], "Baggage", gatewayBaggage)
	}
	for _, k := range lens {
		c.foreignLens[k[0]] |= 1 << (len(k) % 64)
	}
	// A deep form (see deepForm) may have any length: every key that
	// starts with the gateway prefix's first byte passes, and only those
	// are looked at further.
	c.foreignLens['G'], c.foreignLens['g'] = ^uint64(0), ^uint64(0)
	for b, l := range c.aliasLens {
		c.foreignLens[b] |= l // see alias
	}
	if c.header != "" {
		c.markerCanon = append(c.markerCanon, c.headerCanon, c.gwHeader.canon)
	}
	for _, n := range c.httpKeyHeaders {
		c.markerCanon = append(c.markerCanon, n.canon)
	}
	// Baggage behind grpc-gateway is read whenever it is there: it is
	// rare, and so is not looked into before the full read.
	c.markerCanon = append(c.markerCanon, gatewayBaggage)
	c.actCanon = append(append([]string(nil), c.markerCanon...), c.foreignCanon...)
	for _, k := range append(c.markerCanon[:len(c.markerCanon):len(c.markerCanon)], "Baggage") {
		c.markerLens[k[0]] |= 1 << (len(k) % 64)
	}
	for _, k := range append(c.actCanon[:len(c.actCanon):len(c.actCanon)], "Baggage") {
		c.actLens[k[0]] |= 1 << (len(k) % 64)
	}
	c.actLens['G'], c.actLens['g'] = ^uint64(0), ^uint64(0) // see foreignLens
	// A lookalike in OpenTracing's form (see otLookalike) may have any
	// length.
	for _, l := range []struct {
		lens *[256]uint64
		o    *[2]uint64
	}{{&c.actLens, &c.actO}, {&c.markerLens, &c.markerO}, {&c.keyLens, &c.keyO}} {
		*l.o = [2]uint64{l.lens['O'], l.lens['o']}
		l.lens['O'], l.lens['o'] = ^uint64(0), ^uint64(0)
	}
	for b, l := range c.aliasLens {
		c.actLens[b] |= l // see alias
	}
	c.markerNames.add(c.markerCanon...)
	c.actNames.add(c.actCanon...)
	c.keyNames.add(c.keyCanon...)
	var needles []string
	if len(c.prefix) >= minPrefix {
		needles = append(needles, c.prefix)
	} else {
		needles = append(needles, c.keys...)
	}
	c.ours = newNeedleSet(needles)
	c.act = newNeedleSet(slices.Concat(needles, c.foreignKeys))
	return c, nil
}

// scanSmall reads a small http.Header in one pass, cheaper than looking
// each name up (see [smallHeader]): hit reports a key among names, bag
// holds the Baggage lines. Each key is filtered by its first byte and
// length (lens) and compared with names only when it passes. A key counts
// whatever its values, as a lookup finds it.
//
// It stops at the last key rather than letting the iterator look for
// another: a Go map of up to 8 entries is one group of 8 slots, which the
// iterator walks from a random one, and the call that reports the end
// walks every slot after the last key (callgrind: Extract/baseline 507 →
// 444 instructions, Handler/baseline 973 → 948).
func (c *Codec) scanSmall(h http.Header, lens *[256]uint64, o *[2]uint64, names *byLength) (bag []string, hit bool) {
	left := len(h)
	for k, v := range h {
		if bit := uint64(1) << (len(k) % 64); len(k) != 0 && lens[k[0]]&bit != 0 {
			if k == "Baggage" {
				bag = v
			} else if onlyO(k[0], bit, o) {
				if c.otLookalike(k) {
					return nil, true
				}
			} else if names.has(k) || c.otLookalike(k) {
				return nil, true
			}
		}
		if left--; left == 0 {
			break // see scanSmall
		}
	}
	return bag, false
}

// onlyO reports whether a key starting with b, whose length bit is bit,
// passed a first-byte-and-length filter only as a possible lookalike in
// OpenTracing's form: b is 'O' or 'o', and the filter held no bit there
// for a name (o, see markerO).
func onlyO(b byte, bit uint64, o *[2]uint64) bool {
	switch b {
	case 'O':
		return o[0]&bit == 0
	case 'o':
		return o[1]&bit == 0
	}
	return false
}

// byLength is a set of header names by their length modulo 64: a key is
// compared only with the names of its length. A browser's request holds
// several keys that pass a first-byte-and-length filter by chance
// (Sec-Fetch-Site is as long as Sandbox.origin and starts with the same
// byte), and each was compared with every name (about forty).
type byLength [64][]string

func (b *byLength) add(names ...string) {
	for _, n := range names {
		b[len(n)%64] = append(b[len(n)%64], n)
	}
}

func (b *byLength) has(k string) bool {
	for _, n := range b[len(k)%64] {
		if k == n {
			return true
		}
	}
	return false
}

func isName(k string, names []string) bool {
	for _, n := range names {
		if k == n {
			return true
		}
	}
	return false
}

// hasHeader reports whether h holds one of names, looked up directly by
// canonical name (a server canonicalises every header name it reads).
func hasHeader(h http.Header, names []name) bool {
	for _, n := range names {
		if _, ok := h[n.canon]; ok {
			return true
		}
	}
	return false
}

// keyHeader reports whether carrier holds a header named as one of our
// baggage keys.
func (c *Codec) keyHeader(carrier otelprop.TextMapCarrier, one *[1]string) bool {
	for _, k := range c.keyHeaders {
		if len(values(carrier, k.lower, k.canon, one)) > 0 {
			return true
		}
	}
	return false
}

// confirmKeyHeaders reports whether every header on carrier named as one
// of our keys (see [Codec.KeyHeaders]; on an http.Header, under
// grpc-gateway's prefix too) holds the value m, read from the dedicated
// header and baggage, has for that key: each is one more reading of the
// member, which a hop running OpenTelemetry's ottrace propagator (or a
// Jaeger one) reads as baggage. A header of the ticket's key is never
// accepted: no hop of ours sends a ticket on, and a copy of it in a
// header would outlive the ticket's removal from the baggage.
func (c *Codec) confirmKeyHeaders(carrier otelprop.TextMapCarrier, isHTTP bool, m *Markers) error {
	var one [1]string
	check := func(names []name) error {
		for i, n := range names {
			vals := values(carrier, n.lower, n.canon, &one)
			if len(vals) == 0 {
				continue
			}
			var want string
			switch c.kind(c.keys[i/len(baggageHeaderPrefixes)]) {
			case kindID, kindCompat:
				want = m.Sandbox.ID
			case kindActor:
				want = m.Sandbox.Actor
			case kindOrigin:
				want = m.Sandbox.Origin
			default:
				return c.errKeyHeader()
			}
			for _, v := range vals {
				if v = trimOWS(v); v == "" || v != want {
					return fmt.Errorf("%w: header %s has %s where the other markers have %s", ErrConflict, n.lower, quote(v), quote(want))
				}
				// OpenTelemetry's ottrace propagator percent-decodes the
				// value (baggage.NewMember), Jaeger's clients decode it
				// as a query ('+' a space): a value that agrees as
				// written may not as they read it.
				if strings.IndexByte(v, '%') >= 0 || i%len(baggageHeaderPrefixes) == 1 && strings.IndexByte(v, '+') >= 0 {
					return fmt.Errorf("%w: header %s has %s, which a hop decoding it reads as another value than the other markers' %s", ErrConflict, n.lower, quote(v), quote(want))
				}
			}
		}
		return nil
	}
	if err := check(c.keyHeaders); err != nil || !isHTTP {
		return err
	}
	if h := http.Header(carrier.(otelprop.HeaderCarrier)); c.otLookalikeIn(h) {
		return c.errKeyHeader()
	}
	return check(c.gwKeyHeaders)
}

// otLookalike reports whether header key k is in OpenTracing's baggage
// header form (ot-baggage-<key>, in any case, '_' for '-') with a key
// that is none of ours as written (those are key headers, see
// [Codec.KeyHeaders]) but one of ours to a lenient parser: a '%' escape
// or a '+' in it (both token bytes, valid in a header name), as in
// Ot-Baggage-Sandbox%2Eid. OpenTelemetry's ottrace propagator reads it
// as the member "sandbox%2eid", which the hop sends on as W3C baggage,
// where a lenient parser reads sandbox.id, and [Codec.Read] an
// unreadable lookalike of it. Every other key costs a test of its first
// byte.
func (c *Codec) otLookalike(k string) bool {
	return len(k) > len(otBaggagePrefix) && k[0]|0x20 == 'o' && c.otLookalikeForm(k)
}

// IsKeyHeaderLookalike reports whether key, a header or metadata key, is
// in OpenTracing's baggage header form (ot-baggage-<key>, any case, '_'
// for '-') with a key that is none of [Codec.KeyHeaders] as written but
// one of [Codec.Keys] once decoded by a lenient parser (a '%' escape or a
// '+' in it: Ot-Baggage-Sandbox%2Eid). OpenTelemetry's ottrace propagator
// reads such a header into baggage, which the hop sends on.
// [Codec.Strip] removes it from any carrier; [Codec.Read] finds it
// unreadable on an http.Header, but on other carriers it reads keys by
// name and does not list them to look for it, so a carrier's own code
// must: kafkamw's readers find a record holding one unreadable, and its
// writer refuses one.
func (c *Codec) IsKeyHeaderLookalike(key string) bool {
	return c.otLookalike(key)
}

// otLookalikeForm is [Codec.otLookalike] past its first tests (inlined
// where they are).
func (c *Codec) otLookalikeForm(k string) bool {
	if !sameName(k[:len(otBaggagePrefix)], otBaggagePrefix) {
		return false
	}
	rest := k[len(otBaggagePrefix):]
	if !lenient(rest) {
		return false
	}
	w := newWork(len(rest))
	kind, _ := c.classify(strings.ToLower(rest), &w)
	return kind != kindNone
}

// otLookalikeIn reports whether h holds a key [Codec.otLookalike]
// reports.
func (c *Codec) otLookalikeIn(h http.Header) bool {
	for k := range h {
		if c.otLookalike(k) {
			return true
		}
	}
	return false
}

func (c *Codec) errKeyHeader() error {
	via := "baggage"
	if c.cfg.header != "" {
		via = c.cfg.header + " or baggage"
	}
	return fmt.Errorf("%w: a header is named as a baggage member key (%s), or as one in Jaeger's or OpenTracing's baggage header form (uberctx-, ot-baggage-), or either under grpc-gateway's prefix (grpc-metadata-): send the sandbox in %s", ErrMalformed, strings.Join(c.keys, ", "), via)
}

// baggageHeaderPrefixes are the prefixes under which a header carries one
// baggage item: none (kcat -H sandbox.id=pr-1), Jaeger's and OpenTracing's
// (OT format). OpenTelemetry's Jaeger and OT propagators read the latter
// two into baggage, which the hop then sends on in W3C form.
var baggageHeaderPrefixes = [...]string{"", "uberctx-", "ot-baggage-"}

// KeyHeaders returns the carrier keys, lower-case, that are markers when a
// header or metadata key of their own: each of [Codec.Keys], as it is and
// prefixed as Jaeger ("uberctx-") and OpenTracing ("ot-baggage-") carry a
// baggage item in a header. The ID key's three forms come first. No hop of
// ours writes them, but an OpenTelemetry ottrace or Jaeger propagator
// does: [Codec.Read] finds them unreadable alone and requires them to
// agree with the other markers beside them; [Codec.Strip] removes them.
func (c *Codec) KeyHeaders() []string {
	out := make([]string, len(c.keyHeaders))
	for i, h := range c.keyHeaders {
		out[i] = h.lower
	}
	return out
}

// Fields returns the carrier keys the codec reads and writes, lower-case.
func (c *Codec) Fields() []string { return append([]string(nil), c.fields...) }

// Header returns the name of the dedicated header, lower-case, or "" when it
// is disabled.
func (c *Codec) Header() string { return c.header }

// Keys returns the baggage member keys the codec treats as its own: ID,
// actor, origin, ticket and any compatibility keys, in that order.
func (c *Codec) Keys() []string { return append([]string(nil), c.keys...) }

// values returns every line of key on carrier without allocating for the
// carriers the library uses.
func values(carrier otelprop.TextMapCarrier, key, canon string, one *[1]string) []string {
	switch cr := carrier.(type) {
	case otelprop.HeaderCarrier:
		return cr[canon]
	case otelprop.ValuesGetter:
		return cr.Values(key)
	}
	one[0] = carrier.Get(key)
	if one[0] == "" {
		return nil
	}
	return one[:]
}

// Read returns the markers on carrier. The error, wrapping one of the
// package's sentinels, reports markers that are present but cannot be
// trusted to name one sandbox: a malformed or invalid value, several
// different values, the dedicated header and baggage disagreeing, or our
// member inside baggage over the W3C limits. Markers.Found is set even when
// an error is returned.
//
// On an http.Header it also reads grpc-gateway's forms, which the gateway
// passes on to a gRPC hop as the markers themselves: Grpc-Metadata-Sandbox-Id
// as one more value of the dedicated header, Grpc-Metadata-Baggage as
// baggage of its own (each must agree with the other markers), and a key
// header under that prefix (Grpc-Metadata-Sandbox.id) as a key header.
//
// A header named as one of our keys (see [Codec.KeyHeaders]) is
// unreadable alone. Beside the dedicated header or baggage it is one more
// reading of the member it names (OpenTelemetry's ottrace propagator
// writes every baggage member as Ot-Baggage-<key>): it must hold the
// value the other markers have for it, else the markers conflict, and
// hold it as every parser reads it: no '%' (ottrace percent-decodes the
// value), nor a '+' in Jaeger's form (its clients read a space). A
// header of the ticket's key is unreadable whatever it holds.
//
// A header named as one of our keys in any of its forms (Sandbox.id,
// Uberctx-Sandbox.actor, Ot-Baggage-Sandbox.ticket), the actor's, origin's
// and ticket's as much as the ID's, is a marker even alone, and
// unreadable, on every carrier: no hop of ours writes one, and Jaeger's
// and OpenTracing's propagators turn the prefixed forms into baggage.
// On an http.Header, a header in OpenTracing's form whose key is ours
// to a lenient parser only (Ot-Baggage-Sandbox%2Eid, Ot-Baggage-Sandbox+.id)
// is unreadable too, beside other markers or alone: ottrace sends it on
// as the baggage member sandbox%2eid.
//
// Read does not allocate when the carrier holds no markers, and allocates
// only to percent-decode values when it does.
func (c *Codec) Read(carrier otelprop.TextMapCarrier) (Markers, error) {
	if h, ok := carrier.(otelprop.HeaderCarrier); ok && c.quiet(http.Header(h)) {
		return Markers{}, nil
	}
	return c.read(carrier)
}

// quiet reports whether h holds none of the markers [Codec.Read] looks for
// when there are no others: no dedicated header, no baggage that
// [Codec.mentions] our keys, no header named as one of our keys in any of
// its forms. It is the whole of Read for a
// request without markers, which most requests are: a few map lookups,
// the cheapest first, and no Markers built.
func (c *Codec) quiet(h http.Header) bool {
	if len(h) <= smallHeader {
		bag, hit := c.scanSmall(h, &c.markerLens, &c.markerO, &c.markerNames)
		return !hit && (len(bag) == 0 || !c.mentions(bag))
	}
	if c.header != "" {
		if _, ok := h[c.headerCanon]; ok {
			return false
		}
		if _, ok := h[c.gwHeader.canon]; ok {
			return false
		}
	}
	if b, ok := h["Baggage"]; ok && c.mentions(b) {
		return false
	}
	if _, ok := h[gatewayBaggage]; ok {
		return false
	}
	return !hasHeader(h, c.httpKeyHeaders) && !c.otLookalikeIn(h)
}

// Quiet reports whether h holds nothing the codec acts on: no marker
// [Codec.Read] finds and nothing [Codec.Foreign] reports. It may report
// false for a header that holds neither (Read and Foreign settle it),
// never true for one that holds either. It is the whole of the check for
// a request without markers, which most requests are: middleware calls it
// first and judges the source only when it reports false. It does not
// allocate, unless a deep grpc-gateway form of baggage (see the package
// documentation, "grpc-gateway's forms") holds a percent-encoded key.
func (c *Codec) Quiet(h http.Header) bool {
	bag, hit := c.scanAct(h)
	return !hit && (len(bag) == 0 || !c.holds(bag, &c.act))
}

// scanAct is [scanSmall] over actCanon, which also reports a deep form
// (see [Codec.deepForm]): a key that starts with 'G' or 'g' passes the
// filter whatever its length, and is compared with the names and tried
// as one; any other key costs what it did.
func (c *Codec) scanAct(h http.Header) (bag []string, hit bool) {
	left := len(h)
	budget := MaxScanBaggageBytes // see bagActs
	for k, v := range h {
		if bit := uint64(1) << (len(k) % 64); len(k) != 0 && c.actLens[k[0]]&bit != 0 {
			if k == "Baggage" {
				bag = v
			} else if onlyO(k[0], bit, &c.actO) {
				if c.otLookalike(k) {
					return nil, true
				}
			} else if n, acts := c.gatewayActs(k, v, &budget); acts || n == 0 && (c.actNames.has(k) || c.alias(k) || c.otLookalike(k)) {
				return nil, true
			}
		}
		if left--; left == 0 {
			break // see scanSmall
		}
	}
	return bag, false
}

// gatewayPrefixes returns how many grpc-gateway prefixes k starts with,
// each in any case and with '_' for '-' (CGI, WSGI, Rack and PHP hops read
// Grpc_Metadata_ as Grpc-Metadata-), and what follows them.
func gatewayPrefixes(k string) (n int, rest string) {
	for len(k) > len(gatewayPrefix) && (k[:len(gatewayPrefix)] == gatewayCanon || sameName(k[:len(gatewayPrefix)], gatewayPrefix)) {
		k = k[len(gatewayPrefix):]
		n++
	}
	return n, k
}

// sameName reports whether header name k is name (lower-case, '-' for
// '_') to a hop that ignores case and reads '_' as '-'.
func sameName(k, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := 0; i < len(k); i++ {
		b := k[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		} else if b == '_' {
			b = '-'
		}
		if b != name[i] {
			return false
		}
	}
	return true
}

// alias reports whether header name k is another spelling of the name
// of a header the codec acts on (one of gwBases after "baggage") to a hop
// that ignores case and reads '_' as '-', not that name itself: the
// all-underscore spelling aliasHeaders lists (Uberctx_sd_routing_key),
// every spelling with some hyphens only written so
// (Uberctx_sd-Routing-Key, Ot-Baggage_sandbox.id), and, for a configured
// name that holds a '_' (WithHeader("X_Sandbox")), those with '-' for it
// (X-Sandbox), which a CGI, WSGI, Rack or PHP hop reads as the header as
// much. A key that does not start as such a name and is not as long as
// one costs a mask test (see aliasLens).
func (c *Codec) alias(k string) bool {
	if len(k) == 0 || c.aliasLens[k[0]]&(1<<(len(k)%64)) == 0 {
		return false
	}
	for i, b := range c.gwBases[1:] {
		if sameName(k, b) && !strings.EqualFold(k, c.gwNames[i+1]) {
			return true
		}
	}
	return false
}

// stripAliases removes from carrier every key [Codec.alias] reports.
func (c *Codec) stripAliases(carrier otelprop.TextMapCarrier) {
	if h, ok := carrier.(otelprop.HeaderCarrier); ok {
		for k := range h {
			if c.alias(k) || c.otLookalike(k) {
				delete(h, k)
			}
		}
		return
	}
	for _, k := range carrier.Keys() {
		if c.alias(k) || c.otLookalike(k) {
			deleteHeader(carrier, k, canonical(k))
		}
	}
}

// gatewayActs returns how many grpc-gateway prefixes k starts with (0
// for a key that does not start with 'G' or 'g', without looking
// further), and whether the codec acts on it: a gateway form [Codec.Read]
// reads, or a deep form (see [Codec.deepForm]). Every name of actCanon
// under the prefix is one of those.
func (c *Codec) gatewayActs(k string, v []string, budget *int) (n int, acts bool) {
	if k[0]|0x20 != 'g' {
		return 0, false
	}
	n, rest := gatewayPrefixes(k)
	if n == 0 || c.gwBaseLens&(1<<(len(rest)%64)) == 0 {
		return n, false
	}
	for i, b := range c.gwBases {
		if sameName(rest, b) {
			// Grpc-Metadata-Baggage is read whatever it holds (see
			// markerCanon); deeper baggage acts by what it holds.
			return n, i != 0 || k == gatewayBaggage || c.bagActs(v, budget)
		}
	}
	return n, false
}

// deepForm reports whether an http.Header key k with values v is a deep
// grpc-gateway form: one or more gateway prefixes (any case, '_' for '-')
// before the name of a header some hop acts on (the dedicated header, a
// key header, a foreign header, or baggage whose values hold a member of
// ours or a foreign key), other than the gateway forms [Codec.Read] reads
// as markers. Each grpc-gateway removes one prefix, so a deep form is a
// marker, or another tool's routing key, to a hop behind a gateway and a
// handler that copies its metadata onto a request, or behind a CGI-style
// hop; this hop does not read it. budget is that of bagActs.
func (c *Codec) deepForm(k string, v []string, budget *int) bool {
	n, rest := gatewayPrefixes(k)
	if n == 0 || c.gwBaseLens&(1<<(len(rest)%64)) == 0 {
		return false
	}
	for i, b := range c.gwBases {
		if !sameName(rest, b) {
			continue
		}
		if n == 1 && isName(k, c.gwRead) {
			return false // read as a marker (see Read)
		}
		return i != 0 || c.bagActs(v, budget)
	}
	return false
}

// bagActs reports whether the baggage lines hold a member the codec acts
// on: one of ours, under any spelling, or a foreign routing key. Lines
// that hold none of their texts nor a '%' are passed at once; the others
// are read, while budget (the bytes one pass over a header reads so, of
// all the deep baggage forms it meets: MaxScanBaggageBytes) lasts, and
// past it they act (fail closed). Hundreds of distinct deep spellings of
// baggage, each holding a '%', would otherwise be read one by one on
// every request (BenchmarkHostileDeepGateway).
func (c *Codec) bagActs(lines []string, budget *int) bool {
	if len(lines) == 0 || !c.holds(lines, &c.act) {
		return false
	}
	_, size := overScan(lines)
	if *budget -= size; *budget < 0 {
		return true
	}
	var m Markers
	err := c.scanBaggage(lines, &m, "")
	return m.Found || err != nil || c.foreignBaggage(lines)
}

// stripDeep removes the deep forms from h (see [Codec.deepForm]): each
// header, or, under baggage's name, the members of ours and the foreign
// routing keys (the header goes when nothing is left).
func (c *Codec) stripDeep(h http.Header) {
	budget := MaxScanBaggageBytes // see bagActs
	for k, v := range h {
		if len(k) <= len(gatewayPrefix) || k[0]|0x20 != 'g' || !c.deepForm(k, v, &budget) {
			continue
		}
		if _, rest := gatewayPrefixes(k); sameName(rest, baggageHeader) {
			c.stripBaggage(otelprop.HeaderCarrier(h), k, k, true, true)
		} else {
			delete(h, k)
		}
	}
}

// read is Read without the quiet test.
func (c *Codec) read(carrier otelprop.TextMapCarrier) (Markers, error) {
	var m Markers
	var one [1]string
	var err error
	h, isHTTP := carrier.(otelprop.HeaderCarrier)
	if c.header != "" {
		vals := values(carrier, c.header, c.headerCanon, &one)
		if isHTTP {
			// grpc-gateway's form is one more value of the header: the
			// gRPC hop behind the gateway reads it as the header.
			if gw := h[c.gwHeader.canon]; len(gw) > 0 {
				vals = slices.Concat(vals, gw)
			}
		}
		for _, v := range vals {
			m.Found = true
			v = trimOWS(v)
			if v == "" {
				if err == nil {
					err = fmt.Errorf("%w: header %s is empty", ErrMalformed, c.cfg.header)
				}
				continue
			}
			if m.Sandbox.ID != "" && m.Sandbox.ID != v && err == nil {
				err = fmt.Errorf("%w: header %s has %s and %s", ErrConflict, c.cfg.header, quote(m.Sandbox.ID), quote(v))
			}
			m.Sandbox.ID = v
		}
	}
	headerID := m.Sandbox.ID
	if berr := c.scanBaggage(values(carrier, baggageHeader, "Baggage", &one), &m, headerID); berr != nil {
		err = berr // the baggage error names the problem more precisely
	}
	if isHTTP {
		// grpc-gateway's baggage is read as baggage of its own (the
		// gRPC hop behind the gateway reads it alone), which must agree
		// with the other markers.
		if gw := h[gatewayBaggage]; len(gw) > 0 {
			id := m.Sandbox.ID
			if id == "" {
				id = headerID
			}
			if berr := c.scanBaggage(gw, &m, id); berr != nil && err == nil {
				err = berr
			}
		}
	}
	// A header named as one of our baggage keys (kcat -H sandbox.id=pr-1,
	// curl -H 'sandbox.id: pr-1') is a marker that no hop of ours writes:
	// unreadable, never ignored.
	var keyHeader bool
	if isHTTP {
		switch {
		case !m.Found:
			keyHeader = hasHeader(http.Header(h), c.httpKeyHeaders) || c.otLookalikeIn(http.Header(h))
		case len(h) <= smallHeader:
			// One pass over a small header costs about as much as
			// looking up the key headers without their gateway forms
			// (see smallHeader).
			_, keyHeader = c.scanSmall(http.Header(h), &c.keyLens, &c.keyO, &c.keyNames)
		default:
			keyHeader = hasHeader(http.Header(h), c.keyHeaders) || hasHeader(http.Header(h), c.gwKeyHeaders) || c.otLookalikeIn(http.Header(h))
		}
	} else {
		keyHeader = c.keyHeader(carrier, &one)
	}
	if keyHeader {
		switch {
		case err != nil:
		case m.Found:
			// Beside the dedicated header or baggage, a key header is
			// one more reading of the member it names (OpenTelemetry's
			// ottrace propagator writes every baggage member as one,
			// Ot-Baggage-Sandbox.id): it must agree.
			err = c.confirmKeyHeaders(carrier, isHTTP, &m)
		default:
			err = c.errKeyHeader()
		}
		m.Found = true
	}
	if err != nil || !m.Found {
		return m, err
	}
	if m.Sandbox.ID == "" {
		return m, fmt.Errorf("%w: actor, origin or ticket without a sandbox ID", ErrMalformed)
	}
	if err := m.Sandbox.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

// Extract reads the sandbox from carrier and returns ctx carrying it. It is
// strict: unreadable markers return ctx unchanged and an error (see
// [Codec.Read]); a carrier without markers returns ctx unchanged and nil.
func (c *Codec) Extract(ctx context.Context, carrier otelprop.TextMapCarrier) (context.Context, error) {
	if h, ok := carrier.(otelprop.HeaderCarrier); ok && c.quiet(http.Header(h)) {
		return ctx, nil
	}
	m, err := c.read(carrier)
	if err != nil || !m.Found {
		return ctx, err
	}
	return c.ContextWithSandbox(ctx, m.Sandbox), nil
}

// ContextWithSandbox is [ContextWithSandbox], and with [WithBaggageMirror]
// it also records s in the context's OpenTelemetry baggage.
func (c *Codec) ContextWithSandbox(ctx context.Context, s Sandbox) context.Context {
	if c.cfg.mirror {
		ctx = c.mirror(ctx, s)
	}
	return ContextWithSandbox(ctx, s)
}

// MirrorContext returns ctx carrying s, with s also recorded in the
// context's OpenTelemetry baggage: our members there, under every
// spelling a parser reads as them, are replaced by those of s; every other
// member is kept, as far as the W3C limits allow (see [Codec.Inject]). An outgoing OpenTelemetry Baggage propagator that runs
// after [Codec.Inject] (an instrumented transport under the library's)
// sets the baggage header from the context and would otherwise send
// other baggage without the sandbox. It allocates.
func (c *Codec) MirrorContext(ctx context.Context, s Sandbox) context.Context {
	return ContextWithSandbox(c.mirror(c.stripContext(ctx, false), s), s)
}

func (c *Codec) mirror(ctx context.Context, s Sandbox) context.Context {
	bag := baggage.FromContext(ctx)
	for _, kv := range [...][2]string{{c.cfg.idKey, s.ID}, {c.cfg.actorKey, s.Actor}, {c.cfg.originKey, s.Origin}} {
		if kv[1] == "" {
			bag = bag.DeleteMember(kv[0])
			continue
		}
		if mem, err := baggage.NewMemberRaw(kv[0], kv[1]); err == nil {
			if b, err := bag.SetMember(mem); err == nil {
				bag = b
			}
		}
	}
	return baggage.ContextWithBaggage(ctx, c.fitMembers(bag))
}

// fitMembers returns bag within the W3C limits ([MaxBaggageMembers]
// members, [MaxBaggageBytes] bytes as a header): other members go, the
// largest first, never ours, until it is. Baggage that holds the
// sandbox's members beside as many others as OpenTelemetry's parser lets
// in is over them: a hop with the library refuses it ([ErrBaggageLimit]),
// an OpenTelemetry-only one keeps the first 64 members (ours among them or
// not, as its propagator writes them in map order) or, over 8192 bytes,
// none. Members lost to the limits would be lost at the next hop anyway.
// A bag well within them costs no encoding.
func (c *Codec) fitMembers(bag baggage.Baggage) baggage.Baggage {
	members := bag.Members()
	// An upper bound of the header's length (percent-encoding at most
	// triples a value).
	bound := 0
	for _, m := range members {
		bound += len(m.Key()) + 2 + 3*len(m.Value())
		for _, p := range m.Properties() {
			v, _ := p.Value()
			bound += len(p.Key()) + 2 + 3*len(v)
		}
	}
	if len(members) <= MaxBaggageMembers && bound <= MaxBaggageBytes {
		return bag
	}
	ours := c.Keys()
	slices.SortStableFunc(members, func(a, b baggage.Member) int { return len(b.String()) - len(a.String()) })
	size := len(bag.String())
	for _, m := range members {
		if bag.Len() <= MaxBaggageMembers && size <= MaxBaggageBytes {
			break
		}
		if slices.Contains(ours, m.Key()) {
			continue
		}
		bag = bag.DeleteMember(m.Key())
		size -= len(m.String()) + 1
	}
	return bag
}

// StripContext returns ctx without a sandbox and without our members in its
// OpenTelemetry baggage: the context-side counterpart of [Codec.Strip], for
// middleware running behind instrumentation that has already extracted
// markers it then decides not to trust. Our members go under every
// spelling a parser reads as them, and so do the foreign routing keys
// [Codec.Strip] removes. It returns ctx itself when there is nothing to
// remove.
func (c *Codec) StripContext(ctx context.Context) context.Context {
	return c.stripContext(ctx, true)
}

// stripContext is StripContext; foreign routing keys go too when
// dropForeign is set.
func (c *Codec) stripContext(ctx context.Context, dropForeign bool) context.Context {
	return c.dropMembers(ContextWithoutSandbox(ctx), true, dropForeign)
}

// isOurs reports whether baggage key raw is one of ours to some parser.
func (c *Codec) isOurs(raw string, w *work) bool {
	k, _ := c.classify(raw, w)
	return k != kindNone
}

// dropMembers returns ctx without our members of its OpenTelemetry
// baggage (under every spelling a parser reads as ours) when ours is set,
// and without foreign routing keys when foreign is set, under one work
// budget for the whole baggage; ctx itself when none goes.
func (c *Codec) dropMembers(ctx context.Context, ours, foreign bool) context.Context {
	bag := baggage.FromContext(ctx)
	if bag.Len() == 0 {
		return ctx
	}
	clean := bag
	members := bag.Members()
	size := 0
	for _, mem := range members {
		size += len(mem.Key()) + len(mem.Value()) + 2
	}
	w := newWork(size)
	for _, mem := range members {
		if key := mem.Key(); ours && c.isOurs(key, &w) || foreign && c.foreign(key, &w) {
			clean = clean.DeleteMember(key)
		}
	}
	if clean.Len() == bag.Len() {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, clean)
}

// Inject writes the context's sandbox to carrier: the dedicated header and
// our baggage members, merged into the baggage already on the carrier. Every
// foreign member is kept, unless the merge would take the baggage over the
// W3C limits ([MaxBaggageMembers], [MaxBaggageBytes]), which the next hop
// refuses: then foreign members go, the largest first, until it fits. All
// of ours are replaced, including a ticket and the compatibility keys,
// which may name another sandbox (a ticket is an edge credential: hops
// behind the edge trust each other by network).
// Without a sandbox in ctx it does nothing and allocates nothing.
func (c *Codec) Inject(ctx context.Context, carrier otelprop.TextMapCarrier) {
	s, ok := FromContext(ctx)
	if !ok {
		return
	}
	c.InjectSandbox(s, carrier)
}

// InjectSandbox writes s to carrier as [Codec.Inject] does.
func (c *Codec) InjectSandbox(s Sandbox, carrier otelprop.TextMapCarrier) {
	if c.header != "" {
		setHeader(carrier, c.header, c.headerCanon, s.ID)
	}
	var one [1]string
	existing := values(carrier, baggageHeader, "Baggage", &one)

	var b strings.Builder
	n := len(c.cfg.idKey) + 1 + len(s.ID)
	if s.Actor != "" {
		n += len(c.cfg.actorKey) + 2 + 3*len(s.Actor)
	}
	if s.Origin != "" {
		n += len(c.cfg.originKey) + 2 + 3*len(s.Origin)
	}
	for _, line := range existing {
		n += len(line) + 1
	}
	b.Grow(n)
	b.WriteString(c.cfg.idKey)
	b.WriteByte('=')
	b.WriteString(s.ID) // a valid ID needs no escaping
	if s.Actor != "" {
		b.WriteByte(',')
		b.WriteString(c.cfg.actorKey)
		b.WriteByte('=')
		escapeTo(&b, s.Actor)
	}
	if s.Origin != "" {
		b.WriteByte(',')
		b.WriteString(c.cfg.originKey)
		b.WriteByte('=')
		escapeTo(&b, s.Origin)
	}
	ours := b.Len()
	c.appendOthers(&b, existing, false)
	setHeader(carrier, baggageHeader, "Baggage", fitBaggage(b.String(), ours))
	if hasOTBaggage(carrier) {
		c.injectOTForm(s, carrier)
	}
}

// otBaggagePrefix is OpenTracing's baggage header form, which
// OpenTelemetry's ottrace propagator reads and writes.
const otBaggagePrefix = "ot-baggage-"

// hasOTBaggage reports whether carrier holds a header in OpenTracing's
// baggage form (ot-baggage-<key>, any case).
func hasOTBaggage(carrier otelprop.TextMapCarrier) bool {
	is := isOTBaggage
	if h, ok := carrier.(otelprop.HeaderCarrier); ok {
		for k := range h {
			if is(k) {
				return true
			}
		}
		return false
	}
	return slices.ContainsFunc(carrier.Keys(), is)
}

// injectOTForm writes s's members in OpenTracing's header form too
// (Ot-Baggage-Sandbox.id), on a carrier that carries other baggage in
// that form: OpenTelemetry's ottrace propagator, extracting after W3C's
// Baggage propagator, replaces the context's baggage with the members it
// finds in that form, so that a hop running only OpenTelemetry would
// otherwise drop the sandbox and call on as production. A value is
// written as ottrace writes one (as it is) only when ottrace reads it
// back as the same: an actor or origin holding '%' or a byte outside
// W3C's baggage value octets has no such header (ottrace's hop then
// drops that member, and the sandbox keeps its ID), and a header of
// ours it would have disagreed with is removed.
//
// The ticket's and the compatibility keys' headers in that form are
// removed, as [Codec.InjectSandbox] removes those members from the
// baggage. Then the members in that form are kept within W3C's limits
// ([MaxBaggageMembers], [MaxBaggageBytes]): ottrace builds its baggage
// with baggage.New, which drops the members over them in map order,
// ours among them or not, so other members' headers go, the largest
// first, until they fit (as other members leave the baggage header).
func (c *Codec) injectOTForm(s Sandbox, carrier otelprop.TextMapCarrier) {
	for i := range c.keys {
		n := c.keyHeaders[i*len(baggageHeaderPrefixes)+2] // "", "uberctx-", "ot-baggage-"
		v := ""
		if i < 3 {
			v = [...]string{s.ID, s.Actor, s.Origin}[i]
		}
		if v == "" || !otValue(v) {
			deleteHeader(carrier, n.lower, n.canon)
			continue
		}
		setHeader(carrier, n.lower, n.canon, v)
	}
	c.fitOTForm(carrier, baggage.Baggage{})
}

// FitOTForm keeps the members in OpenTracing's header form on carrier
// (ot-baggage-<key>) within ottrace's limits once an OpenTelemetry
// ottrace propagator injecting after the codec has added every member of
// bag, the context's baggage, in that form: otelhttp's transport under
// httpmw's, or otelgrpc's stats handler, which gRPC runs after the
// interceptors. [Codec.InjectSandbox] keeps the form within the limits
// as it writes it, but the application's own headers in that form and
// the context's members are then read together by the next hop's
// ottrace, whose baggage.New drops the members over the limits in map
// order, the sandbox's among them or not. Other members' headers that
// are not in bag go, the largest first, until the union fits (bag itself,
// as [Codec.MirrorContext] leaves it, is within them). A carrier without
// that form is left as it is.
func (c *Codec) FitOTForm(carrier otelprop.TextMapCarrier, bag baggage.Baggage) {
	if bag.Len() == 0 || !hasOTBaggage(carrier) {
		return
	}
	c.fitOTForm(carrier, bag)
}

// fitOTForm removes other members' ot-baggage- headers from carrier, the
// largest first, until the members ottrace reads from them, with those of
// bag that an ottrace propagator injecting afterwards adds (or writes over
// a header of the same key), are within W3C's limits as baggage.New counts
// them (a member's size as key=value, which a value's decoding never makes
// longer, and a comma between two). It allocates only when they are not,
// or when bag has members.
func (c *Codec) fitOTForm(carrier otelprop.TextMapCarrier, bag baggage.Baggage) {
	h, isHeader := carrier.(otelprop.HeaderCarrier)
	var keys []string
	if !isHeader {
		keys = carrier.Keys()
	}
	get := func(k string) string {
		if isHeader {
			if v := h[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		return carrier.Get(k)
	}
	each := func(f func(k string)) {
		if isHeader {
			for k := range h {
				if isOTBaggage(k) {
					f(k)
				}
			}
			return
		}
		for _, k := range keys {
			if isOTBaggage(k) {
				f(k)
			}
		}
	}
	// An upper bound first: bag's members counted apart from the
	// headers of the same keys.
	added, addedSize := bag.Members(), 0
	for _, m := range added {
		addedSize += len(m.Key()) + 2 + len(m.Value())
	}
	count, size := len(added), addedSize-1
	each(func(k string) {
		count++
		size += len(k) - len(otBaggagePrefix) + 2 + len(get(k))
	})
	if count <= MaxBaggageMembers && size <= MaxBaggageBytes {
		return
	}
	type member struct {
		key  string
		size int
	}
	var others []member
	count, size = len(added), addedSize-1
	each(func(k string) {
		key := strings.ToLower(k[len(otBaggagePrefix):])
		n := len(key) + 2 + len(get(k))
		if len(added) > 0 {
			if m := bag.Member(key); m.Key() != "" {
				// ottrace writes the bag's value under this key; a
				// second spelling may stay beside it, which the next
				// hop reads as another line of the same key.
				if d := n - (len(key) + 2 + len(m.Value())); d > 0 {
					size += d
				}
				return
			}
		}
		count++
		size += n
		if c.kind(key) == kindNone {
			others = append(others, member{k, n})
		}
	})
	slices.SortStableFunc(others, func(a, b member) int { return b.size - a.size })
	for _, m := range others {
		if count <= MaxBaggageMembers && size <= MaxBaggageBytes {
			return
		}
		if isHeader {
			delete(h, m.key)
		} else {
			deleteHeader(carrier, m.key, m.key)
		}
		count--
		size -= m.size
	}
}

// isOTBaggage reports whether k is a header name in OpenTracing's baggage
// form (ot-baggage-<key>, any case).
func isOTBaggage(k string) bool {
	return len(k) > len(otBaggagePrefix) && strings.EqualFold(k[:len(otBaggagePrefix)], otBaggagePrefix)
}

// otValue reports whether v reads back as itself through ottrace's
// extraction (baggage.NewMember, which percent-decodes and accepts W3C's
// baggage value octets only).
func otValue(v string) bool {
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b < 0x21 || b > 0x7e || b == '"' || b == ',' || b == ';' || b == '\\' || b == '%' {
			return false
		}
	}
	return true
}

// fitBaggage keeps line, our members (its first ours bytes) followed by
// the carrier's other members, within the W3C limits ([MaxBaggageMembers]
// members, [MaxBaggageBytes] bytes): other members go, the largest first,
// never ours, until it is. A carrier's baggage at the limits (forwarded
// from an incoming request whose sandbox came in the dedicated header)
// would otherwise go over them with ours, and the next hop with the
// library refuse the request ([ErrBaggageLimit]) while OpenTelemetry drops
// the whole header. A line within them is returned as it is, unexamined
// but for its length and commas.
func fitBaggage(line string, ours int) string {
	if len(line) <= MaxBaggageBytes && strings.Count(line, ",") < MaxBaggageMembers {
		return line
	}
	var others []string
	n, size := 0, ours
	for m := range strings.SplitSeq(line[ours:], ",") {
		if strings.TrimSpace(m) == "" {
			continue
		}
		others = append(others, m)
		size += 1 + len(m)
	}
	n = strings.Count(line[:ours], ",") + 1 + len(others)
	// The largest go first: the fewest are lost.
	order := make([]int, len(others))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(others[b]) - len(others[a]) })
	for _, i := range order {
		if n <= MaxBaggageMembers && size <= MaxBaggageBytes {
			break
		}
		n--
		size -= 1 + len(others[i])
		others[i] = ""
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(line[:ours])
	for _, m := range others {
		if m != "" {
			b.WriteByte(',')
			b.WriteString(m)
		}
	}
	return b.String()
}

// appendOthers appends to b every member of lines that is not one of ours
// under any spelling a parser reads as ours (see [Codec.classify]), nor,
// when dropForeign is set, another tool's routing key; each preceded by a
// comma when b is not empty. Baggage over the scan limits
// ([MaxScanBaggageBytes], [MaxScanBaggageMembers]) is not split: it is
// dropped whole when it holds the text of one of those keys or a '%'
// (see [Codec.holds]), else appended as it is.
func (c *Codec) appendOthers(b *strings.Builder, lines []string, dropForeign bool) {
	c.appendKept(b, lines, true, dropForeign)
}

// appendKept is appendOthers, our members dropped only when dropOurs is
// set. Over the scan limits a line is dropped whole when it may hold what
// is dropped (a foreign key's needles are searched with ours).
func (c *Codec) appendKept(b *strings.Builder, lines []string, dropOurs, dropForeign bool) {
	over, size := overScan(lines)
	if over {
		// Past the scan limits: dropped whole when it may hold a member
		// of ours (or a foreign one to drop), else kept as it is.
		needles := &c.ours
		if dropForeign {
			needles = &c.act
		}
		if c.holds(lines, needles) {
			return
		}
		for _, line := range lines {
			if line = trimOWS(line); line != "" {
				if b.Len() > 0 {
					b.WriteByte(',')
				}
				b.WriteString(line)
			}
		}
		return
	}
	w := newWork(size)
	for member := range members(lines) {
		raw := member[:keyEnd(member)]
		if dropOurs {
			if k, _ := c.classify(raw, &w); k != kindNone {
				continue
			}
		}
		if dropForeign && c.foreign(raw, &w) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(member)
	}
}

// members yields the members of baggage lines, each without the optional
// whitespace around it, and skips empty ones (a parser does too).
func members(lines []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, line := range lines {
			for line != "" {
				var member string
				member, line, _ = strings.Cut(line, ",")
				if member = trimOWS(member); member != "" && !yield(member) {
					return
				}
			}
		}
	}
}

// foreign reports whether the raw key of a baggage member is, to any
// parser, one of the foreign routing keys the codec strips.
func (c *Codec) foreign(raw string, w *work) bool {
	key := trimOWS(raw)
	if !lenient(key) {
		return slices.Contains(c.foreignKeys, key)
	}
	n, ok := w.normalize(key)
	if !ok {
		return true // past the work budget: fail closed
	}
	for _, k := range c.foreignKeys {
		if string(n) == k {
			return true
		}
	}
	return false
}

// StripsForeign reports whether [Codec.Foreign] can report anything: other
// tools' routing keys (unless built with [KeepForeignRoutingKeys]) or
// underscore spellings of marker headers (whenever a marker header name
// holds a '-').
func (c *Codec) StripsForeign() bool {
	return len(c.foreignKeys) > 0 || len(c.foreignHeaders) > 0 || len(c.aliasHeaders) > 0 || len(c.gwBases) > 0
}

// Foreign reports whether carrier holds a routing key of another tool that
// the codec does not read as its own: Signadot's sd-routing-key or
// Okteto's okteto-divert in baggage (unless [WithSignadot] or [WithOkteto]
// make it ours), or Signadot's header forms ([SignadotJaegerHeader], [SignadotDatadogHeader]). A hop of
// those tools acts on them, so middleware strips them from untrusted
// sources, with an audit record, as it strips our markers. It is always
// false with [KeepForeignRoutingKeys]. On an http.Header it does not
// allocate unless a baggage key is percent-encoded; on another carrier it
// asks for its keys (carrier.Keys).
//
// It also reports an underscore spelling of a marker header (Sandbox_Id,
// Uberctx_sd_routing_key, and those with some hyphens only written so,
// Uberctx_sd-Routing-Key), which CGI, WSGI, Rack and PHP hops read as the
// hyphenated header; [Codec.Strip] removes those too, whatever the options.
// On an http.Header it reports grpc-gateway's forms of all of these
// (Grpc-Metadata-Sandbox_Id, Grpc-Metadata-Uberctx-Sd-Routing-Key, foreign
// keys in Grpc-Metadata-Baggage), which the gateway passes on to a gRPC
// hop as the keys themselves, and the deep forms of every header the
// codec acts on (see the package documentation, "grpc-gateway's forms":
// Grpc-Metadata-Grpc-Metadata-Sandbox-Id,
// in any case, with '_' for '-'), which Read does not read. On an
// http.Header it reads the keys in one pass, whatever their number.
func (c *Codec) Foreign(carrier otelprop.TextMapCarrier) bool {
	if hc, ok := carrier.(otelprop.HeaderCarrier); ok {
		return c.foreignHeader(http.Header(hc))
	}
	var one [1]string
	for _, h := range c.aliasHeaders {
		if len(values(carrier, h.lower, h.canon, &one)) > 0 {
			return true
		}
	}
	// The other spellings (see alias) have no fixed name to look up.
	for _, k := range carrier.Keys() {
		if c.alias(k) && len(values(carrier, k, canonical(k), &one)) > 0 {
			return true
		}
	}
	if len(c.foreignKeys) == 0 && len(c.foreignHeaders) == 0 {
		return false
	}
	for _, h := range c.foreignHeaders {
		if len(values(carrier, h.lower, h.canon, &one)) > 0 {
			return true
		}
	}
	return c.foreignBaggage(values(carrier, baggageHeader, "Baggage", &one))
}

// smallHeader is the most keys an http.Header may have for
// [Codec.Read] to read it in one pass rather than look each name up:
// a Go map of up to 8 entries is one group, which a pass reads for about
// the cost of five lookups, against the thirteen or so names looked up
// otherwise (on a 2-core VM: 4 keys 54 ns against 121 ns, 9 keys about
// even, 16 keys 152 ns against 86 ns). [Codec.Quiet] and [Codec.Foreign]
// read every http.Header in one pass: deep grpc-gateway forms (see
// [Codec.deepForm]) have no fixed name to look up, and the forty or so
// names they look for besides cost more to look up than a pass over a
// browser's 14 keys (BenchmarkQuiet/14-keys, callgrind: 8821 instructions
// looked up, 2091 in one pass; BenchmarkQuiet/4-keys 826 and 835).
const smallHeader = 8

// foreignHeader is [Codec.Foreign] on an http.Header, in one pass over
// its keys: each is filtered by its first byte and length, and only a
// key that passes is compared with the names and tried as a deep form
// (every key starting with 'G' or 'g' passes). A key counts only with a
// value, as a lookup that finds none counts it absent.
func (c *Codec) foreignHeader(h http.Header) bool {
	var bag, gw []string
	left := len(h)
	budget := MaxScanBaggageBytes // see bagActs
	for k, v := range h {
		left--
		if len(v) != 0 && len(k) != 0 && c.foreignLens[k[0]]&(1<<(len(k)%64)) != 0 {
			if k == "Baggage" {
				bag = v
			} else if k == gatewayBaggage {
				gw = v
			} else if slices.Contains(c.foreignCanon, k) || c.alias(k) || c.deepForm(k, v, &budget) {
				return true
			}
		}
		if left == 0 {
			break // see scanSmall
		}
	}
	return c.foreignBaggage(bag) || c.foreignBaggage(gw)
}

// foreignBaggage reports whether the baggage lines hold a foreign routing
// key under any spelling. Over the scan limits, a line that holds the text
// of one or a '%' is enough; under them, a key met past the work budget
// counts as one.
func (c *Codec) foreignBaggage(lines []string) bool {
	if len(c.foreignKeys) == 0 {
		return false
	}
	over, size := overScan(lines)
	w := newWork(size)
	for _, line := range lines {
		hit := strings.IndexByte(line, '%') >= 0
		for _, k := range c.foreignKeys {
			hit = hit || keytext.Contains(line, k)
		}
		if !hit {
			continue
		}
		if over {
			return true // past the scan limits: stripped whole
		}
		for line != "" {
			var member string
			member, line, _ = strings.Cut(line, ",")
			if c.foreign(member[:keyEnd(member)], &w) {
				return true
			}
		}
	}
	return false
}

// Strip removes every marker of ours from carrier, and every foreign
// routing key [Codec.Foreign] reports: the dedicated header, headers named
// as our baggage keys, our baggage members (ID, actor, origin, ticket and
// the compatibility keys the codec reads) under every spelling a parser may
// read as them, and the foreign keys' members and headers; on an
// http.Header, grpc-gateway's forms of all of them too (Grpc-Metadata-
// followed by the header's name, and the deep forms under any number of
// prefixes, see the package documentation, "grpc-gateway's forms"). Every other
// baggage member is left as it was. Afterwards no parser a hop may run
// (OpenTelemetry's, a lenient W3C one) reads any of our keys on carrier.
func (c *Codec) Strip(carrier otelprop.TextMapCarrier) {
	if c.header != "" {
		deleteHeader(carrier, c.header, c.headerCanon)
	}
	for _, h := range c.keyHeaders {
		deleteHeader(carrier, h.lower, h.canon)
	}
	for _, h := range c.foreignHeaders {
		deleteHeader(carrier, h.lower, h.canon)
	}
	for _, h := range c.aliasHeaders {
		deleteHeader(carrier, h.lower, h.canon)
	}
	c.stripAliases(carrier)
	if h, ok := carrier.(otelprop.HeaderCarrier); ok {
		delete(h, c.gwHeader.canon)
		for _, n := range slices.Concat(c.gwKeyHeaders, c.gwForeign) {
			delete(h, n.canon)
		}
		c.stripBaggage(carrier, gatewayPrefix+baggageHeader, gatewayBaggage, true, true)
		c.stripDeep(http.Header(h))
	}
	c.stripBaggage(carrier, baggageHeader, "Baggage", true, true)
}

// stripBaggage rewrites the baggage header key (canon on an http.Header)
// without our members when dropOurs is set and without foreign routing
// keys when dropForeign is set (see [Codec.appendKept]); it removes the
// header when nothing is left.
func (c *Codec) stripBaggage(carrier otelprop.TextMapCarrier, key, canon string, dropOurs, dropForeign bool) {
	var one [1]string
	existing := values(carrier, key, canon, &one)
	if len(existing) == 0 {
		return
	}
	var b strings.Builder
	c.appendKept(&b, existing, dropOurs, dropForeign)
	if b.Len() == 0 {
		deleteHeader(carrier, key, canon)
		return
	}
	setHeader(carrier, key, canon, b.String())
}

// StripForeign removes from carrier what [Codec.Foreign] reports (other
// tools' routing keys, in baggage and as headers, and the underscore
// spellings of marker headers) and leaves our markers as they are: for
// middleware that admits a sandbox from an untrusted source on a valid
// ticket, which vouches for that sandbox and for nothing else. On an
// http.Header it also removes the deep grpc-gateway forms (see the
// package documentation, "grpc-gateway's forms") of our markers as of the foreign keys: they are not
// read here, so no ticket vouches for them. Baggage
// over the scan limits that may hold a foreign key is dropped whole,
// ours with it, as [Codec.Strip] drops it.
func (c *Codec) StripForeign(carrier otelprop.TextMapCarrier) {
	for _, h := range c.foreignHeaders {
		deleteHeader(carrier, h.lower, h.canon)
	}
	for _, h := range c.aliasHeaders {
		deleteHeader(carrier, h.lower, h.canon)
	}
	c.stripAliases(carrier)
	h, isHTTP := carrier.(otelprop.HeaderCarrier)
	if isHTTP {
		for _, n := range c.gwForeign {
			delete(h, n.canon)
		}
		c.stripDeep(http.Header(h))
	}
	if len(c.foreignKeys) == 0 {
		return
	}
	if isHTTP {
		c.stripBaggage(carrier, gatewayPrefix+baggageHeader, gatewayBaggage, false, true)
	}
	c.stripBaggage(carrier, baggageHeader, "Baggage", false, true)
}

// StripForeignContext returns ctx without the foreign routing keys
// [Codec.StripForeign] removes in its OpenTelemetry baggage, its sandbox
// and our members left as they are; ctx itself when there is nothing to
// remove.
func (c *Codec) StripForeignContext(ctx context.Context) context.Context {
	if len(c.foreignKeys) == 0 {
		return ctx
	}
	return c.dropMembers(ctx, false, true)
}

func setHeader(carrier otelprop.TextMapCarrier, key, canon, v string) {
	if h, ok := carrier.(otelprop.HeaderCarrier); ok {
		h[canon] = []string{v}
		return
	}
	carrier.Set(key, v)
}

// deleter is implemented by carriers that can remove a key (the library's
// gRPC metadata and Kafka header carriers). Others get an empty value,
// which Read treats as absent.
type deleter interface{ Delete(key string) }

func deleteHeader(carrier otelprop.TextMapCarrier, key, canon string) {
	switch cr := carrier.(type) {
	case otelprop.HeaderCarrier:
		delete(cr, canon)
	case otelprop.MapCarrier:
		delete(cr, key)
	case deleter:
		cr.Delete(key)
	default:
		if carrier.Get(key) != "" {
			carrier.Set(key, "")
		}
	}
}

// InjectTicket adds a signed ticket (see [Signer]) to the baggage on
// carrier, replacing any ticket already there; the sandbox it covers is
// written by [Codec.Inject] or [Codec.InjectSandbox]. Test clients use it;
// services behind the edge do not forward tickets.
func (c *Codec) InjectTicket(ticket string, carrier otelprop.TextMapCarrier) {
	var one [1]string
	existing := values(carrier, baggageHeader, "Baggage", &one)
	_, size := overScan(existing)
	w := newWork(size)
	var b strings.Builder
	for member := range members(existing) {
		if k, _ := c.classify(member[:keyEnd(member)], &w); k == kindTicket {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(member)
	}
	if b.Len() > 0 {
		b.WriteByte(',')
	}
	b.WriteString(c.cfg.ticketKey)
	b.WriteByte('=')
	escapeTo(&b, ticket)
	setHeader(carrier, baggageHeader, "Baggage", b.String())
}

// HTTPHeader returns the marker headers of s as an http.Header: what a
// developer adds to a test request, or a test to a handcrafted one.
func (c *Codec) HTTPHeader(s Sandbox) http.Header {
	h := make(http.Header, 2)
	c.InjectSandbox(s, otelprop.HeaderCarrier(h))
	return h
}

func commonPrefix(keys []string) string {
	p := keys[0]
	for _, k := range keys[1:] {
		n := 0
		for n < len(p) && n < len(k) && p[n] == k[n] {
			n++
		}
		p = p[:n]
	}
	return p
}
