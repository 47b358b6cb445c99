package propagation_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	otelbaggage "go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// attackCodecs are codecs whose keys put the word-wide pre-test
// ([needleSet.any]) and the anchored search in every shape: the default
// prefix needle, per-key needles, keys with bytes a parser drops ('+'),
// a '%' in a key, one-byte keys, more anchors than fit the wide test,
// and no dedicated header.
func attackCodecs(t testing.TB) map[string]*propagation.Codec {
	t.Helper()
	out := map[string]*propagation.Codec{}
	for name, opts := range map[string][]propagation.Option{
		"default":    nil,
		"signadot":   {propagation.WithSignadot()},
		"both":       {propagation.WithSignadot(), propagation.WithOkteto()},
		"keep":       {propagation.KeepForeignRoutingKeys()},
		"short":      {propagation.WithBaggageKeys("sid", "sact", "sorig"), propagation.WithTicketKey("tk")},
		"plus":       {propagation.WithBaggageKeys("a+b", "xx.yx", "kk"), propagation.WithTicketKey("zz")},
		"pct":        {propagation.WithBaggageKeys("s%id", "s%act", "s%orig"), propagation.WithTicketKey("s%tk")},
		"onebyte":    {propagation.WithBaggageKeys("q", "w", "e"), propagation.WithTicketKey("r")},
		"manyanchor": {propagation.WithBaggageKeys("Zid", "Yact", "Jorig"), propagation.WithTicketKey("Qtk"), propagation.WithSignadot()},
		"odd":        {propagation.WithBaggageKeys("~|`", "!#$", "&'*"), propagation.WithTicketKey("^_.")},
		"upper":      {propagation.WithBaggageKeys("SANDBOX.ID", "SANDBOX.ACTOR", "SANDBOX.ORIGIN"), propagation.WithTicketKey("SANDBOX.TICKET")},
		"noheader":   {propagation.WithHeader("")},
	} {
		c, err := propagation.NewCodec(opts...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = c
	}
	return out
}

// otelReads returns the members of the OpenTelemetry baggage that the
// OpenTelemetry baggage propagator extracts from h and whose key is one
// of c's, as OpenTelemetry Go reads them.
func otelReads(c *propagation.Codec, h http.Header) map[string]string {
	ctx := otelprop.Baggage{}.Extract(context.Background(), otelprop.HeaderCarrier(h))
	out := map[string]string{}
	for _, m := range otelbaggage.FromContext(ctx).Members() {
		if slices.Contains(c.Keys(), m.Key()) {
			out[m.Key()] = m.Value()
		}
	}
	return out
}

// TestSWARAttackWordBoundaries puts each of a codec's keys at every
// offset from 0 to 24 of a baggage line padded with bytes that stress
// the word-wide test (high-bit bytes, 0x80, 0xff, NUL, the anchors' bytes
// themselves minus one and plus one), with and without a member after
// it, in one of several header lines, in small and large headers. Every
// header OpenTelemetry reads one of our keys in must be neither Quiet nor
// found empty by Read.
func TestSWARAttackWordBoundaries(t *testing.T) {
	fills := []string{"a", "\x80", "\xff", "\x00", "\x7f", "w", "y", "j", "l", "\xc2\xa0", "$", "&", "\x01"}
	n := 0
	for name, c := range attackCodecs(t) {
		for _, key := range c.Keys() {
			for _, fill := range fills {
				for off := 0; off <= 24; off++ {
					for _, tail := range []string{"", ",k=v", ";p", ",zzzzzzzzzzzzzzzz=1"} {
						pad := ""
						if off > 0 {
							pad = strings.Repeat(fill, off) + "=1,"
							if fill == "\x00" || fill == "\x7f" || fill == "\x01" || fill == "\x80" || fill == "\xff" || fill == "\xc2\xa0" {
								pad = "k" + strings.Repeat(fill, off) + ","
							}
						}
						line := pad + key + "=pr-1" + tail
						for _, lines := range [][]string{{line}, {"a=b", line}, {line, "a=b"}, {"", line}} {
							for _, extra := range []int{0, 3, 12} {
								h := http.Header{"Baggage": lines}
								for i := range extra {
									h[fmt.Sprintf("X-Pad-%d", i)] = []string{"v"}
								}
								n++
								check(t, name, c, h)
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d headers", n)
}

func check(t *testing.T, name string, c *propagation.Codec, h http.Header) {
	t.Helper()
	// OpenTelemetry JS under Node.js (see nodeKey) reads keys Go does not.
	for _, line := range h["Baggage"] {
		for _, member := range strings.Split(line, ",") {
			raw, _, _ := strings.Cut(member, ";")
			raw, _, _ = strings.Cut(raw, "=")
			if k := nodeKey(raw); slices.Contains(c.Keys(), k) {
				if m, _ := c.Read(otelprop.HeaderCarrier(h)); !m.Found {
					t.Fatalf("%s: OpenTelemetry JS reads %q in %q; Read finds no markers", name, k, h)
				}
			}
		}
	}
	reads := otelReads(c, h)
	if len(reads) == 0 {
		return
	}
	if c.Quiet(h) {
		t.Fatalf("%s: OpenTelemetry reads %v in %q; Quiet reports nothing", name, reads, h)
	}
	m, err := c.Read(otelprop.HeaderCarrier(h))
	if !m.Found {
		t.Fatalf("%s: OpenTelemetry reads %v in %q; Read finds no markers (err %v)", name, reads, h, err)
	}
	ctx, err := c.Extract(context.Background(), otelprop.HeaderCarrier(h))
	if s, ok := propagation.FromContext(ctx); err == nil && (!ok || s.ID != reads[c.Keys()[0]]) && reads[c.Keys()[0]] != "" {
		t.Fatalf("%s: OpenTelemetry reads %v in %q; Extract gives %+v, %v", name, reads, h, s, err)
	}
	s := h.Clone()
	c.Strip(otelprop.HeaderCarrier(s))
	if left := otelReads(c, s); len(left) > 0 {
		t.Fatalf("%s: after Strip of %q OpenTelemetry reads %v", name, h, left)
	}
}

// FuzzOTelDifferentialCodecs is FuzzOTelDifferential over every codec of
// attackCodecs, several Baggage header lines (bag split at '\n') and
// small or large headers (pad more keys): when OpenTelemetry's baggage
// propagator reads one of the codec's keys, Quiet must not report the
// header quiet, Read must find markers, and after Strip OpenTelemetry
// must read none.
func FuzzOTelDifferentialCodecs(f *testing.F) {
	for _, s := range lookalikeSeeds {
		f.Add(uint8(0), uint8(0), s)
	}
	for off := range 17 {
		p := strings.Repeat("a", off)
		f.Add(uint8(off), uint8(off), p+"=1,sandbox.id=pr-1")
		f.Add(uint8(off), uint8(off), p+"=1\nq=1,w=2")
		f.Add(uint8(off), uint8(off), "k"+strings.Repeat("\x80", off)+",Zid=pr-1\ns%id=1")
		f.Add(uint8(off), uint8(off), p+"=1,\xc2\xa0a+b=1,tk=3,sd-routing-key=x")
	}
	codecs := attackCodecs(f)
	names := slices.Sorted(maps.Keys(codecs))
	f.Fuzz(func(t *testing.T, which, pad uint8, bag string) {
		name := names[int(which)%len(names)]
		c := codecs[name]
		h := http.Header{"Baggage": strings.Split(bag, "\n")}
		for i := range int(pad % 12) {
			h[fmt.Sprintf("X-Pad-%d", i)] = []string{"v"}
		}
		check(t, name, c, h)
	})
}

// TestOddKeysReadUnderEverySpelling: a key the codec is configured with
// may hold '+' or '%' (both are token bytes). The lenient normalisation
// then must not read past the spelling a parser stops at: OpenTelemetry
// Go trims Unicode spaces around "a+b" and reads "a+b" (normalised all
// the way, '+' as a space, it is "ab"), and OpenTelemetry JS decodes
// "a%2Bb" once, to "a+b". Each such header holds a marker of ours: Read
// finds it (unreadable, as every lookalike), and Strip removes it.
func TestOddKeysReadUnderEverySpelling(t *testing.T) {
	codecs := attackCodecs(t)
	pct, err := propagation.NewCodec(propagation.WithBaggageKeys("s%41", "s%42", "s%43"), propagation.WithTicketKey("s%44"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c      *propagation.Codec
		name   string
		bag    string
		otelGo bool // OpenTelemetry Go itself reads our key
	}{
		{codecs["plus"], "plus", "\u00a0a+b=pr-1", true},
		{codecs["plus"], "plus", "a+b\u3000=pr-1", true},
		{codecs["plus"], "plus", "k=v,\u2003a+b=pr-1", true},
		{codecs["plus"], "plus", "a%2Bb=pr-1", false},
		{codecs["plus"], "plus", "a%252Bb=pr-1", false},
		{codecs["plus"], "plus", "%C2%A0a+b=pr-1", false},
		{pct, "pct41", "\u00a0s%41=pr-1", true},
		{pct, "pct41", "s%2541=pr-1", false},
		{pct, "pct41", "\u00a0s%44=v1.k.1.s", true},
	} {
		t.Run(fmt.Sprintf("%s/%q", tc.name, tc.bag), func(t *testing.T) {
			h := http.Header{"Baggage": {tc.bag}}
			if reads := otelReads(tc.c, h); (len(reads) > 0) != tc.otelGo {
				t.Fatalf("%s %q: OpenTelemetry Go reads %v; the case expects it to read our key: %v", tc.name, tc.bag, reads, tc.otelGo)
			}
			check(t, tc.name, tc.c, h)
			m, err := tc.c.Read(otelprop.HeaderCarrier(h))
			if !m.Found || err == nil {
				t.Errorf("%s %q: Read = %+v, %v; want a marker found and unreadable", tc.name, tc.bag, m, err)
			}
			s := h.Clone()
			tc.c.Strip(otelprop.HeaderCarrier(s))
			if b := s.Values("Baggage"); strings.Contains(strings.Join(b, ","), "pr-1") || strings.Contains(strings.Join(b, ","), "v1.k") {
				t.Errorf("%s %q: Strip left %q", tc.name, tc.bag, b)
			}
		})
	}
}

// TestLatin1SpaceBytes: Node.js hands a header value to JavaScript as
// Latin-1, so the single byte 0xA0 (not UTF-8) is U+00A0 there, and
// OpenTelemetry JS trims it from a key ("\xa0sandbox.id" reads as
// "sandbox.id"); 0x85 is U+0085, which Python's str.strip removes. Such a
// member is ours, unreadable, and Strip removes it. A byte that is a space
// to no parser (0xFF) leaves a foreign key foreign.
func TestLatin1SpaceBytes(t *testing.T) {
	c := propagation.Default()
	for _, bag := range []string{
		"\xa0sandbox.id=pr-1",
		"sandbox.id\xa0=pr-1",
		"k=v,\xa0\xa0sandbox.id=pr-1",
		"\x85sandbox.id=pr-1",
		"\xa0sandbox.ticket=v1.k.1.s",
		"%A0sandbox.id=pr-1",
	} {
		h := http.Header{"Baggage": {bag}}
		m, err := c.Read(otelprop.HeaderCarrier(h))
		if !m.Found || err == nil {
			t.Errorf("%q: Read = %+v, %v; want a marker found and unreadable", bag, m, err)
		}
		if c.Quiet(h) {
			t.Errorf("%q: Quiet", bag)
		}
		s := h.Clone()
		c.Strip(otelprop.HeaderCarrier(s))
		if b := s.Values("Baggage"); len(b) > 0 && !strings.HasPrefix(b[0], "k=v") {
			t.Errorf("%q: Strip left %q", bag, b)
		}
	}
	for _, bag := range []string{"\xffsandbox.id=pr-1", "sandbox\xff.id=pr-1"} {
		if m, err := c.Read(otelprop.HeaderCarrier(http.Header{"Baggage": {bag}})); m.Found || err != nil {
			t.Errorf("%q: Read = %+v, %v; want no marker", bag, m, err)
		}
	}
}
