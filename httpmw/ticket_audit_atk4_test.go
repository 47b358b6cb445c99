package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestTicketInSandboxFieldsNotAudited (atk4): a ticket sent where the
// sandbox ID, actor or origin goes (a script's -H "Sandbox-Id: $TICKET",
// a baggage sandbox.actor=$TICKET) was kept out of errors (c5beb95), but
// the audit record's own sandbox.id, sandbox.actor and sandbox.origin
// attributes carried it whole: from an untrusted client (stripped), a
// trusted one (rejected, or admitted with the ticket as its actor), on
// the handler and the proxy. Clipping a long value to audit.MaxValueLen
// could also cut a ticket inside its signature, leaving 42 of its 43
// characters, which the text redaction no longer recognises. No record
// holds a signature's first 40 characters.
func TestTicketInSandboxFieldsNotAudited(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	tk, err := signer.SignUntil(propagation.Sandbox{ID: "feat-1", Actor: "alice"}, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sig := tk[strings.LastIndexByte(tk, '.')+1:]
	enc := strings.ReplaceAll(tk, ".", "%2E")
	// 128 bytes clipped: the prefix and 42 characters of the signature.
	cut := strings.Repeat("a", 128-len(tk)+1) + tk
	headers := map[string]http.Header{
		"id-header":      {"Sandbox-Id": {tk}},
		"id-baggage":     {"Baggage": {"sandbox.id=" + enc}},
		"actor":          {"Baggage": {"sandbox.id=feat-1,sandbox.actor=" + tk}},
		"actor-escaped":  {"Baggage": {"sandbox.id=feat-1,sandbox.actor=" + enc}},
		"origin":         {"Baggage": {"sandbox.id=feat-1,sandbox.origin=" + tk}},
		"id-clipped":     {"Sandbox-Id": {cut}},
		"actor-clipped":  {"Baggage": {"sandbox.id=feat-1,sandbox.actor=" + strings.Repeat("a", 200) + "x" + tk}},
		"origin-clipped": {"Baggage": {"sandbox.id=feat-1,sandbox.origin=" + cut}},
	}
	upstream := httptest.NewServer(echo("upstream"))
	defer upstream.Close()
	tab := newTable(t, routes.Sandbox{ID: "feat-1", Services: map[string]routes.Route{"cart": {Upstream: upstream.URL}}})
	for _, trusted := range []string{"10.0.0.0/8", "127.0.0.0/8"} {
		rec, logger := newAuditLog()
		opts := []httpmw.HandlerOption{
			httpmw.WithTrustedNetworks(netip.MustParsePrefix(trusted)), httpmw.WithVerifier(verifier),
			httpmw.WithClock(func() time.Time { return ticketClock }), httpmw.WithLogger(logger),
		}
		popts := make([]httpmw.ProxyOption, len(opts))
		for i, o := range opts {
			popts[i] = o.(httpmw.ProxyOption)
		}
		handler := httptest.NewServer(must(httpmw.NewHandler(echo("app"), opts...)))
		proxy := newProxyServer(t, tab, upstream.URL, popts...)
		c := newClient(t, &http.Transport{})
		for name, h := range headers {
			for _, srv := range []*httptest.Server{handler, proxy} {
				before := len(rec.Records())
				req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
				req.Header = h.Clone()
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusBadRequest && strings.Contains(string(body), sig[:40]) {
					t.Errorf("trusted %s, %s: the 400 body shows the signature: %s", trusted, name, body)
				}
				recs := rec.Records()[before:]
				if len(recs) == 0 {
					t.Errorf("trusted %s, %s: no audit record", trusted, name)
				}
				for _, r := range recs {
					for k, v := range r {
						if strings.Contains(v, sig[:40]) {
							t.Errorf("trusted %s, %s (%s): record %s=%q shows the ticket's signature", trusted, name, r["decision"], k, v)
						}
					}
				}
			}
		}
		handler.Close()
	}
}

// TestTicketInForwardedForNotAudited (atk4): the reason of a record about
// a source that is not trusted quotes the X-Forwarded-For entry or the
// Forwarded element it could not read, cut at 64 bytes, which a ticket
// fits in whole, and which, signed with a key ID of 7 characters, it
// cut inside the signature, leaving 42 of its 43 characters. The entry is
// now redacted before it is cut, and every record's reason is redacted
// as its sandbox fields are.
func TestTicketInForwardedForNotAudited(t *testing.T) {
	signer, _, _ := ticketKeys(t)
	long, err := propagation.NewSigner(propagation.Key{ID: "kkkkkkk", Secret: []byte(strings.Repeat("u", 32))})
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range []*propagation.Signer{signer, long} {
		tk, err := sg.SignUntil(propagation.Sandbox{ID: "feat-1"}, ticketClock.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		forwardedTicket(t, tk)
	}
}

func forwardedTicket(t *testing.T, tk string) {
	sig := tk[strings.LastIndexByte(tk, '.')+1:]
	rec, logger := newAuditLog()
	srv := httptest.NewServer(must(httpmw.NewHandler(echo("app"), httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		httpmw.WithTrustedHops(1), httpmw.WithLogger(logger))))
	defer srv.Close()
	c := newClient(t, &http.Transport{})
	for _, h := range []http.Header{
		{"Sandbox-Id": {"feat-1"}, "X-Forwarded-For": {tk}},
		{"Sandbox-Id": {"feat-1"}, "X-Forwarded-For": {"127.0.0.1"}, "Forwarded": {"for=" + tk}},
	} {
		before := len(rec.Records())
		req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
		req.Header = h
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		recs := rec.Records()[before:]
		if len(recs) == 0 {
			t.Fatalf("%v: no audit record", h)
		}
		for _, r := range recs {
			if strings.Contains(r["reason"], sig[:40]) {
				t.Errorf("%v: reason %q shows the ticket's signature", h, r["reason"])
			}
		}
	}
}

// TestTicketAsActorNotOnSpan (atk4): a trusted client that sends a ticket
// where the actor goes is admitted with it as its actor (a printable
// value); the audit record now shows it without its signature, but the
// span attribute sandbox.actor, which tracing back ends keep for people
// to read as much, carried it whole.
func TestTicketAsActorNotOnSpan(t *testing.T) {
	signer, _, _ := ticketKeys(t)
	tk, err := signer.SignUntil(propagation.Sandbox{ID: "feat-1"}, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sig := tk[strings.LastIndexByte(tk, '.')+1:]
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	srv := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(echo("app"),
		httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))), "edge", otelhttp.WithTracerProvider(tp)))
	defer srv.Close()
	c := newClient(t, &http.Transport{})
	req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
	req.Header.Set("Baggage", "sandbox.id=feat-1,sandbox.actor="+tk)
	if s := decodeSeen(t, must(c.Do(req))); s.Sandbox != "feat-1" {
		t.Fatalf("served in sandbox %q", s.Sandbox)
	}
	spans := rec.Ended()
	if len(spans) == 0 {
		t.Fatal("no span")
	}
	for _, s := range spans {
		if got := attr(s, "sandbox.actor"); got == "" || strings.Contains(got, sig[:40]) {
			t.Errorf("span %s: sandbox.actor = %q, want it without the ticket's signature", s.Name(), got)
		}
	}
}
