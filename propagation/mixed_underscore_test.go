package propagation_test

import (
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// mixedSpellings returns every spelling of name with some but not all of
// its hyphens written as underscores: a CGI, WSGI, Rack or PHP hop reads
// each as name (HTTP_OT_BAGGAGE_SANDBOX.ID), as it reads the spelling
// with all of them written so.
func mixedSpellings(name string) []string {
	var at []int
	for i := range len(name) {
		if name[i] == '-' {
			at = append(at, i)
		}
	}
	var out []string
	for mask := 1; mask < 1<<len(at)-1; mask++ {
		b := []byte(name)
		for j, i := range at {
			if mask&(1<<j) != 0 {
				b[i] = '_'
			}
		}
		out = append(out, string(b))
	}
	return out
}

// TestMixedUnderscoreSpellings: a marker header's name with some of its
// hyphens written as underscores (Uberctx_sd-Routing-Key,
// Ot-Baggage_sandbox.id) is the header itself to a CGI-style hop, as the
// spelling with all of them so (Uberctx_sd_routing_key) is, which the
// codec reports. Under grpc-gateway's prefix the codec reported the mixed
// spellings (its deep-form test reads '_' as '-' anywhere), but alone it
// let them pass: Quiet, Foreign nothing, Strip kept them. Each is
// reported (Quiet false, Foreign true) and removed by Strip and
// StripForeign, on an http.Header and on a map carrier; a hyphenated
// name that is not a marker's is not.
func TestMixedUnderscoreSpellings(t *testing.T) {
	c := propagation.Default()
	names := append([]string{c.Header(), propagation.SignadotJaegerHeader, propagation.SignadotDatadogHeader}, c.KeyHeaders()...)
	n := 0
	for _, name := range names {
		for _, k := range mixedSpellings(name) {
			n++
			canon := http.CanonicalHeaderKey(k)
			for _, many := range []bool{false, true} {
				h := http.Header{canon: {"pr-1"}}
				if many {
					for i := range 12 {
						h[http.CanonicalHeaderKey("x-filler-"+strings.Repeat("a", i))] = []string{"v"}
					}
				}
				if c.Quiet(h) {
					t.Errorf("%s (many=%v): Quiet", canon, many)
				}
				if !c.Foreign(otelprop.HeaderCarrier(h)) {
					t.Errorf("%s (many=%v): Foreign false on an http.Header", canon, many)
				}
				for _, strip := range []func(otelprop.TextMapCarrier){c.Strip, c.StripForeign} {
					s := h.Clone()
					strip(otelprop.HeaderCarrier(s))
					if _, ok := s[canon]; ok {
						t.Errorf("%s (many=%v): still on the http.Header after stripping", canon, many)
					}
				}
			}
			m := otelprop.MapCarrier{k: "pr-1", "other": "x"}
			if !c.Foreign(m) {
				t.Errorf("%s: Foreign false on a map carrier", k)
			}
			c.Strip(m)
			if _, ok := m[k]; ok || m["other"] != "x" {
				t.Errorf("%s: after Strip the map carrier is %v", k, m)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d spellings tried", n)
	}
	// Not a marker's name: left alone.
	for _, k := range []string{"X_Request-Id", "Sandbox_Idx", "Uberctx_other-Key", "Sd_routing-Key"} {
		h := http.Header{k: {"v"}}
		if !c.Quiet(h) || c.Foreign(otelprop.HeaderCarrier(h)) {
			t.Errorf("%s: acted on", k)
		}
		c.Strip(otelprop.HeaderCarrier(h))
		if len(h) != 1 {
			t.Errorf("%s: stripped", k)
		}
	}
}

// TestUnderscoreNamesAreNotTheirOwnAlias: a configured name that holds
// a '_' (WithHeader("X_Sandbox"), a baggage key my_id) is read as it is;
// it is not also another spelling of itself for Foreign to report and
// StripForeign to remove (which a ticket-admitted request would lose,
// with a spurious stripped record), while a spelling with '-' for its
// '_' is one.
func TestUnderscoreNamesAreNotTheirOwnAlias(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithHeader("X_Sandbox"), propagation.WithBaggageKeys("my_id", "my_actor", "my_origin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"X_Sandbox", "x_sandbox", "X_SANDBOX"} {
		h := http.Header{http.CanonicalHeaderKey(k): {"pr-1"}}
		if m, err := c.Read(otelprop.HeaderCarrier(h)); !m.Found || err != nil || m.Sandbox.ID != "pr-1" {
			t.Errorf("%s: Read %+v, %v", k, m, err)
		}
		if c.Foreign(otelprop.HeaderCarrier(h)) {
			t.Errorf("%s: Foreign reports the dedicated header", k)
		}
		c.StripForeign(otelprop.HeaderCarrier(h))
		if len(h) != 1 {
			t.Errorf("%s: StripForeign removed the dedicated header", k)
		}
		mc := otelprop.MapCarrier{strings.ToLower(k): "pr-1"}
		if c.Foreign(mc) {
			t.Errorf("%s: Foreign reports the dedicated header on a map carrier", k)
		}
	}
	for _, k := range []string{"X-Sandbox", "Uberctx-My-Id", "Uberctx_my-Id"} {
		if h := (http.Header{k: {"pr-1"}}); !c.Foreign(otelprop.HeaderCarrier(h)) {
			t.Errorf("%s: not reported", k)
		}
	}
}
