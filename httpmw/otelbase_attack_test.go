package httpmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// The natural way to add the library to an instrumented client is
// httpmw.NewTransport(otelhttp.NewTransport(base)): the OpenTelemetry
// transport then runs after ours and its Baggage propagator sets the
// baggage header from the context's OpenTelemetry baggage, replacing the
// one carrying our members. When that baggage holds other members (the
// request came with "baggage: tenant=acme" and the sandbox in Sandbox-Id,
// or the code set baggage of its own), the sandbox left in Sandbox-Id
// alone, which an OpenTelemetry-only next hop does not carry on: two hops
// later the request was production traffic.
func TestTransportOverOTelTransportKeepsBaggage(t *testing.T) {
	w3c := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})
	var mu sync.Mutex
	var got []string
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Baggage"))
		mu.Unlock()
	}))
	defer next.Close()
	client := newClient(t, must(httpmw.NewTransport(otelhttp.NewTransport(&http.Transport{}, otelhttp.WithPropagators(w3c)))))

	// Service A: our handler behind otelhttp's, our transport on otelhttp's.
	a := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if r.URL.Query().Has("own") {
			// The code sets baggage of its own, as OpenTelemetry's API
			// lets it: a new baggage for the context.
			m, _ := baggage.NewMember("user", "42")
			b, _ := baggage.New(m)
			ctx = baggage.ContextWithBaggage(ctx, b)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, next.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
	}), httpmw.TrustAll())), "A", otelhttp.WithPropagators(w3c)))
	defer a.Close()

	c := newClient(t, &http.Transport{})
	for _, tc := range []struct {
		query  string
		header http.Header
	}{
		{"", http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"tenant=acme"}}},
		{"?own", http.Header{"Sandbox-Id": {"pr-1"}}},
		{"?own", propagation.Default().HTTPHeader(propagation.Sandbox{ID: "pr-1"})},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		req := mustRequest(t, context.Background(), http.MethodGet, a.URL+tc.query, nil)
		req.Header = tc.header.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		mu.Lock()
		sent := fmt.Sprint(got)
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || !strings.Contains(sent, "sandbox.id=pr-1") {
			t.Errorf("request %s%s: status %d, the next hop got baggage %s; want sandbox.id=pr-1 in it", tc.header, tc.query, resp.StatusCode, sent)
		}
	}
}

// The same through the proxy, behind otelhttp's handler and on its
// transport (WithRoundTripper).
func TestProxyOverOTelTransportKeepsBaggage(t *testing.T) {
	w3c := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})
	var mu sync.Mutex
	var got string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Get("Baggage")
		mu.Unlock()
	}))
	defer up.Close()
	tr := otelhttp.NewTransport(&http.Transport{}, otelhttp.WithPropagators(w3c))
	p := must(httpmw.NewProxy(newTable(t), "cart", mustURL(t, up.URL), httpmw.TrustAll(), httpmw.WithRoundTripper(tr)))
	defer p.CloseIdleConnections()
	proxy := httptest.NewServer(otelhttp.NewHandler(p, "proxy", otelhttp.WithPropagators(w3c)))
	defer proxy.Close()
	req := mustRequest(t, context.Background(), http.MethodGet, proxy.URL, nil)
	req.Header = http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"tenant=acme"}}
	resp, err := newClient(t, &http.Transport{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(got, "sandbox.id=pr-1") || !strings.Contains(got, "tenant=acme") {
		t.Errorf("the upstream got baggage %q; want sandbox.id=pr-1 and tenant=acme", got)
	}
}
