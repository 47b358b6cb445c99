package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestTicketStaysAtTheEdge: a ticket is a bearer credential valid for up
// to 24 hours. Once the edge has admitted a request on it, the ticket must
// not leave the edge's process in any carrier: not on the handler's calls
// onward (to the next hop or to a third-party host, through otelhttp's
// transport with the README's propagators or with OpenTelemetry's plain
// Baggage propagator, through the library's transport, through the
// proxy), not in the request headers a forwarding handler copies, and not
// in the context's OpenTelemetry baggage, which span processors and log
// bridges copy into telemetry. The sandbox itself travels on.
func TestTicketStaysAtTheEdge(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice"}
	ticket, err := signer.SignUntil(alice, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sig := ticket[strings.LastIndexByte(ticket, '.')+1:]

	var mu sync.Mutex
	got := map[string]http.Header{}
	thirdParty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
	}))
	defer thirdParty.Close()

	readme := propagation.NewTextMapPropagator(nil)
	plainOTel := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})
	clients := map[string]http.RoundTripper{
		"/otelhttp-readme":      otelhttp.NewTransport(&http.Transport{}, otelhttp.WithPropagators(readme)),
		"/otelhttp-plain":       otelhttp.NewTransport(&http.Transport{}, otelhttp.WithPropagators(plainOTel)),
		"/httpmw-over-otelhttp": must(httpmw.NewTransport(otelhttp.NewTransport(&http.Transport{}, otelhttp.WithPropagators(plainOTel)))),
	}
	var contextKeys []string
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		mu.Lock()
		contextKeys = contextKeys[:0]
		for _, m := range baggage.FromContext(ctx).Members() {
			contextKeys = append(contextKeys, m.Key()+"="+m.Value())
		}
		mu.Unlock()
		for path, rt := range clients {
			req := mustRequest(t, ctx, http.MethodGet, thirdParty.URL+path, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Error(err)
				continue
			}
			resp.Body.Close()
		}
		// A forwarding handler copies the incoming headers.
		req := mustRequest(t, ctx, http.MethodGet, thirdParty.URL+"/copied-headers", nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
	})
	opts := []httpmw.HandlerOption{httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")), httpmw.WithVerifier(verifier),
		httpmw.WithClock(func() time.Time { return ticketClock })}
	edge := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(app, opts...)), "edge", otelhttp.WithPropagators(readme)))
	defer edge.Close()
	proxied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got["/proxy"] = r.Header.Clone()
		mu.Unlock()
	}))
	defer proxied.Close()
	tab := newTable(t, routes.Sandbox{ID: "feat-1", Services: map[string]routes.Route{"cart": {Upstream: proxied.URL}}})
	popts := make([]httpmw.ProxyOption, len(opts))
	for i, o := range opts {
		popts[i] = o.(httpmw.ProxyOption)
	}
	proxy := newProxyServer(t, tab, closedURL(t), popts...)

	c := newClient(t, &http.Transport{})
	for _, bag := range []string{
		"tenant=acme,sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket=" + ticket,
		"sandbox.ticket=" + ticket + ";prop=1,sandbox.id=feat-1,sandbox.actor=alice",
	} {
		for _, srv := range []string{edge.URL, proxy.URL} {
			req := mustRequest(t, context.Background(), http.MethodGet, srv, nil)
			req.Header.Set("Baggage", bag)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s with baggage %q: status %d", srv, bag, resp.StatusCode)
			}
		}
		mu.Lock()
		if len(got) != len(clients)+2 {
			t.Errorf("baggage %q: calls seen %d, want %d", bag, len(got), len(clients)+2)
		}
		for path, h := range got {
			all := strings.Join(h.Values("Baggage"), ",")
			if !strings.Contains(all, "sandbox.id=feat-1") {
				t.Errorf("baggage %q: %s: the sandbox did not travel: baggage %q", bag, path, all)
			}
			for k, vs := range h {
				for _, v := range vs {
					if strings.Contains(v, sig) || strings.Contains(strings.ToLower(k), "ticket") {
						t.Errorf("baggage %q: %s: the ticket left the edge: %s: %s", bag, path, k, v)
					}
				}
			}
		}
		for _, m := range contextKeys {
			if strings.Contains(m, sig) {
				t.Errorf("baggage %q: the handler's context baggage holds the ticket: %q", bag, m)
			}
		}
		clear(got)
		mu.Unlock()
	}
}
