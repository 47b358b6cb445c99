package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestChain runs A → B → C on loopback. A uses httpmw (handler and
// transport); B only OpenTelemetry (otelhttp with the W3C TraceContext and
// Baggage propagators, no sandboxkit); C is served by two httpmw servers,
// baseline and sandbox, behind an httpmw proxy at C's address that chooses
// between them. The sandbox entering A reaches C through B's baggage.
func TestChain(t *testing.T) {
	loopback := httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))
	alog, logger := newAuditLog()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	w3c := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})
	named := otelhttp.WithSpanNameFormatter(func(op string, _ *http.Request) string { return op })

	// C: baseline and sandbox versions, each an httpmw service traced by otelhttp.
	newC := func(name string) *httptest.Server {
		return httptest.NewServer(otelhttp.NewHandler(
			must(httpmw.NewHandler(echo(name), loopback, httpmw.WithLogger(logger))),
			"C-"+name, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(w3c), named))
	}
	cBase, cSandbox := newC("C-baseline"), newC("C-sandbox")
	defer cBase.Close()
	defer cSandbox.Close()
	table := newTable(t, routes.Sandbox{ID: "pr-7", Actor: "alice",
		Services: map[string]routes.Route{"c": {Upstream: cSandbox.URL}}})
	proxyTransport := &http.Transport{}
	defer proxyTransport.CloseIdleConnections()
	pc, err := httpmw.NewProxy(table, "c", mustURL(t, cBase.URL), loopback, httpmw.WithLogger(logger),
		httpmw.WithRoundTripper(proxyTransport))
	if err != nil {
		t.Fatal(err)
	}
	cProxy := httptest.NewServer(pc)
	defer cProxy.Close()

	// B: OpenTelemetry only. Its client carries what its propagators
	// carry: traceparent and baggage, not the Sandbox-Id header.
	bClient := newClient(t, otelhttp.NewTransport(&http.Transport{},
		otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(w3c)))
	b := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, cProxy.URL+"/from-b?x=1", nil)
		forward(w, bClient, req)
	}), "B", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(w3c), named))
	defer b.Close()

	// A: httpmw in and out.
	aClient := newClient(t, must(httpmw.NewTransport(&http.Transport{}, httpmw.WithLogger(logger))))
	a := httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, b.URL, nil)
		forward(w, aClient, req)
	}), loopback, httpmw.WithLogger(logger))))
	defer a.Close()

	client := newClient(t, &http.Transport{})
	codec := propagation.Default()
	for _, tc := range []struct {
		name    string
		header  http.Header
		server  string
		sandbox string
		attrOnC string
	}{
		{"sandbox overriding C", codec.HTTPHeader(propagation.Sandbox{ID: "pr-7", Actor: "alice"}), "C-sandbox", "pr-7", "pr-7"},
		{"sandbox not overriding C", codec.HTTPHeader(propagation.Sandbox{ID: "pr-8"}), "C-baseline", "pr-8", "pr-8"},
		{"production traffic", http.Header{"Baggage": {"tenant=acme"}}, "C-baseline", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			req := mustRequest(t, context.Background(), http.MethodGet, a.URL, nil)
			req.Header = tc.header.Clone()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := decodeSeen(t, resp)
			if got.Server != tc.server || got.Sandbox != tc.sandbox || got.Path != "/from-b?x=1" {
				t.Errorf("landed on %s as %q (path %s); want %s as %q", got.Server, got.Sandbox, got.Path, tc.server, tc.sandbox)
			}
			if tc.sandbox == "pr-7" && got.Actor != "alice" {
				t.Errorf("actor %q at C; want alice", got.Actor)
			}
			if tc.sandbox == "" && strings.Contains(strings.Join(got.Baggage, ","), "sandbox.") {
				t.Errorf("production request reached C with sandbox baggage %q", got.Baggage)
			}
			// C's server span carries the sandbox, B's does not (B knows
			// nothing of sandboxes), and all spans are one trace.
			var cSpan, bSpan sdktrace.ReadOnlySpan
			traces := map[string]bool{}
			for _, s := range rec.Ended() {
				traces[s.SpanContext().TraceID().String()] = true
				switch {
				case strings.HasPrefix(s.Name(), "C-"):
					cSpan = s
				case s.Name() == "B":
					bSpan = s
				}
			}
			if cSpan == nil || bSpan == nil {
				t.Fatalf("spans %v; want B's and C's", rec.Ended())
			}
			if v := attr(bSpan, audit.KeyID); v != "" {
				t.Errorf("B's span has sandbox.id %q; B runs no sandboxkit", v)
			}
			if v := attr(cSpan, audit.KeyID); v != tc.attrOnC {
				t.Errorf("C's span sandbox.id = %q; want %q", v, tc.attrOnC)
			}
			if len(traces) != 1 {
				t.Errorf("%d traces; want the chain B → C in one", len(traces))
			}
		})
	}
	var routed, admitted int
	for _, r := range alog.Records() {
		switch r[audit.KeyDecision] {
		case string(audit.Routed):
			routed++
		case string(audit.Admitted):
			admitted++
		}
	}
	// A admits 2 sandboxes, the proxy admits 2, C admits 2; the proxy routes 1.
	if routed != 1 || admitted != 6 {
		t.Errorf("audit: %d routed, %d admitted; want 1 and 6: %v", routed, admitted, alog.Records())
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if kv.Key == attribute.Key(key) {
			return kv.Value.String()
		}
	}
	return ""
}

// forward sends req with c and copies the answer to w.
func forward(w http.ResponseWriter, c *http.Client, req *http.Request) {
	resp, err := c.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}
