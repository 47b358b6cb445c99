package propagation

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

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
