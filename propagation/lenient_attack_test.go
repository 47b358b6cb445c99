package propagation_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// otherParserSeeds are baggage values that OpenTelemetry Go does not read
// as ours but another OpenTelemetry SDK does, and then sends on as a clean
// sandbox.id member that the next sandboxkit hop admits:
//
//   - Ruby (opentelemetry-api, Baggage::Propagation::TextMapPropagator)
//     deletes every ASCII white space character anywhere in the header
//     (header.gsub(/\s/, ”)) before it splits and percent-decodes, so
//     "sand box.id" is sandbox.id to it; it re-encodes the key clean.
//   - Python (opentelemetry-api, W3CBaggagePropagator) percent-decodes a
//     key with unquote_plus and then str.strip()s it, which also removes
//     the C0 separators U+001C..U+001F that Go's unicode.IsSpace does not
//     count as space; it re-encodes the key with quote_plus.
var otherParserSeeds = []string{
	"sand box.id=pr-1",
	"foo=bar, sandbox .id=pr-1",
	"sandbox.\tid=pr-1",
	"s a n d b o x . i d=pr-1",
	"sandbox. actor=mallory",
	"%1Csandbox.id=pr-1",
	"%1Fsandbox.id%1D=pr-1",
	"\x1csandbox.id=pr-1",
	"sandbox.id\x1e=pr-1",
	"%1C%2520sand%20box.id=pr-1",
	"\xa0sandbox.id=pr-1",
	"foo=bar,sandbox.id\xa0=pr-1",
	"\x85sandbox.id=pr-1",
}

// TestOtherSDKsLookalikes: every value above holds a marker (Read finds it
// and cannot read it), and Strip leaves nothing any of those parsers reads
// as one of our keys.
func TestOtherSDKsLookalikes(t *testing.T) {
	c := propagation.Default()
	for _, bag := range otherParserSeeds {
		h := http.Header{"Baggage": {bag}}
		m, err := c.Read(otelprop.HeaderCarrier(h))
		if !m.Found || err == nil {
			t.Errorf("Read(%q) = found %v, err %v; want a marker that cannot be read", bag, m.Found, err)
		}
		c.Strip(otelprop.HeaderCarrier(h))
		for _, line := range h.Values("Baggage") {
			for _, member := range strings.Split(line, ",") {
				if k := anySDKKey(member); isOurKey(k) {
					t.Errorf("after Strip of %q, member %q still reads as %q", bag, member, k)
				}
			}
		}
	}
}

func isOurKey(k string) bool {
	for _, o := range ourKeys {
		if k == o {
			return true
		}
	}
	return false
}

// anySDKKey returns the key of a baggage member as Ruby's or Python's
// OpenTelemetry reads it, whichever is one of ours, written here from
// their sources independently of the codec.
func anySDKKey(member string) string {
	raw, _, _ := strings.Cut(member, ";")
	raw, _, _ = strings.Cut(raw, "=")
	ruby := strings.Map(func(r rune) rune {
		if strings.ContainsRune(" \t\r\n\f\v", r) {
			return -1
		}
		return r
	}, raw)
	if k := lenientKey(ruby); isOurKey(k) {
		return k
	}
	if k := nodeKey(raw); isOurKey(k) {
		return k
	}
	python := strings.TrimFunc(lenientKey(strings.Trim(raw, " \t")), func(r rune) bool { return r >= 0x1c && r <= 0x1f || r == ' ' })
	return strings.TrimFunc(lenientKey(python), func(r rune) bool { return r >= 0x1c && r <= 0x1f })
}

// nodeKey returns a raw baggage key as OpenTelemetry JS under Node.js
// reads it: Node hands header values to JavaScript as Latin-1 (each byte
// one code point), the key is String.prototype.trim()med (white space
// and line terminators: U+0009..U+000D, U+0020, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, U+FEFF) and then
// decodeURIComponent()ed, which leaves '+' as it is; "" when that throws.
func nodeKey(raw string) string {
	r := make([]rune, len(raw))
	for i := 0; i < len(raw); i++ {
		r[i] = rune(raw[i]) // Latin-1
	}
	jsSpace := func(c rune) bool {
		return c >= 0x09 && c <= 0x0d || c == ' ' || c == 0xa0 || c == 0x1680 || c >= 0x2000 && c <= 0x200a ||
			c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000 || c == 0xfeff
	}
	k := strings.TrimFunc(string(r), jsSpace)
	d, err := url.PathUnescape(k)
	if err != nil || !utf8.ValidString(d) {
		return ""
	}
	return d
}
