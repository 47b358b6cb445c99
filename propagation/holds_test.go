package propagation

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/keytext"
)

// TestHoldsIsContains: the anchored test in [Codec.holds] says yes exactly
// when the plain one would: a '%', or a needle's text as keytext.Contains
// finds it. Random lines are built from the needles' bytes, bytes a parser
// drops and separators, so that matches, near misses and split needles
// are common.
func TestHoldsIsContains(t *testing.T) {
	var codecs []*Codec
	for _, opts := range [][]Option{
		nil,
		{WithSignadot()},
		{WithOkteto(), WithSignadot()},
		{KeepForeignRoutingKeys()},
		{WithBaggageKeys("sid", "sact", "sorig"), WithTicketKey("tk")},
		{WithBaggageKeys("a+b", "xx.yx", "kk"), WithTicketKey("zz")},
	} {
		c, err := NewCodec(opts...)
		if err != nil {
			t.Fatal(err)
		}
		codecs = append(codecs, c)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range codecs {
		var ours, act []string
		if len(c.prefix) >= minPrefix {
			ours = []string{c.prefix}
		} else {
			ours = c.keys
		}
		act = slices.Concat(ours, c.foreignKeys)
		alphabet := "=,;%. \t\x1c+\xc2\xa0" + strings.Join(act, "")
		for _, tc := range []struct {
			set     *needleSet
			needles []string
		}{{&c.ours, ours}, {&c.act, act}} {
			for range 20000 {
				b := make([]byte, rng.IntN(40))
				for i := range b {
					b[i] = alphabet[rng.IntN(len(alphabet))]
				}
				if rng.IntN(4) == 0 && len(tc.needles) > 0 {
					n := tc.needles[rng.IntN(len(tc.needles))]
					if rng.IntN(2) == 0 {
						n = n[:rng.IntN(len(n)+1)]
					}
					var ins []byte
					for i := 0; i < len(n); i++ {
						ins = append(ins, n[i])
						if rng.IntN(3) == 0 {
							ins = append(ins, " \t\x1c+\xa0"[rng.IntN(5)])
						}
					}
					b = slices.Insert(b, rng.IntN(len(b)+1), ins...)
				}
				line := string(b)
				want := strings.IndexByte(line, '%') >= 0
				for _, n := range tc.needles {
					want = want || keytext.Contains(line, n)
				}
				if got := c.holds([]string{line}, tc.set); got != want {
					t.Fatalf("codec keys %q: holds(%q) = %v, want %v", c.keys, line, got, want)
				}
			}
		}
	}
}

// TestSmallHeaderEveryKey: the one-pass read of a small http.Header, which
// stops at its last key, finds a marker header wherever the map's random
// iteration order puts it, at every size up to smallHeader and beyond.
func TestSmallHeaderEveryKey(t *testing.T) {
	c := Default()
	fill := []string{"Traceparent", "Accept", "User-Agent", "Content-Type", "X-Request-Id", "Accept-Encoding", "Tracestate", "Cookie", "Origin"}
	for _, marker := range []string{"Sandbox-Id", "Sandbox.id", "Uberctx-Sandbox.id", "Sandbox_id", "Uberctx-Sd-Routing-Key"} {
		for n := 0; n <= len(fill); n++ {
			h := http.Header{marker: {"pr-1"}}
			for _, k := range fill[:n] {
				h[k] = []string{"x"}
			}
			for range 50 {
				if c.Quiet(h) {
					t.Fatalf("Quiet(%d keys and %s) = true", n+1, marker)
				}
				if m, _ := c.Read(otelprop.HeaderCarrier(h)); !m.Found && marker != "Sandbox_id" && marker != "Uberctx-Sd-Routing-Key" {
					t.Fatalf("Read(%d keys and %s) found nothing", n+1, marker)
				}
				if (marker == "Sandbox_id" || marker == "Uberctx-Sd-Routing-Key") && !c.Foreign(otelprop.HeaderCarrier(h)) {
					t.Fatalf("Foreign(%d keys and %s) = false", n+1, marker)
				}
			}
		}
	}
}

// TestAnyIsIndexByte: the first test of [Codec.holds], which compares eight
// bytes of a line at a time with every byte it looks for, finds one exactly
// when strings.IndexByte does, wherever it is (each offset in lines of 0
// to 40 bytes, the rest of them every other byte value).
func TestAnyIsIndexByte(t *testing.T) {
	var sets []*needleSet
	for _, opts := range [][]Option{nil, {KeepForeignRoutingKeys()}, {WithBaggageKeys("sid", "sact", "sorig"), WithTicketKey("tk")}} {
		c, err := NewCodec(opts...)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, &c.ours, &c.act)
	}
	wide := 0
	rng := rand.New(rand.NewPCG(3, 4))
	for _, s := range sets {
		if !s.wide {
			continue
		}
		wide++
		var others []byte
		for b := range 256 {
			if strings.IndexByte(s.bytes, byte(b)) < 0 {
				others = append(others, byte(b))
			}
		}
		for n := range 41 {
			line := make([]byte, n)
			for i := range line {
				line[i] = others[rng.IntN(len(others))]
			}
			if s.any(string(line)) {
				t.Fatalf("bytes %q: any(%q) = true", s.bytes, line)
			}
			for i := range line {
				for k := 0; k < len(s.bytes); k++ {
					hit := slices.Clone(line)
					hit[i] = s.bytes[k]
					if !s.any(string(hit)) {
						t.Fatalf("bytes %q: any(%q) = false", s.bytes, hit)
					}
				}
			}
		}
	}
	if wide == 0 {
		t.Fatal("no codec has a wide needle set")
	}
}
