package httpmw_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
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

// TestTicketDoesNotCarryMixedUnderscoreHeaders: a ticket vouches for the
// sandbox read at this hop, not for Ot-Baggage_sandbox.id: pr-9, which a
// CGI-style hop behind this one reads as Ot-Baggage-Sandbox.id, nor for
// Signadot's key so spelled. An untrusted client admitted on its ticket
// loses them (one stripped record besides the admission); a trusted
// client's are kept. Before, both reached the handler of an untrusted
// client, unaudited.
func TestTicketDoesNotCarryMixedUnderscoreHeaders(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	ticket, err := signer.SignUntil(propagation.Sandbox{ID: "feat-1", Actor: "alice"}, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		json.NewEncoder(w).Encode(struct {
			Sandbox string
			Header  http.Header
		}{s.ID, r.Header})
	})
	mixed := []string{"Ot-Baggage_sandbox.id", "Uberctx_sd-Routing-Key"}
	for _, tc := range []struct {
		name, trusted string
		kept          bool
		decisions     []string
	}{
		{"untrusted with ticket", "10.0.0.0/8", false, []string{string(audit.Stripped), string(audit.Admitted)}},
		{"trusted", "127.0.0.0/8", true, []string{string(audit.Admitted)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logger := newAuditLog()
			srv := httptest.NewServer(must(httpmw.NewHandler(app, httpmw.WithTrustedNetworks(netip.MustParsePrefix(tc.trusted)),
				httpmw.WithVerifier(verifier), httpmw.WithClock(func() time.Time { return ticketClock }), httpmw.WithLogger(logger))))
			defer srv.Close()
			req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
			req.Header.Set("Baggage", "sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket="+ticket)
			for _, k := range mixed {
				req.Header[k] = []string{"pr-9"}
			}
			resp, err := newClient(t, &http.Transport{}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var v struct {
				Sandbox string
				Header  http.Header
			}
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, %v", resp.StatusCode, err)
			}
			if v.Sandbox != "feat-1" {
				t.Errorf("handler ran in sandbox %q, want feat-1", v.Sandbox)
			}
			for _, k := range mixed {
				if got := v.Header.Get(k); (got == "pr-9") != tc.kept {
					t.Errorf("handler saw %s %q, kept=%v wanted", k, got, tc.kept)
				}
			}
			if got := log.Decisions(); !slices.Equal(got, tc.decisions) {
				t.Errorf("decisions %q, want %q", got, tc.decisions)
			}
		})
	}
}
