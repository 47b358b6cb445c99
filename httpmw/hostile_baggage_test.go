package httpmw_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
)

// TestHostileBaggageOnLoopback sends near-1 MB baggage built to make the
// lenient key readings work hard (#13) to a real loopback server. Over
// the codec's scan limits it is decided without being split: from an
// untrusted peer it is stripped whole and the request served without a
// sandbox; from a trusted one it is refused, never served as production.
func TestHostileBaggageOnLoopback(t *testing.T) {
	untrusted := httptest.NewServer(must(httpmw.NewHandler(echo("svc"), httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))))
	defer untrusted.Close()
	trusted := httptest.NewServer(must(httpmw.NewHandler(echo("svc"), httpmw.TrustAll())))
	defer trusted.Close()
	const size = 900 << 10
	for name, bag := range map[string]string{
		"plus-member":    "sandbox.id=pr-1," + strings.Repeat("+,", size/2),
		"percent-member": "k=v," + strings.Repeat("%,", size/2), // no key text: the '%' may hide one
		"escape-member":  "sandbox.id=pr-1," + strings.Repeat("%2525,", size/6),
	} {
		resp := sendRaw(t, untrusted, []string{"Baggage: " + bag})
		if resp.status != http.StatusOK {
			t.Fatalf("%s from an untrusted peer: status %d %.200s", name, resp.status, resp.body)
		}
		var s struct {
			Sandbox string   `json:"sandbox"`
			Baggage []string `json:"baggage"`
		}
		if err := json.Unmarshal([]byte(resp.body), &s); err != nil {
			t.Fatal(err)
		}
		if s.Sandbox != "" || len(strings.Join(s.Baggage, "")) != 0 {
			t.Errorf("%s from an untrusted peer: handler saw sandbox %q and %d bytes of baggage; want it stripped whole", name, s.Sandbox, len(strings.Join(s.Baggage, "")))
		}
		if resp := sendRaw(t, trusted, []string{"Baggage: " + bag}); resp.status != http.StatusBadRequest {
			t.Errorf("%s from a trusted peer: status %d; want 400", name, resp.status)
		}
	}
}
