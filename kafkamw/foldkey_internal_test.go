package kafkamw

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestFoldKeyIsEqualFold checks the length test of [foldKey.is], which
// settles most comparisons of a header key with the package's keys
// without strings.EqualFold, against EqualFold itself: for the codec's
// keys (those of a codec reading Signadot's and Okteto's keys too), keys
// that fold to them through ſ (to s) and K (to k), which are longer in
// UTF-8 than the letters they fold to, other cases, prefixes and
// extensions, invalid UTF-8 and random keys over those runes. One foldKey
// is compared with every name in turn, as scanKey compares a header's
// key, so that what it learns of the key on one comparison serves the
// next.
func TestFoldKeyIsEqualFold(t *testing.T) {
	codecs := []*propagation.Codec{propagation.Default()}
	if c, err := propagation.NewCodec(propagation.WithSignadot(), propagation.WithOkteto()); err == nil {
		codecs = append(codecs, c)
	} else {
		t.Fatal(err)
	}
	var names []string
	for _, c := range codecs {
		m := newMarkers(c)
		names = append(names, m.header, baggageKey)
		names = append(names, m.named...)
	}
	var keys []string
	for _, n := range names {
		keys = append(keys, n, strings.ToUpper(n), n+"x", n[:len(n)-1], "\xff"+n, n+"\xc5")
		for i := range len(n) {
			switch n[i] {
			case 's':
				keys = append(keys, n[:i]+"ſ"+n[i+1:], n[:i]+"S"+n[i+1:])
			case 'k':
				keys = append(keys, n[:i]+"\u212a"+n[i+1:], n[:i]+"K"+n[i+1:])
			}
			keys = append(keys, n[:i]+strings.ToUpper(n[i:i+1])+n[i+1:])
		}
	}
	keys = append(keys, "", "ſ", "\u212a", HeaderSplitSource, HeaderSplitTopic, HeaderDeadLetterReason, "traceparent", "content-type", "SANDBOX-ID", "ſandbox-id", "sandbox-\u212aid")
	runes := []rune("sSſkK\u212aabdginoxyz.-_\xff0")
	rng := rand.New(rand.NewPCG(20, 14))
	for range 20000 {
		var b strings.Builder
		n := names[rng.IntN(len(names))]
		// Mostly near one of the names: a random rune replaced or added.
		b.WriteString(n[:rng.IntN(len(n)+1)])
		for range rng.IntN(4) {
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		keys = append(keys, b.String())
	}
	for _, k := range keys {
		fk := foldKey{k: k, wide: -1}
		for _, n := range names {
			want := strings.EqualFold(k, n)
			if got := keyIs(k, n); got != want {
				t.Errorf("keyIs(%q, %q) = %v; EqualFold says %v", k, n, got, want)
			}
			if got := fk.is(n); got != want {
				t.Errorf("foldKey{%q}.is(%q), after the names before it, = %v; EqualFold says %v", k, n, got, want)
			}
		}
		for _, c := range codecs {
			m := newMarkers(c)
			want := false
			for _, mk := range m.named {
				want = want || strings.EqualFold(k, mk)
			}
			fk := foldKey{k: k, wide: -1}
			if got := m.memberKey(&fk); got != want {
				t.Errorf("memberKey(%q) = %v; EqualFold with the named keys says %v", k, got, want)
			}
		}
	}
}
