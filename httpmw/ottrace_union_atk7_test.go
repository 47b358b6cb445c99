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
)

// TestOTFormUnionAtLimitsAtk7: A (library) gets a sandbox request whose
// baggage holds other members, and calls B, which runs only OpenTelemetry
// with ottrace, with OpenTracing headers of its own on the request
// (ot-baggage-<key>, set by code written for OpenTracing). With otelhttp
// under httpmw, httpmw writes the OT form and keeps it within ottrace's
// limits; then otelhttp's ottrace adds every member of the context's
// baggage in that form. B's ottrace reads the union of both, and
// baggage.New drops the members over 64 (or 8192 bytes) in map order, ours
// among them or not: C must still see A's sandbox, in both transport
// orders.
func TestOTFormUnionAtLimitsAtk7(t *testing.T) {
	tp, props, loopback := otFleet(t)
	c := httptest.NewServer(otelhttp.NewHandler(sandboxEcho(loopback), "C", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer c.Close()
	bClient := &http.Client{Transport: otelhttp.NewTransport(&http.Transport{}, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props))}
	defer bClient.CloseIdleConnections()
	var (
		mu     sync.Mutex
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
		bCount = n
		mu.Unlock()
		bRelay(w, r)
	}), "B", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer b.Close()

	many := func(prefix string, n, size int) string {
		var m []string
		for i := range n {
			m = append(m, fmt.Sprintf("%s%02d=%s", prefix, i, strings.Repeat("v", size)))
		}
		return strings.Join(m, ",")
	}
	for _, order := range ottraceOrders(tp) {
		client := &http.Client{Transport: order.rt(&http.Transport{})}
		defer client.CloseIdleConnections()
		var otN, otSize int
		var shapeMu sync.Mutex
		a := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(relay(client, b.URL, func(h http.Header) {
			shapeMu.Lock()
			n, size := otN, otSize
			shapeMu.Unlock()
			for i := range n {
				h.Set(fmt.Sprintf("Ot-Baggage-App%02d", i), strings.Repeat("w", size))
			}
		}), loopback)), "A", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
		defer a.Close()
		for _, tc := range []struct {
			name    string
			bag     string
			n, size int
		}{
			{"40 context members, 30 OT headers", many("k", 40, 1), 30, 1},
			{"63 context members, 63 OT headers", many("k", 63, 1), 63, 1},
			{"5000 context bytes, 5000 OT bytes", many("k", 5, 1000), 5, 1000},
		} {
			t.Run(order.name+"/"+tc.name, func(t *testing.T) {
				shapeMu.Lock()
				otN, otSize = tc.n, tc.size
				shapeMu.Unlock()
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
					n := bCount
					mu.Unlock()
					if resp.StatusCode != http.StatusOK || string(body) != "sandbox=pr-1" {
						t.Fatalf("request %d: C answered %d %q; want 200 in sandbox pr-1 (B got %d ot-baggage headers)", i, resp.StatusCode, body, n)
					}
				}
			})
		}
	}
}
