package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// BenchmarkHandler measures the middleware alone: ServeHTTP called in
// process with a request as a server hands it over, and a writer that
// keeps nothing.
func BenchmarkHandler(b *testing.B) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := propagation.FromContext(r.Context()); ok {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mw := must(httpmw.NewHandler(app, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8"))))
	// A budget that admits everything: the cost of asking it (warm key).
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1 << 20}})
	mwb := must(httpmw.NewHandler(app, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")), httpmw.WithBreaker(g)))
	otel := otelhttp.NewHandler(app, "app")
	common := []string{
		"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Accept", "application/json", "User-Agent", "bench/1.0",
	}
	prod := newRequest("10.1.2.3:5555", append(common, "Baggage", "tenant=acme,region=eu-west-1")...)
	sb := newRequest("10.1.2.3:5555", append(common, "Sandbox-Id", "pr-42",
		"Baggage", "sandbox.id=pr-42,sandbox.actor=alice,tenant=acme,region=eu-west-1")...)
	// A browser's request: 14 headers, past the one-pass size (the
	// large-header path of Codec.Quiet), and one under grpc-gateway's
	// prefix that is not ours (every key starting with 'G' is looked at).
	browser := newRequest("10.1.2.3:5555", append(common,
		"Baggage", "tenant=acme,region=eu-west-1",
		"Accept-Encoding", "gzip, deflate, br", "Accept-Language", "en-GB,en;q=0.9",
		"Cache-Control", "no-cache", "Connection", "keep-alive", "Cookie", "session=abc123; theme=dark",
		"Origin", "https://shop.example.com", "Referer", "https://shop.example.com/cart",
		"Sec-Fetch-Mode", "cors", "Sec-Fetch-Site", "same-origin", "X-Request-Id", "f3a9c2e1")...)
	gw := newRequest("10.1.2.3:5555", append(common, "Baggage", "tenant=acme,region=eu-west-1",
		"Grpc-Metadata-X-User", "u1")...)

	for _, bc := range []struct {
		name string
		h    http.Handler
		r    *http.Request
	}{
		{"bare", app, prod},
		{"baseline", mw, prod},
		{"baseline-browser", mw, browser},
		{"baseline-gateway-header", mw, gw},
		{"sandbox", mw, sb},
		{"baseline+breaker", mwb, prod},
		{"sandbox+breaker", mwb, sb},
		{"otelhttp", otel, prod},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(w, bc.r)
			}
		})
	}
}

// BenchmarkTransport measures a full round trip on loopback: a real
// server, a real http.Transport, with and without the sandbox Transport
// in front.
func BenchmarkTransport(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	baseline, sandbox := httptest.NewServer(ok), httptest.NewServer(ok)
	defer baseline.Close()
	defer sandbox.Close()
	tab, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}},
		{ID: "pr-7", Services: map[string]routes.Route{"orders": {Upstream: sandbox.URL}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctxOf := func(id string) context.Context {
		if id == "" {
			return context.Background()
		}
		return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: "alice"})
	}
	for _, bc := range []struct {
		name    string
		wrap    bool
		sandbox string
	}{
		{"bare", false, ""},
		{"baseline", true, ""},
		{"sandbox", true, "pr-7"}, // propagated, not routed: cart is not overridden
		{"routed", true, "pr-42"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			var rt http.RoundTripper = base
			if bc.wrap {
				rt = must(httpmw.NewRoutingTransport(base, tab, "cart"))
			}
			req, _ := http.NewRequestWithContext(ctxOf(bc.sandbox), http.MethodGet, baseline.URL+"/items?id=7", nil)
			req.Header.Set("Baggage", "tenant=acme")
			roundTrip := func() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			roundTrip() // open the connection
			b.ReportAllocs()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}

// BenchmarkHop compares what one service-to-service hop costs with
// sandboxkit in process against the sidecar approach, on loopback:
//
//   - direct: a client calls a server, nothing in between;
//   - sandboxkit: the same hop carrying a sandbox, with our Transport on the
//     client and our Handler on the server (routing decision included);
//   - proxy-hop: the same hop through one in-process
//     httputil.ReverseProxy, a stand-in for a sidecar. A mesh puts two
//     proxies on every hop (the caller's and the callee's), each in its own
//     process, so this is a lower bound on what a sidecar adds.
//
// Run: go test ./httpmw -run '^$' -bench Hop -benchmem
func BenchmarkHop(b *testing.B) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	plain := httptest.NewServer(app)
	defer plain.Close()
	ours := httptest.NewServer(must(httpmw.NewHandler(app, httpmw.TrustAll())))
	defer ours.Close()
	target, _ := url.Parse(plain.URL)
	proxyTransport := &http.Transport{}
	defer proxyTransport.CloseIdleConnections()
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = proxyTransport
	sidecar := httptest.NewServer(rp)
	defer sidecar.Close()
	tab, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-42", Services: map[string]routes.Route{"other": {Upstream: plain.URL}}}})
	if err != nil {
		b.Fatal(err)
	}
	sctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice"})

	for _, bc := range []struct {
		name string
		url  string
		ctx  context.Context
		wrap bool
	}{
		{"direct", plain.URL, context.Background(), false},
		{"sandboxkit", ours.URL, sctx, true},
		{"proxy-hop", sidecar.URL, context.Background(), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			var rt http.RoundTripper = base
			if bc.wrap {
				rt = must(httpmw.NewRoutingTransport(base, tab, "cart"))
			}
			req, _ := http.NewRequestWithContext(bc.ctx, http.MethodGet, bc.url+"/items", nil)
			roundTrip := func() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %s", resp.Status)
				}
			}
			roundTrip()
			b.ReportAllocs()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}
