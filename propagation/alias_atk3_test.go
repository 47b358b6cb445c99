package propagation_test

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// cgiName is header name k as a CGI, WSGI, Rack or PHP hop reads it:
// case ignored, '_' for '-'.
func cgiName(k string) string { return strings.ReplaceAll(strings.ToLower(k), "_", "-") }

// TestAliasConfiguredNames (atk3): for codecs configured with unusual
// names (a dedicated header holding '_', '.', many hyphens, 64 bytes
// longer than ours; custom baggage keys with '_' and '-'; Signadot and
// Okteto), every spelling of a marker header with its hyphens and
// underscores mixed in any position and any case is stripped from an
// http.Header and a map carrier, and reported by Quiet and Foreign; a
// name that differs at its last byte, or is 64 bytes longer, is kept.
func TestAliasConfiguredNames(t *testing.T) {
	long := "x-" + strings.Repeat("ab-", 20) + "sandbox-id" // > 64 bytes
	codecs := map[string][]propagation.Option{
		"default":     nil,
		"underscore":  {propagation.WithHeader("X_Sandbox_Id")},
		"dot":         {propagation.WithHeader("x.sandbox-id")},
		"long":        {propagation.WithHeader(long)},
		"plus64":      {propagation.WithHeader("sandbox-id" + strings.Repeat("-a", 32))},
		"keys":        {propagation.WithBaggageKeys("tenant_sb-id", "tenant-sb_actor", "t-s-o"), propagation.WithTicketKey("t_k-t")},
		"signadot":    {propagation.WithSignadot(), propagation.WithOkteto()},
		"no-header":   {propagation.WithHeader("")},
		"trailing":    {propagation.WithHeader("sandbox-id-")},
		"lead-hyphen": {propagation.WithHeader("-sandbox-id")},
	}
	rng := rand.New(rand.NewPCG(3, 3))
	for cname, opts := range codecs {
		c, err := propagation.NewCodec(opts...)
		if err != nil {
			t.Logf("%s: %v (not a valid configuration)", cname, err)
			continue
		}
		names := append([]string{propagation.SignadotJaegerHeader, propagation.SignadotDatadogHeader}, c.KeyHeaders()...)
		if c.Header() != "" {
			names = append(names, c.Header())
		}
		want := map[string]bool{}
		for _, n := range names {
			want[cgiName(n)] = true
		}
		for _, n := range names {
			for range 48 {
				b := []byte(n)
				for i := range b {
					switch {
					case b[i] == '-' || b[i] == '_':
						b[i] = "-_"[rng.IntN(2)]
					case rng.IntN(2) == 0:
						b[i] = strings.ToUpper(string(b[i]))[0]
					}
				}
				k := string(b)
				h := http.Header{http.CanonicalHeaderKey(k): {"pr-1"}, "Accept": {"*/*"}}
				if rng.IntN(2) == 0 {
					for i := range 12 {
						h[http.CanonicalHeaderKey("x-filler-"+strings.Repeat("a", i))] = []string{"v"}
					}
				}
				if c.Quiet(h) {
					t.Errorf("%s: %q: Quiet", cname, k)
				}
				s := h.Clone()
				c.Strip(otelprop.HeaderCarrier(s))
				if _, ok := s[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("%s: %q kept on an http.Header by Strip", cname, k)
				}
				m := otelprop.MapCarrier{strings.ToLower(k): "pr-1", "accept": "x"}
				c.Strip(m)
				if _, ok := m[strings.ToLower(k)]; ok {
					t.Errorf("%s: %q kept on a map carrier by Strip", cname, k)
				}
			}
			// Neighbours: the last byte changed, 64 bytes more, one byte
			// less. Kept, unless they are another marker's name.
			near := []string{n[:len(n)-1] + "q", n + strings.Repeat("z", 64), n[:len(n)-1], "z" + n[1:], "sandbox-id", "sandbox_id"}
			if len(n) > 64 {
				near = append(near, n[len(n)-64:], n[:len(n)-64])
			}
			for _, k := range near {
				if want[cgiName(k)] {
					continue
				}
				for _, fill := range []int{0, 12} {
					h := http.Header{http.CanonicalHeaderKey(k): {"pr-1"}}
					for i := range fill {
						h[http.CanonicalHeaderKey("x-filler-"+strings.Repeat("a", i))] = []string{"v"}
					}
					if !c.Quiet(h) || c.Foreign(otelprop.HeaderCarrier(h)) {
						t.Errorf("%s: %q (not a marker, %d more headers): not Quiet, or Foreign", cname, k, fill)
					}
					c.Strip(otelprop.HeaderCarrier(h))
					if len(h) != 1+fill {
						t.Errorf("%s: %q (not a marker) stripped", cname, k)
					}
				}
			}
		}
	}
}
