package httpmw_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
)

// TestOTFormLookalikeKeysAtk7: a header in OpenTracing's baggage form
// whose key is one of ours percent-encoded or with a '+' in it
// (Ot-Baggage-Sandbox%2Eid, a valid header name: '%' and '+' are token
// bytes) is no key header to the codec, but OpenTelemetry's ottrace
// propagator reads it as the member "sandbox%2eid", which the hop then
// sends on as W3C baggage, and which a lenient parser, and the codec
// itself, read as sandbox.id. A runs otelhttp with ottrace outside or
// inside httpmw's handler and calls B (library, trusted) through
// otelhttp's transport: from an untrusted client, B must serve
// production (nothing of ours left for it to read); from a trusted one,
// A must refuse the request (400), as it refuses the same key in
// baggage, rather than serve it as production while its next call
// carries a marker.
func TestOTFormLookalikeKeysAtk7(t *testing.T) {
	tp, props, loopback := otFleet(t)
	b := httptest.NewServer(sandboxEcho(loopback))
	defer b.Close()
	client := &http.Client{Transport: otelhttp.NewTransport(must(httpmw.NewTransport(&http.Transport{})), otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props))}
	defer client.CloseIdleConnections()
	otel := func(h http.Handler) http.Handler {
		return otelhttp.NewHandler(h, "A", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props))
	}
	app := relay(client, b.URL)
	type server struct {
		name    string
		trusted bool
		h       http.Handler
	}
	var servers []server
	for _, trusted := range []bool{false, true} {
		var opts []httpmw.HandlerOption
		name := "untrusted"
		if trusted {
			opts, name = append(opts, loopback), "trusted"
		}
		servers = append(servers,
			server{name + "/otelhttp outside", trusted, otel(must(httpmw.NewHandler(app, opts...)))},
			server{name + "/otelhttp inside", trusted, must(httpmw.NewHandler(otel(app), opts...))})
	}
	for _, srv := range servers {
		a := httptest.NewServer(srv.h)
		defer a.Close()
		for _, key := range []string{"Sandbox%2eid", "Sandbox%2Eid", "%73andbox.id", "Sandbox.%69d", "Sandbox+.id", "Sandbox%2eactor", "Sandbox%2eticket"} {
			for _, beside := range [][2]string{{}, {"Sandbox-Id", "pr-1"}} {
				t.Run(srv.name+"/Ot-Baggage-"+key+"/"+beside[0], func(t *testing.T) {
					req, _ := http.NewRequest(http.MethodGet, a.URL, nil)
					for _, kv := range ottest.TraceHeaders {
						req.Header.Set(kv[0], kv[1])
					}
					req.Header["Ot-Baggage-"+key] = []string{"feat-1"}
					if beside[0] != "" {
						req.Header.Set(beside[0], beside[1])
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case !srv.trusted && (resp.StatusCode != http.StatusOK || string(body) != "sandbox="):
						t.Errorf("A answered %d %q; want B's 200 as production", resp.StatusCode, body)
					case srv.trusted && resp.StatusCode != http.StatusBadRequest:
						t.Errorf("A answered %d %q; want 400", resp.StatusCode, body)
					}
				})
			}
		}
	}
}
