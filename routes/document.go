package routes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ParseDocument parses and validates a JSON route document (see the package
// documentation for the format). It is strict, so that no other JSON parser
// reading the same bytes can see a different table, and a typo never
// silently drops or changes a route. The whole document is rejected, with
// an error that wraps [ErrInvalid] and names the JSON path, on:
//
//   - a key repeated in any object, a repeated sandbox id or service name;
//   - a key that is not a field of its object, including one that matches
//     a field only case-insensitively ("ID", "Sandboxes");
//   - null anywhere, a missing "sandboxes", a value of the wrong type, a
//     number that is not an integer where one is expected;
//   - bytes that are not UTF-8, or anything after the document;
//   - an entry that fails [Validate].
func ParseDocument(b []byte) ([]Sandbox, error) {
	doc, err := parseDocument(b, nil)
	if err != nil {
		return nil, err
	}
	return doc.sbs, nil
}

// parseDocument parses b as ParseDocument does. A sandbox whose bytes are
// those of one in prev (a document parsed before) is taken from prev,
// neither parsed nor validated again: a document with one sandbox changed
// costs a scan of its bytes and the parse of that sandbox.
func parseDocument(b []byte, prev *parsedDoc) (*parsedDoc, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: $: the document is not valid UTF-8", ErrInvalid)
	}
	p := newParser(b)
	p.prev, p.seed = prev, maphash.MakeSeed()
	if prev != nil {
		p.seed = prev.seed
	}
	sbs, err := p.document()
	if err != nil {
		return nil, err
	}
	first := make(map[string]int, len(sbs))
	for i := range sbs {
		if !p.reused[i] {
			if err := validateSandbox(i, &sbs[i]); err != nil {
				return nil, err
			}
		}
		if j, dup := first[sbs[i].ID]; dup {
			return nil, errRepeated(i, j, sbs[i].ID)
		}
		first[sbs[i].ID] = i
	}
	return &parsedDoc{sbs: sbs, seed: p.seed, raws: p.raws, byRaw: p.byRaw}, nil
}

// UnmarshalJSON decodes a route document as strictly as [ParseDocument],
// so json.Unmarshal into a Document reads the table ParseDocument reads.
func (d *Document) UnmarshalJSON(b []byte) error {
	sbs, err := ParseDocument(b)
	if err != nil {
		return err
	}
	d.Sandboxes = sbs
	return nil
}

// MarshalJSON encodes the document; no sandboxes encode as an empty list,
// never as null, which [ParseDocument] rejects.
func (d Document) MarshalJSON() ([]byte, error) {
	type plain Document
	if d.Sandboxes == nil {
		d.Sandboxes = []Sandbox{}
	}
	return json.Marshal(plain(d))
}

// UnmarshalJSON accepts a route as an upstream string or as an object with
// upstream, activeFrom and removedAt, as strictly as [ParseDocument]:
// repeated, unknown or case-folded keys and null are errors.
func (r *Route) UnmarshalJSON(b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: $: not valid UTF-8", ErrInvalid)
	}
	p := newParser(b)
	route, err := p.route()
	if err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	*r = route
	return nil
}

// parser reads a route document from encoding/json's token stream, keeping
// the JSON path of the value it reads for its errors.
type parser struct {
	src  []byte
	dec  *json.Decoder
	path []pathElem

	// Of the sandboxes list: the document to reuse sandboxes of, and for
	// the next parse, each sandbox's bytes (subslices of src), an index of
	// them by hash, and which sandboxes were reused.
	prev   *parsedDoc
	seed   maphash.Seed // hashes sandboxes' bytes for byRaw; a hit is checked byte for byte
	raws   [][]byte
	byRaw  map[uint64]int
	reused []bool
}

// pathElem is an object key or, when key is empty and index >= 0, an array
// index.
type pathElem struct {
	key   string
	index int
}

func newParser(b []byte) *parser {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return &parser{src: b, dec: dec}
}

func (p *parser) push(key string) { p.path = append(p.path, pathElem{key: key, index: -1}) }
func (p *parser) pushIndex(i int) { p.path = append(p.path, pathElem{index: i}) }
func (p *parser) pop()            { p.path = p.path[:len(p.path)-1] }

// errorf returns an error naming the current path.
func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, p.where(), fmt.Sprintf(format, args...))
}

// where renders the current path: $.sandboxes[3].services.cart, with keys
// that are not plain names quoted: $.sandboxes[0].services["a.b"].
func (p *parser) where() string {
	var sb strings.Builder
	sb.WriteByte('$')
	for _, e := range p.path {
		if e.index >= 0 {
			sb.WriteString("[" + strconv.Itoa(e.index) + "]")
			continue
		}
		if plainKey(e.key) {
			sb.WriteString("." + e.key)
		} else {
			sb.WriteString("[" + quoteClipped(e.key) + "]")
		}
	}
	return sb.String()
}

func plainKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// quoteClipped quotes s for an error message, cut to a readable length.
func quoteClipped(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// token reads the next token, turning the decoder's errors into ours.
func (p *parser) token() (json.Token, error) {
	tok, err := p.dec.Token()
	switch {
	case err == nil:
		return tok, nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, p.errorf("unexpected end of the document")
	}
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return nil, p.errorf("bad JSON at byte %d: %v", syn.Offset, err)
	}
	return nil, p.errorf("%v", err)
}

// kind names a token's type for an error.
func kind(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return strconv.Quote(v.String())
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", tok)
}

// open reads the start of an object or array (d is '{' or '[').
func (p *parser) open(d json.Delim) error {
	tok, err := p.token()
	if err != nil {
		return err
	}
	if tok != d {
		want := "an object"
		if d == '[' {
			want = "an array"
		}
		return p.errorf("want %s, got %s", want, kind(tok))
	}
	return nil
}

// close consumes the '}' or ']' that More has announced.
func (p *parser) close() error {
	_, err := p.token()
	return err
}

// key reads an object key; fields lists the keys the object may hold, to
// name a case-insensitive near miss (nil for a map).
func (p *parser) key() (string, error) {
	tok, err := p.token()
	if err != nil {
		return "", err
	}
	k, ok := tok.(string)
	if !ok { // the decoder reports a syntax error first; be safe anyway
		return "", p.errorf("want a key, got %s", kind(tok))
	}
	return k, nil
}

// field matches key against the fields of an object: it returns the
// index of the field, or an error naming the path for an unknown key, a
// case-insensitive near miss, or a key already seen.
func (p *parser) field(key string, fields []string, seen *uint32) (int, error) {
	for i, f := range fields {
		if key != f {
			continue
		}
		if *seen&(1<<i) != 0 {
			p.push(key)
			defer p.pop()
			return 0, p.errorf("duplicate key")
		}
		*seen |= 1 << i
		return i, nil
	}
	p.push(key)
	defer p.pop()
	for _, f := range fields {
		if strings.EqualFold(key, f) {
			return 0, p.errorf("unknown field: keys are case-sensitive, did you mean %q?", f)
		}
	}
	return 0, p.errorf("unknown field (want one of %s)", strings.Join(fields, ", "))
}

func (p *parser) str() (string, error) {
	tok, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", p.errorf("want a string, got %s", kind(tok))
	}
	return s, nil
}

func (p *parser) number() (json.Number, error) {
	tok, err := p.token()
	if err != nil {
		return "", err
	}
	n, ok := tok.(json.Number)
	if !ok {
		return "", p.errorf("want a number, got %s", kind(tok))
	}
	return n, nil
}

func (p *parser) float() (float64, error) {
	n, err := p.number()
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return 0, p.errorf("number %s out of range", n)
	}
	return f, nil
}

func (p *parser) int() (int, error) {
	n, err := p.number()
	if err != nil {
		return 0, err
	}
	i, err := strconv.Atoi(string(n))
	if err != nil {
		return 0, p.errorf("want an integer, got %s", n)
	}
	return i, nil
}

// time reads an RFC 3339 time as encoding/json reads a time.Time, which
// parses the raw string without unescaping it: a time spelt with escapes
// is an error there, so it is one here.
func (p *parser) time() (time.Time, error) {
	s, err := p.str()
	if err != nil {
		return time.Time{}, err
	}
	if raw := p.src[:p.dec.InputOffset()]; !bytes.HasSuffix(raw, []byte(`"`+s+`"`)) {
		return time.Time{}, p.errorf("want an RFC 3339 time without escapes")
	}
	var t time.Time
	if err := t.UnmarshalText([]byte(s)); err != nil {
		return time.Time{}, p.errorf("want an RFC 3339 time: %v", err)
	}
	return t, nil
}

// end checks that nothing follows the top-level value.
func (p *parser) end() error {
	p.path = p.path[:0]
	tok, err := p.dec.Token()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return p.errorf("trailing data after the document: %v", err)
	}
	return p.errorf("trailing data after the document: %s", kind(tok))
}

var documentFields = []string{"sandboxes"}

// document reads the whole document.
func (p *parser) document() ([]Sandbox, error) {
	if err := p.open('{'); err != nil {
		return nil, err
	}
	var (
		seen uint32
		sbs  []Sandbox
	)
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		if _, err := p.field(k, documentFields, &seen); err != nil {
			return nil, err
		}
		p.push(k)
		if sbs, err = p.sandboxes(); err != nil {
			return nil, err
		}
		p.pop()
	}
	if err := p.close(); err != nil {
		return nil, err
	}
	if seen == 0 {
		return nil, p.errorf(`missing "sandboxes" (an empty table is "sandboxes": [])`)
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	return sbs, nil
}

func (p *parser) sandboxes() ([]Sandbox, error) {
	if err := p.open('['); err != nil {
		return nil, err
	}
	sbs := []Sandbox{}
	p.byRaw = map[uint64]int{}
	for i := 0; p.dec.More(); i++ {
		p.pushIndex(i)
		// Take the sandbox's bytes whole (the decoder checks their
		// syntax), then reuse or parse them.
		start := p.dec.InputOffset()
		var skip json.RawMessage
		if err := p.dec.Decode(&skip); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				return nil, p.errorf("bad JSON at byte %d: %v", syn.Offset, err)
			}
			return nil, p.errorf("unexpected end of the document")
		}
		raw := bytes.TrimLeft(p.src[start:p.dec.InputOffset()], " \t\r\n,")
		h := maphash.Bytes(p.seed, raw)
		sb, reused := p.reuse(h, raw)
		if !reused {
			sub := &parser{src: raw, dec: json.NewDecoder(bytes.NewReader(raw)), path: slices.Clone(p.path)}
			sub.dec.UseNumber()
			var err error
			if sb, err = sub.sandbox(); err != nil {
				return nil, err
			}
		}
		sbs = append(sbs, sb)
		p.raws = append(p.raws, raw)
		p.reused = append(p.reused, reused)
		if _, seen := p.byRaw[h]; !seen {
			p.byRaw[h] = i
		}
		p.pop()
	}
	return sbs, p.close()
}

// reuse returns the sandbox of p.prev whose bytes are raw, if there is one.
func (p *parser) reuse(h uint64, raw []byte) (Sandbox, bool) {
	if p.prev == nil {
		return Sandbox{}, false
	}
	j, ok := p.prev.byRaw[h]
	if !ok || !bytes.Equal(p.prev.raws[j], raw) {
		return Sandbox{}, false
	}
	return p.prev.sbs[j], true
}

var sandboxFields = []string{"id", "actor", "origin", "expires", "database", "budget", "services"}

func (p *parser) sandbox() (Sandbox, error) {
	var sb Sandbox
	if err := p.open('{'); err != nil {
		return sb, err
	}
	var seen uint32
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return sb, err
		}
		f, err := p.field(k, sandboxFields, &seen)
		if err != nil {
			return sb, err
		}
		p.push(k)
		switch sandboxFields[f] {
		case "id":
			sb.ID, err = p.str()
		case "actor":
			sb.Actor, err = p.str()
		case "origin":
			sb.Origin, err = p.str()
		case "expires":
			sb.Expires, err = p.time()
		case "database":
			sb.Database, err = p.str()
		case "budget":
			sb.Budget, err = p.budget()
		case "services":
			sb.Services, err = p.services()
		}
		if err != nil {
			return sb, err
		}
		p.pop()
	}
	return sb, p.close()
}

var budgetFields = []string{"rate", "burst", "maxInFlight"}

func (p *parser) budget() (*Budget, error) {
	if err := p.open('{'); err != nil {
		return nil, err
	}
	var (
		b    Budget
		seen uint32
	)
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		f, err := p.field(k, budgetFields, &seen)
		if err != nil {
			return nil, err
		}
		p.push(k)
		switch budgetFields[f] {
		case "rate":
			b.Rate, err = p.float()
		case "burst":
			b.Burst, err = p.int()
		case "maxInFlight":
			b.MaxInFlight, err = p.int()
		}
		if err != nil {
			return nil, err
		}
		p.pop()
	}
	return &b, p.close()
}

func (p *parser) services() (map[string]Route, error) {
	if err := p.open('{'); err != nil {
		return nil, err
	}
	svcs := map[string]Route{}
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		p.push(k)
		if _, dup := svcs[k]; dup {
			return nil, p.errorf("duplicate key (service %s twice)", quoteClipped(k))
		}
		r, err := p.route()
		if err != nil {
			return nil, err
		}
		svcs[k] = r
		p.pop()
	}
	return svcs, p.close()
}

var routeFields = []string{"upstream", "activeFrom", "removedAt"}

// route reads a route: an upstream string or an object.
func (p *parser) route() (Route, error) {
	var r Route
	tok, err := p.token()
	if err != nil {
		return r, err
	}
	switch tok {
	case json.Delim('{'):
	default:
		s, ok := tok.(string)
		if !ok {
			return r, p.errorf("want an upstream string or an object, got %s", kind(tok))
		}
		r.Upstream = s
		return r, nil
	}
	var seen uint32
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return r, err
		}
		f, err := p.field(k, routeFields, &seen)
		if err != nil {
			return r, err
		}
		p.push(k)
		switch routeFields[f] {
		case "upstream":
			r.Upstream, err = p.str()
		case "activeFrom":
			r.ActiveFrom, err = p.time()
		case "removedAt":
			r.RemovedAt, err = p.time()
		}
		if err != nil {
			return r, err
		}
		p.pop()
	}
	return r, p.close()
}
