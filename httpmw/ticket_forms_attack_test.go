package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketForms: an untrusted client presents feat-1's ticket (bound to
// actor alice) in every place and shape a client may put it, beside
// markers that agree with it or not. Only a ticket the codec reads, for
// exactly the sandbox the request names, admits; a ticket that does not
// cover the markers rejects; a ticket in a place the codec does not read
// as one (a header named as the key, in any baggage header form) admits
// nothing: the markers are stripped.
func TestTicketForms(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	ticket, err := signer.SignUntil(propagation.Sandbox{ID: "feat-1", Actor: "alice"}, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	log, logger := newAuditLog()
	srv := httptest.NewServer(must(httpmw.NewHandler(echo("edge"), httpmw.WithVerifier(verifier),
		httpmw.WithClock(func() time.Time { return ticketClock }), httpmw.WithLogger(logger))))
	defer srv.Close()
	c := newClient(t, &http.Transport{})
	const ok, strip, reject = audit.Admitted, audit.Stripped, audit.Rejected
	tk := "sandbox.ticket=" + ticket
	for _, tc := range []struct {
		name string
		h    http.Header
		want audit.Decision
	}{
		{"baggage", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk}}, ok},
		{"ID in the header", http.Header{"Sandbox-Id": {"feat-1"}, "Baggage": {"sandbox.actor=alice," + tk}}, ok},
		{"percent-encoded ticket", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket=" + strings.ReplaceAll(ticket, ".", "%2E")}}, ok},
		{"grpc-gateway baggage", http.Header{"Grpc-Metadata-Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk}}, ok},
		{"other sandbox in the header", http.Header{"Sandbox-Id": {"feat-2"}, "Baggage": {"sandbox.actor=alice," + tk}}, reject},
		{"header and baggage disagree", http.Header{"Sandbox-Id": {"feat-2"}, "Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk}}, reject},
		{"second baggage line", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk, "sandbox.id=feat-2"}}, reject},
		{"grpc-gateway header names another", http.Header{"Grpc-Metadata-Sandbox-Id": {"feat-2"}, "Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk}}, reject},
		{"other actor", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=bob," + tk}}, reject},
		{"no actor", http.Header{"Baggage": {"sandbox.id=feat-1," + tk}}, reject},
		{"origin added", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice,sandbox.origin=x," + tk}}, reject},
		{"valid and invalid", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk + ",sandbox.ticket=v1.k1.1.AAAA"}}, reject},
		{"valid beside a key header", http.Header{"Sandbox.ticket": {ticket}, "Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + tk}}, reject},
		{"key ID in upper case", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice," + strings.Replace(tk, ".k1.", ".K1.", 1)}}, reject},
		{"header named as the key", http.Header{"Sandbox-Id": {"feat-1"}, "Sandbox.ticket": {ticket}, "Baggage": {"sandbox.actor=alice"}}, strip},
		{"Jaeger form", http.Header{"Sandbox-Id": {"feat-1"}, "Uberctx-Sandbox.ticket": {ticket}, "Baggage": {"sandbox.actor=alice"}}, strip},
		{"OpenTracing form", http.Header{"Sandbox-Id": {"feat-1"}, "Ot-Baggage-Sandbox.ticket": {ticket}, "Baggage": {"sandbox.actor=alice"}}, strip},
		{"percent-encoded key", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice,sandbox%2Eticket=" + ticket}}, strip},
		{"upper-case key", http.Header{"Baggage": {"sandbox.id=feat-1,sandbox.actor=alice,Sandbox.Ticket=" + ticket}}, strip},
	} {
		before := len(log.Records())
		req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
		for k, v := range tc.h {
			req.Header[k] = v
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var got []string
		for _, r := range log.Records()[before:] {
			got = append(got, r["decision"])
		}
		if len(got) != 1 || got[0] != string(tc.want) {
			t.Errorf("%s: decisions %q (status %d), want %s", tc.name, got, resp.StatusCode, tc.want)
		}
		if want := map[audit.Decision]int{ok: 200, strip: 200, reject: 400}[tc.want]; resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, want)
		}
	}
}
