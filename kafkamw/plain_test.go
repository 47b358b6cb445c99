package kafkamw

import (
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// plainCodecs are the codecs markers.plain is checked with: the default,
// one without the dedicated header, one with keys of its own (a short
// one, whose first bytes differ from the default's) and one with the
// compatibility keys.
func plainCodecs(tb testing.TB) []*propagation.Codec {
	tb.Helper()
	var out []*propagation.Codec
	for _, opts := range [][]propagation.Option{
		nil,
		{propagation.WithHeader("")},
		{propagation.WithHeader("x-env"), propagation.WithBaggageKeys("q", "who", "orig")}, // not "from": NewCodec refuses a standard header name
		{propagation.WithSignadot(), propagation.WithOkteto()},
	} {
		c, err := propagation.NewCodec(opts...)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// checkPlain fails when markers.plain calls hs untagged and either
// scanKey (what decide asks) or the codec itself finds anything there.
func checkPlain(t *testing.T, c *propagation.Codec, hs []kafka.Header) bool {
	t.Helper()
	m := newMarkers(c)
	if !m.plain(hs) {
		return false
	}
	if st := m.scan(hs); st != noMarkers {
		t.Errorf("codec %v: plain passed %q, which scanKey reads as %d", c.Fields(), keysOf(hs), st)
	}
	if got, err := c.Read(&carrier{list: hs}); err != nil || got.Found {
		t.Errorf("codec %v: plain passed %q, where the codec finds %+v, %v", c.Fields(), keysOf(hs), got, err)
	}
	return true
}

func keysOf(hs []kafka.Header) []string {
	var ks []string
	for _, h := range hs {
		ks = append(ks, h.Key)
	}
	return ks
}

// TestPlainHeaders: the headers production messages carry pass as plain;
// every spelling of a marker key the carrier matches (either case, runes
// that fold to its letters, its Jaeger and OpenTracing forms) does not.
func TestPlainHeaders(t *testing.T) {
	def := newMarkers(propagation.Default())
	for _, k := range []string{"traceparent", "tracestate", "content-type", "x-request-id", "Idempotency-Key", "", "s", "b"} {
		if !def.plain([]kafka.Header{{Key: k, Value: []byte("v")}}) {
			t.Errorf("%q: not plain, want plain", k)
		}
	}
	for _, c := range plainCodecs(t) {
		m := newMarkers(c)
		var keys []string
		keys = append(keys, c.KeyHeaders()...)
		keys = append(keys, "baggage", "Baggage", "BAGGAGE")
		if h := c.Header(); h != "" {
			keys = append(keys, h, strings.ToUpper(h))
		}
		for _, k := range keys {
			for _, spelled := range []string{k, strings.ToUpper(k), strings.ToUpper(k[:1]) + k[1:],
				strings.ReplaceAll(k, "s", "ſ"), strings.ReplaceAll(k, "k", "\u212a")} {
				hs := []kafka.Header{{Key: "traceparent", Value: []byte("00")}, {Key: spelled, Value: []byte("pr-1")}}
				if m.plain(hs) {
					t.Errorf("codec %v: %q is plain, want a closer look", c.Fields(), spelled)
				}
			}
		}
	}
	// And the property itself, on the headers production carries, which
	// every codec here lets through.
	for _, c := range plainCodecs(t) {
		hs := []kafka.Header{{Key: "traceparent", Value: []byte("00")}, {Key: "content-type", Value: []byte("json")}}
		if !checkPlain(t, c, hs) {
			t.Errorf("codec %v: %q not plain, want plain", c.Fields(), keysOf(hs))
		}
	}
}

// FuzzPlainHeaders: whatever the header keys, a list markers.plain calls
// untagged is one that scanKey and the codec find nothing in.
func FuzzPlainHeaders(f *testing.F) {
	for _, s := range []string{"traceparent", "sandbox-id", "ſandbox-id", "SANDBOX.ID", "uberctx-sandbox.id",
		"ot-baggage-sandbox.id", "baggage", "\u212aey", " sandbox-id", "sd-routing-key", "x-env", "q", "Q", "\xc5"} {
		f.Add(s, "pr-1")
	}
	codecs := plainCodecs(f)
	f.Fuzz(func(t *testing.T, key, value string) {
		hs := []kafka.Header{{Key: key, Value: []byte(value)}}
		for _, c := range codecs {
			checkPlain(t, c, hs)
			checkPlain(t, c, append([]kafka.Header{{Key: "traceparent", Value: []byte("00")}}, hs...))
		}
	})
}
