package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestRejectedTicketNotEchoed: a request whose ticket is refused is
// answered 400 and audited, but neither the 400 body nor the audit record
// (slog, shipped to log storage) may carry a ticket presented with it: a
// refused request may still hold a valid ticket (beside a second one, or
// presented for another actor), a 24-hour bearer credential. The key ID
// and the expiry may be named; the signature never.
func TestRejectedTicketNotEchoed(t *testing.T) {
	signer, other, verifier := ticketKeys(t)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice"}
	valid, err := signer.SignUntil(alice, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	later, err := signer.SignUntil(alice, ticketClock.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := other.SignUntil(alice, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sigOf := func(tk string) string { return tk[strings.LastIndexByte(tk, '.')+1:] }
	log, logger := newAuditLog()
	srv := httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		httpmw.WithVerifier(verifier), httpmw.WithClock(func() time.Time { return ticketClock }), httpmw.WithLogger(logger))))
	defer srv.Close()
	c := newClient(t, &http.Transport{})
	const ids = "sandbox.id=feat-1,sandbox.actor=alice,"
	for _, tc := range []struct {
		name    string
		baggage []string
		secrets []string // signatures that must not be echoed
		// stripped: the ticket cannot be read, so the request from an
		// untrusted peer has no ticket to judge; its markers are
		// stripped, as any untrusted peer's, rather than rejected.
		stripped bool
	}{
		{"valid and invalid", []string{ids + "sandbox.ticket=" + valid + ",sandbox.ticket=" + valid[:len(valid)-2] + "AA"}, []string{sigOf(valid)}, false},
		{"two valid", []string{ids + "sandbox.ticket=" + valid + ",sandbox.ticket=" + later}, []string{sigOf(valid), sigOf(later)}, false},
		{"two header lines", []string{ids + "sandbox.ticket=" + valid, "sandbox.ticket=" + unknown}, []string{sigOf(valid), sigOf(unknown)}, false},
		{"valid for another actor", []string{"sandbox.id=feat-1,sandbox.actor=mallory,sandbox.ticket=" + valid}, []string{sigOf(valid)}, false},
		{"other sandbox", []string{"sandbox.id=feat-2,sandbox.actor=alice,sandbox.ticket=" + valid}, []string{sigOf(valid)}, false},
		{"unknown key", []string{ids + "sandbox.ticket=" + unknown}, []string{sigOf(unknown)}, false},
		{"bad byte", []string{ids + "sandbox.ticket=" + valid + "\\"}, []string{sigOf(valid)}, true},
		{"bad escape", []string{ids + "sandbox.ticket=" + valid + "%zz"}, []string{sigOf(valid)}, true},
	} {
		before := len(log.Records())
		req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
		req.Header["Baggage"] = tc.baggage
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		status, decision := http.StatusBadRequest, audit.Rejected
		if tc.stripped {
			status, decision = http.StatusOK, audit.Stripped
		}
		if resp.StatusCode != status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, status)
		}
		recs := log.Records()[before:]
		if len(recs) != 1 || recs[0]["decision"] != string(decision) {
			t.Errorf("%s: audit records %v, want one %s", tc.name, recs, decision)
		}
		for _, s := range tc.secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s: the 400 body echoes a ticket: %q", tc.name, body)
			}
			for _, r := range recs {
				for k, v := range r {
					if strings.Contains(v, s) {
						t.Errorf("%s: the audit record's %s echoes a ticket: %q", tc.name, k, v)
					}
				}
			}
		}
	}
}
