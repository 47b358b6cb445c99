package httpmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTPropagatorDifferential reads the same bytes with the middleware
// and with OpenTelemetry's own OT propagator
// (go.opentelemetry.io/contrib/propagators/ot), the parser a Go hop
// configured for OpenTracing's format uses: it turns each header
// ot-baggage-<key> (any case) of a request with OT trace headers into a
// baggage member <key> (lower-cased), which that hop's W3C Baggage
// propagator then sends on as "baggage: sandbox.id=...". Every request
// goes through a real server, with and without otelhttp in front of the
// middleware extracting OT baggage into the context first:
//
//   - from an untrusted client, neither the headers the middleware hands
//     on, read by the OT propagator and sent on as W3C baggage, nor the
//     context's baggage hold a member of ours, and the next hop's codec
//     finds no marker in what is sent on;
//   - from a trusted client, a request the OT propagator reads a member of
//     ours from is not served as production: it is refused (400), or
//     admitted in the sandbox that member names.
func TestOTPropagatorDifferential(t *testing.T) {
	ottest.Quiet(t)
	c := propagation.Default()
	ours := ottest.OurKeys(c)
	w3c := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})
	withOT := ottest.Propagators

	type served struct {
		sandbox propagation.Sandbox
		inSB    bool
		header  http.Header
		ctxBag  baggage.Baggage
	}
	var (
		mu   sync.Mutex
		last served
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := propagation.FromContext(r.Context())
		mu.Lock()
		last = served{sandbox: s, inSB: ok, header: r.Header.Clone(), ctxBag: baggage.FromContext(r.Context())}
		mu.Unlock()
	})
	trusted := must(httpmw.NewHandler(app, httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))))
	untrusted := must(httpmw.NewHandler(app))
	servers := map[string]*httptest.Server{}
	for name, h := range map[string]http.Handler{
		"trusted":          trusted,
		"untrusted":        untrusted,
		"trusted+otel":     otelhttp.NewHandler(trusted, "t", otelhttp.WithPropagators(withOT)),
		"untrusted+otel":   otelhttp.NewHandler(untrusted, "u", otelhttp.WithPropagators(withOT)),
		"untrusted+otelw3": otelhttp.NewHandler(untrusted, "u", otelhttp.WithPropagators(w3c)),
	} {
		srv := httptest.NewServer(h)
		defer srv.Close()
		servers[name] = srv
	}

	otTrace := ottest.TraceHeaders
	// readOT is what a Go hop with the OT propagator makes of h: its
	// members of ours.
	readOT := func(h http.Header) map[string]string { return ottest.Ours(c, h) }

	prefixes := []string{"ot-baggage-", "Ot-Baggage-", "OT-BAGGAGE-", "ot-Baggage-", "ot-baggage_", "Ot_Baggage_"}
	values := []string{"pr-1", "pr-2", "", "%70r-1", "pr-1;p=1"}
	beside := [][2]string{{}, {"Sandbox-Id", "pr-1"}, {"Baggage", "sandbox.id=pr-1,sandbox.actor=alice"}}
	cases, otReads := 0, 0
	for _, k := range c.Keys() {
		for _, spelled := range []string{k, strings.ToUpper(k), strings.ToUpper(k[:1]) + k[1:]} {
			for _, p := range prefixes {
				for _, v := range values {
					for _, b := range beside {
						h := http.Header{}
						for _, kv := range otTrace {
							h[kv[0]] = []string{kv[1]}
						}
						h[p+spelled] = []string{v} // as written: the server canonicalises
						if b[0] != "" {
							h[b[0]] = []string{b[1]}
						}
						sent := readOT(h)
						if len(sent) > 0 {
							otReads++
						}
						for name, srv := range servers {
							cases++
							desc := fmt.Sprintf("%s: %s: %q beside %v", name, p+spelled, v, b)
							req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
							req.Header = h.Clone()
							mu.Lock()
							last = served{}
							mu.Unlock()
							resp, err := http.DefaultClient.Do(req)
							if err != nil {
								t.Fatalf("%s: %v", desc, err)
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							mu.Lock()
							got := last
							mu.Unlock()
							if strings.HasPrefix(name, "untrusted") {
								if resp.StatusCode != http.StatusOK || got.inSB {
									t.Errorf("%s: status %d, sandbox %v (%v); want production", desc, resp.StatusCode, got.sandbox, got.inSB)
									continue
								}
								if left := readOT(got.header); len(left) > 0 {
									t.Errorf("%s: the OT propagator reads %v from the headers handed on", desc, left)
								}
								for _, m := range got.ctxBag.Members() {
									if ours[m.Key()] {
										t.Errorf("%s: the context's baggage holds %s=%s", desc, m.Key(), m.Value())
									}
								}
								// What a hop with the OT propagator sends on.
								next := http.Header{}
								withOT.Inject(withOT.Extract(context.Background(), otelprop.HeaderCarrier(got.header)), otelprop.HeaderCarrier(next))
								if m, err := c.Read(otelprop.HeaderCarrier(next)); m.Found || err != nil {
									t.Errorf("%s: the next hop reads %+v, %v from %v", desc, m, err, next)
								}
								continue
							}
							if len(sent) == 0 || resp.StatusCode == http.StatusBadRequest {
								continue
							}
							switch {
							case resp.StatusCode != http.StatusOK:
								t.Errorf("%s: status %d", desc, resp.StatusCode)
							case !got.inSB:
								t.Errorf("%s: served as production, but the OT propagator reads %v", desc, sent)
							case sent["sandbox.id"] != "" && sent["sandbox.id"] != got.sandbox.ID,
								sent["sandbox.actor"] != "" && sent["sandbox.actor"] != got.sandbox.Actor:
								t.Errorf("%s: admitted in %+v, but the OT propagator reads %v", desc, got.sandbox, sent)
							}
						}
					}
				}
			}
		}
	}
	// The cases must exercise the parser: most spellings are ones it reads.
	if otReads < cases/len(servers)/3 {
		t.Fatalf("the OT propagator read a member of ours from %d of %d header sets: the test does not reach it", otReads, cases/len(servers))
	}
	t.Logf("%d requests; the OT propagator read a member of ours from %d of %d header sets", cases, otReads, cases/len(servers))
}
