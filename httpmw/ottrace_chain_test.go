package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTTracePropagatorChain: a fleet migrating from OpenTracing runs
// OpenTelemetry with the ottrace propagator beside W3C's (tracecontext,
// baggage, ottrace), which writes every baggage member as a header
// ot-baggage-<key> too: a sandbox's call then carries
// Ot-Baggage-Sandbox.id beside its baggage (when otelhttp's transport runs
// under the library's, from the context's baggage), which the next hop
// with the library refused as a marker (400) before it read such a header
// as one more reading of the member, to agree with the others. Two
// trusted services in such a fleet, A calling B, with both orders of A's
// client transports.
func TestOTTracePropagatorChain(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	props := ottest.Propagators
	loopback := httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))

	b := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		io.WriteString(w, s.ID)
	}), loopback)), "B", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer b.Close()

	for _, order := range ottraceOrders(tp) {
		t.Run(order.name, func(t *testing.T) {
			client := &http.Client{Transport: order.rt(&http.Transport{})}
			defer client.CloseIdleConnections()
			a := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(relay(client, b.URL), loopback)), "A", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
			defer a.Close()

			req, _ := http.NewRequest(http.MethodGet, a.URL, nil)
			req.Header.Set("Sandbox-Id", "pr-1") // as a hop with the library sends it
			req.Header.Set("Baggage", "sandbox.id=pr-1,sandbox.actor=alice")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "pr-1" {
				t.Errorf("B answered %d %q; want 200 in sandbox pr-1", resp.StatusCode, body)
			}
		})
	}
}

// TestOTTraceOnlyHopKeepsSandbox: OpenTelemetry's ottrace propagator,
// extracting after W3C's Baggage propagator, replaces the context's
// baggage with the ot-baggage-<key> members it finds. A hop that runs
// only OpenTelemetry (B) between two with the library (A, C) therefore
// keeps the sandbox only if every call that carries ot-baggage- headers
// carries the sandbox in them too. A forwards a request whose baggage
// holds a member of the caller's own (tenant), with both orders of its
// client transports; C must see the sandbox.
func TestOTTraceOnlyHopKeepsSandbox(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	props := ottest.Propagators
	loopback := httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))
	c := httptest.NewServer(otelhttp.NewHandler(sandboxEcho(loopback), "C", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer c.Close()
	bClient := &http.Client{Transport: otelhttp.NewTransport(&http.Transport{}, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props))}
	defer bClient.CloseIdleConnections()
	b := httptest.NewServer(otelhttp.NewHandler(relay(bClient, c.URL), "B", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer b.Close()

	for _, order := range ottraceOrders(tp) {
		t.Run(order.name, func(t *testing.T) {
			client := &http.Client{Transport: order.rt(&http.Transport{})}
			defer client.CloseIdleConnections()
			a := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(relay(client, b.URL), loopback)),
				"A", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
			defer a.Close()
			for _, bag := range []string{"tenant=acme", "tenant=acme,sandbox.id=pr-1,sandbox.actor=alice"} {
				req, _ := http.NewRequest(http.MethodGet, a.URL, nil)
				req.Header.Set("Sandbox-Id", "pr-1")
				req.Header.Set("Baggage", bag)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "sandbox=pr-1" {
					t.Errorf("baggage %q: C answered %d %q; want 200 in sandbox pr-1", bag, resp.StatusCode, body)
				}
			}
		})
	}
}
