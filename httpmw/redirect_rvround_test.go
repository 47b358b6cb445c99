package httpmw_test

// Review of the redirect ticket rule (rvround).

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// A routed request's redirect back to the host the client addressed (a
// relative Location from the sandbox's version: "/v2") never leaves that
// host, and the ticket goes on with it, as Authorization does. The
// transport read the chain through Response.Request, which for a routed
// request was the copy sent to the sandbox's upstream: the first host
// was the upstream's, the redirect's (the client's cart host) another,
// and the ticket was dropped on a same-host redirect, so that a next hop
// that admits the sandbox only by ticket served the redirect as
// production.
func TestRoutedRedirectToTheSameHostKeepsTicket(t *testing.T) {
	for _, tc := range []struct {
		name string
		base http.RoundTripper
	}{
		{"http.Transport", &http.Transport{}},
		// otelhttp sends a copy of the request it is given: the
		// response's Request is that copy, not the transport's.
		{"otelhttp", otelhttp.NewTransport(&http.Transport{})},
	} {
		t.Run(tc.name, func(t *testing.T) { routedRedirectKeepsTicket(t, tc.base) })
	}
}

func routedRedirectKeepsTicket(t *testing.T, base http.RoundTripper) {
	tickets := make(chan string, 1)
	sandbox := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/start" {
			http.Redirect(w, r, "/next", http.StatusTemporaryRedirect)
			return
		}
		m, err := propagation.Default().Read(otelprop.HeaderCarrier(r.Header))
		if err != nil {
			t.Errorf("sandbox: markers unreadable: %v", err)
		}
		tickets <- m.Ticket
	}))
	defer sandbox.Close()
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	rt := must(httpmw.NewRoutingTransport(base, tab, "cart"))
	c := newClient(t, rt)
	signer := must(propagation.NewSigner(propagation.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}))
	tk := must(signer.Sign(propagation.Sandbox{ID: "pr-1", Actor: "alice"}, time.Hour))
	codec := propagation.Default()
	req := mustRequest(t, t.Context(), http.MethodGet, "http://cart.invalid/start", nil)
	req.Header = codec.HTTPHeader(propagation.Sandbox{ID: "pr-1", Actor: "alice"})
	codec.InjectTicket(tk, otelprop.HeaderCarrier(req.Header))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := <-tickets; got == "" {
		t.Error("a redirect from the sandbox back to the client's own host (cart.invalid) lost the ticket")
	}
	if resp.Request == nil || !strings.HasPrefix(resp.Request.URL.String(), "http://cart.invalid/") {
		t.Errorf("Response.Request of a routed request is %v; want the caller's request (http://cart.invalid/next)", resp.Request.URL)
	}
}
