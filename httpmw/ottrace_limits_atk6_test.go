package httpmw_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTTraceOnlyHopAtLimitsAtk6: A (library) gets a sandbox request whose
// baggage holds as many other members as W3C's limits allow (64 members,
// or close to 8192 bytes) and calls B, which runs only OpenTelemetry with
// ottrace, through otelhttp outside httpmw: otelhttp writes every member
// of the context's baggage as an ot-baggage-<key> header, then httpmw adds
// ours. ottrace on B builds its baggage with baggage.New, which drops
// members over the limits in map order, ours among them or not, and
// replaces the context's baggage with what is left: every OT-form member
// of ours must survive, so that C (library) sees A's sandbox.
func TestOTTraceOnlyHopAtLimitsAtk6(t *testing.T) {
	tp, props, loopback := otFleet(t)
	c := httptest.NewServer(otelhttp.NewHandler(sandboxEcho(loopback), "C", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer c.Close()
	bClient := &http.Client{Transport: otelhttp.NewTransport(&http.Transport{}, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props))}
	defer bClient.CloseIdleConnections()
	var (
		mu     sync.Mutex
		bOurs  map[string]string
		bCount int
	)
	bRelay := relay(bClient, c.URL)
	b := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		for k := range r.Header {
			if strings.HasPrefix(k, "Ot-Baggage-") {
				n++
			}
		}
		mu.Lock()
		bOurs, bCount = ottest.Ours(propagation.Default(), r.Header), n
		mu.Unlock()
		bRelay(w, r)
	}), "B", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer b.Close()

	client := &http.Client{Transport: otelhttp.NewTransport(must(httpmw.NewTransport(&http.Transport{})), otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props))}
	defer client.CloseIdleConnections()
	a := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(relay(client, b.URL), loopback)),
		"A", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer a.Close()

	many := func(n, size int) string {
		var m []string
		for i := range n {
			m = append(m, fmt.Sprintf("k%02d=%s", i, strings.Repeat("v", size)))
		}
		return strings.Join(m, ",")
	}
	for _, tc := range []struct{ name, bag string }{
		{"64 members", many(64, 1)},
		{"62 members and ours", many(62, 1) + ",sandbox.id=pr-1"},
		{"8191 bytes", many(8, 1019)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.bag) > propagation.MaxBaggageBytes {
				t.Fatalf("baggage of %d bytes", len(tc.bag))
			}
			for i := range 20 { // ottrace drops members over the limits in map order
				req, _ := http.NewRequest(http.MethodGet, a.URL, nil)
				req.Header.Set("Sandbox-Id", "pr-1")
				req.Header.Set("Baggage", tc.bag)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				ours, n := bOurs, bCount
				mu.Unlock()
				if resp.StatusCode != http.StatusOK || string(body) != "sandbox=pr-1" {
					t.Fatalf("request %d: C answered %d %q; want 200 in sandbox pr-1 (B got %d ot-baggage headers, ottrace read %v of ours)", i, resp.StatusCode, body, n, ours)
				}
				if n > propagation.MaxBaggageMembers {
					t.Fatalf("request %d: B got %d ot-baggage headers, more than ottrace keeps", i, n)
				}
			}
		})
	}
}
