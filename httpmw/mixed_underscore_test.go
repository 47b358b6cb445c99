package httpmw_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
)

// TestMixedUnderscoreHeaders: a marker header's name with some of its
// hyphens written as underscores (Uberctx_sd-Routing-Key,
// Ot-Baggage_sandbox.id) is the header itself to a CGI, WSGI, Rack or PHP
// hop behind this one (HTTP_OT_BAGGAGE_SANDBOX.ID), as the spelling with
// all of them so is, which the handler strips. The handler stripped the
// mixed spellings under grpc-gateway's prefix but passed them alone,
// unaudited, from an untrusted client. Each is stripped with one audit
// record, alone and among many headers; a trusted client's is kept, as
// the all-underscore spelling is.
func TestMixedUnderscoreHeaders(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	})
	log, logger := newAuditLog()
	serve := func(prefix string) *httptest.Server {
		srv := httptest.NewServer(must(httpmw.NewHandler(app, httpmw.WithLogger(logger), httpmw.WithTrustedNetworks(netip.MustParsePrefix(prefix)))))
		t.Cleanup(srv.Close)
		return srv
	}
	untrusted, trusted := serve("10.0.0.0/8"), serve("127.0.0.0/8")
	for _, k := range []string{"Uberctx_sd-Routing-Key", "Ot-Baggage_sd_routing-Key", "Ot-Baggage_sandbox.id", "ot_baggage-sandbox.actor", "UBERCTX-SD_ROUTING-KEY"} {
		for _, many := range []bool{false, true} {
			lines := []string{k + ": pr-1"}
			name := k
			if many {
				name += " among many"
				for i := range 10 {
					lines = append(lines, fmt.Sprintf("X-Filler-%d: %d", i, i))
				}
			}
			t.Run(name, func(t *testing.T) {
				held := func(srv *httptest.Server) bool {
					resp := sendRaw(t, srv, lines)
					if resp.status != 200 {
						t.Fatalf("status %d (%s)", resp.status, resp.body)
					}
					var h http.Header
					if err := json.Unmarshal([]byte(resp.body), &h); err != nil {
						t.Fatal(err)
					}
					for hk := range h {
						if strings.EqualFold(hk, k) {
							return true
						}
					}
					return false
				}
				before := len(log.Records())
				if held(untrusted) {
					t.Errorf("untrusted: the handler still holds %s", k)
				}
				var decisions []string
				for _, r := range log.Records()[before:] {
					decisions = append(decisions, r["decision"])
				}
				if !slices.Equal(decisions, []string{stripped}) {
					t.Errorf("untrusted: decisions %q, want %q", decisions, []string{stripped})
				}
				if !held(trusted) {
					t.Errorf("trusted: %s was removed", k)
				}
			})
		}
	}
}
