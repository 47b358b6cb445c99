package httpmw_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketDoesNotCarryForeignKeys: a valid ticket lets an untrusted
// client into the sandbox it names, and nothing more. Other tools'
// routing keys on the same request (Signadot's sd-routing-key in baggage
// and as Uberctx-Sd-Routing-Key, an underscore spelling Sandbox_id) still
// come from an untrusted source: a Signadot or CGI hop further on would
// act on them. They used to reach the handler's headers and, behind
// otelhttp, its context's OpenTelemetry baggage, for a forwarding handler
// to send on; they are stripped (one stripped record, reason foreign
// routing keys) and the sandbox admitted with its members in place.
func TestTicketDoesNotCarryForeignKeys(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice@example.com"}
	ticket, err := signer.SignUntil(alice, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		Sandbox, Actor string
		Header         http.Header
		Context        []string // the context's OpenTelemetry baggage keys
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		v := view{Sandbox: s.ID, Actor: s.Actor, Header: r.Header}
		for _, m := range baggage.FromContext(r.Context()).Members() {
			v.Context = append(v.Context, m.Key())
		}
		json.NewEncoder(w).Encode(v)
	})
	log, logger := newAuditLog()
	opts := []httpmw.HandlerOption{httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")), httpmw.WithVerifier(verifier),
		httpmw.WithClock(func() time.Time { return ticketClock }), httpmw.WithLogger(logger)}
	plain := httptest.NewServer(must(httpmw.NewHandler(app, opts...)))
	defer plain.Close()
	instrumented := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(app, opts...)), "svc",
		otelhttp.WithPropagators(otelprop.Baggage{})))
	defer instrumented.Close()

	bag := "foo=bar,sd-routing-key=x,sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + ticket
	c := newClient(t, &http.Transport{})
	for name, srv := range map[string]*httptest.Server{"plain": plain, "otelhttp": instrumented} {
		before := len(log.Records())
		req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
		req.Header.Set("Baggage", bag)
		req.Header.Set(propagation.SignadotJaegerHeader, "x")
		req.Header["Sandbox_id"] = []string{"pr-9"}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v view
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, %v", name, resp.StatusCode, err)
		}
		if v.Sandbox != "feat-1" || v.Actor != "alice@example.com" {
			t.Errorf("%s: handler ran in sandbox %q (actor %q), want feat-1 admitted on the ticket", name, v.Sandbox, v.Actor)
		}
		if got := v.Header.Values("Uberctx-Sd-Routing-Key"); len(got) != 0 {
			t.Errorf("%s: handler saw Uberctx-Sd-Routing-Key %q from an untrusted client", name, got)
		}
		if got := v.Header.Values("Sandbox_id"); len(got) != 0 {
			t.Errorf("%s: handler saw Sandbox_id %q from an untrusted client", name, got)
		}
		if b := strings.Join(v.Header.Values("Baggage"), ","); strings.Contains(b, "sd-routing-key") || !strings.Contains(b, "sandbox.id=feat-1") || !strings.Contains(b, "foo=bar") {
			t.Errorf("%s: handler saw baggage %q, want sd-routing-key gone and foo, our members kept", name, b)
		}
		for _, k := range v.Context {
			if k == "sd-routing-key" {
				t.Errorf("%s: the context's baggage holds sd-routing-key from an untrusted client (keys %q)", name, v.Context)
			}
		}
		var decisions []string
		for _, r := range log.Records()[before:] {
			decisions = append(decisions, r["decision"]+"/"+r["reason"])
		}
		want := []string{string(audit.Stripped) + "/" + audit.ReasonForeignKeys, string(audit.Admitted) + "/" + audit.ReasonValidTicket}
		if strings.Join(decisions, ";") != strings.Join(want, ";") {
			t.Errorf("%s: audit records %q, want %q", name, decisions, want)
		}
	}
}
