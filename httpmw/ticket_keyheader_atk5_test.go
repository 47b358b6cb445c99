package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketBesideKeyHeadersAtk5: an untrusted client admitted on a
// ticket, with headers named as our keys beside its markers (what
// OpenTelemetry's ottrace propagator writes): the ticket admits only
// when every such header agrees with the markers it covers, as written
// and decoded; a ticket in such a header never counts; and what the
// handler is handed carries neither the ticket nor a key header that
// disagrees.
func TestTicketBesideKeyHeadersAtk5(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	ticket, err := signer.SignUntil(propagation.Sandbox{ID: "feat-1", Actor: "alice"}, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var handed http.Header
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handed = r.Header.Clone() })
	log, logger := newAuditLog()
	srv := httptest.NewServer(must(httpmw.NewHandler(inner, httpmw.WithVerifier(verifier),
		httpmw.WithClock(func() time.Time { return ticketClock }), httpmw.WithLogger(logger))))
	defer srv.Close()
	c := newClient(t, &http.Transport{})
	const ok, strip, reject = audit.Admitted, audit.Stripped, audit.Rejected
	bag := "sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket=" + ticket
	for _, tc := range []struct {
		name string
		h    http.Header
		want audit.Decision
	}{
		{"agreeing ID", http.Header{"Baggage": {bag}, "Ot-Baggage-Sandbox.id": {"feat-1"}}, ok},
		{"agreeing ID and actor", http.Header{"Baggage": {bag}, "Ot-Baggage-Sandbox.id": {"feat-1"}, "Ot-Baggage-Sandbox.actor": {"alice"}}, ok},
		{"other ID", http.Header{"Baggage": {bag}, "Ot-Baggage-Sandbox.id": {"feat-2"}}, reject},
		{"other actor", http.Header{"Baggage": {bag}, "Uberctx-Sandbox.actor": {"bob"}}, reject},
		{"origin the ticket does not cover", http.Header{"Baggage": {bag}, "Ot-Baggage-Sandbox.origin": {"x"}}, reject},
		{"second ID line", http.Header{"Baggage": {bag}, "Ot-Baggage-Sandbox.id": {"feat-1", "feat-2"}}, reject},
		{"grpc-gateway form, other ID", http.Header{"Baggage": {bag}, "Grpc-Metadata-Ot-Baggage-Sandbox.id": {"feat-2"}}, reject},
		{"ticket copied into its key header", http.Header{"Baggage": {bag}, "Ot-Baggage-Sandbox.ticket": {ticket}}, reject},
	} {
		before := len(log.Records())
		handed = nil
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
		if tc.want != ok {
			continue
		}
		if m, err := propagation.Default().Read(otelprop.HeaderCarrier(handed)); err != nil || m.Ticket != "" || m.Sandbox.ID != "feat-1" {
			t.Errorf("%s: the handler is handed markers %+v (ticket %q), %v; want feat-1 without its ticket", tc.name, m.Sandbox, m.Ticket, err)
		}
	}
}
