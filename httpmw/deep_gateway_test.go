package httpmw_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketDoesNotCarryDeepGatewayForms: a ticket vouches for the
// sandbox read at this hop, not for a deep grpc-gateway form
// (Grpc-Metadata-Grpc-Metadata-Sandbox-Id: pr-9), which names another
// sandbox to a hop behind a gateway and a copying handler. An untrusted
// client admitted on its ticket loses it (one stripped record besides
// the admission); a trusted client's is kept, and not read here.
func TestTicketDoesNotCarryDeepGatewayForms(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice@example.com"}
	ticket, err := signer.SignUntil(alice, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		Sandbox string
		Header  http.Header
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		json.NewEncoder(w).Encode(view{s.ID, r.Header})
	})
	deep := []string{"Grpc-Metadata-Grpc-Metadata-Sandbox-Id", "Grpc_metadata_grpc_metadata_baggage", "Grpc-Metadata-Grpc-Metadata-Grpc-Metadata-Sandbox.actor"}
	for _, tc := range []struct {
		name      string
		trusted   string
		kept      bool
		decisions []string
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
			req.Header.Set("Baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket="+ticket)
			req.Header[deep[0]] = []string{"pr-9"}
			req.Header[deep[1]] = []string{"sandbox.id=pr-9,foo=bar"}
			req.Header[deep[2]] = []string{"mallory"}
			resp, err := newClient(t, &http.Transport{}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var v view
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, %v", resp.StatusCode, err)
			}
			if v.Sandbox != "feat-1" {
				t.Errorf("handler ran in sandbox %q, want feat-1", v.Sandbox)
			}
			if got := v.Header.Get(deep[0]); (got == "pr-9") != tc.kept {
				t.Errorf("handler saw %s %q, kept=%v wanted", deep[0], got, tc.kept)
			}
			if got := v.Header["Grpc_metadata_grpc_metadata_baggage"]; tc.kept != slices.Equal(got, []string{"sandbox.id=pr-9,foo=bar"}) || !tc.kept && !slices.Equal(got, []string{"foo=bar"}) {
				t.Errorf("handler saw the deep baggage %q, kept=%v wanted (else foo=bar alone)", got, tc.kept)
			}
			if got := v.Header.Get(deep[2]); (got == "mallory") != tc.kept {
				t.Errorf("handler saw %s %q, kept=%v wanted", deep[2], got, tc.kept)
			}
			if got := log.Decisions(); !slices.Equal(got, tc.decisions) {
				t.Errorf("decisions %q, want %q", got, tc.decisions)
			}
		})
	}
}
