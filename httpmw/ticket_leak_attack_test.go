package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

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

// baggageSpans records, as span attributes would (contrib's baggagecopy
// span processor copies every baggage member onto each span it starts),
// the baggage members in the context of every span started.
type baggageSpans struct {
	mu      sync.Mutex
	members []string
}

func (p *baggageSpans) OnStart(ctx context.Context, _ sdktrace.ReadWriteSpan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range baggage.FromContext(ctx).Members() {
		p.members = append(p.members, m.Key()+"="+m.Value())
	}
}
func (p *baggageSpans) OnEnd(sdktrace.ReadOnlySpan)      {}
func (p *baggageSpans) Shutdown(context.Context) error   { return nil }
func (p *baggageSpans) ForceFlush(context.Context) error { return nil }

// TestTicketNotInTelemetry: otelhttp starts its server span from the
// context its propagators extracted, before the sandbox middleware runs;
// a span processor that copies baggage onto spans (contrib's baggagecopy)
// would export the ticket to the tracing backend. With the README's
// propagators the ticket is out of that context already; the sandbox is
// not.
func TestTicketNotInTelemetry(t *testing.T) {
	signer, _, verifier := ticketKeys(t)
	ticket, err := signer.SignUntil(propagation.Sandbox{ID: "feat-1", Actor: "alice"}, ticketClock.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	spans := &baggageSpans{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, _ := propagation.FromContext(r.Context()); s.ID != "feat-1" {
			http.Error(w, "not admitted", http.StatusTeapot)
		}
	})
	edge := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(app, httpmw.WithVerifier(verifier),
		httpmw.WithClock(func() time.Time { return ticketClock }))), "edge",
		otelhttp.WithPropagators(propagation.NewTextMapPropagator(nil)), otelhttp.WithTracerProvider(tp)))
	defer edge.Close()
	req := mustRequest(t, context.Background(), http.MethodGet, edge.URL, nil)
	req.Header.Set("Baggage", "tenant=acme,sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket="+ticket)
	resp, err := newClient(t, &http.Transport{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	spans.mu.Lock()
	defer spans.mu.Unlock()
	if !slices.Contains(spans.members, "sandbox.id=feat-1") {
		t.Errorf("span baggage %q: want the sandbox", spans.members)
	}
	for _, m := range spans.members {
		if strings.HasPrefix(m, "sandbox.ticket=") {
			t.Errorf("a span started with the ticket in its baggage: %q", m)
		}
	}
}
