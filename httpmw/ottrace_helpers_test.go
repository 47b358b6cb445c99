package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// relay is a service that calls to with client, in its request's context,
// with the headers set sets (if any) on the outgoing request, and answers
// what to answered.
func relay(client *http.Client, to string, set ...func(http.Header)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, to, nil)
		for _, f := range set {
			f(req.Header)
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}
}

// otFleet sets up a test of a fleet running OpenTelemetry with ottrace
// beside W3C's propagators: a tracer provider shut down when the test
// ends, the propagators, and the handler option that trusts loopback.
func otFleet(t *testing.T) (*sdktrace.TracerProvider, otelprop.TextMapPropagator, httpmw.HandlerOption) {
	ottest.Quiet(t)
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, ottest.Propagators, httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))
}

// sandboxEcho is a service with the library's handler (with opts) that
// answers "sandbox=" and the sandbox it serves the request in.
func sandboxEcho(opts ...httpmw.HandlerOption) http.Handler {
	return must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		io.WriteString(w, "sandbox="+s.ID)
	}), opts...))
}

// transportOrder is one way to stack a service's client transports in a
// fleet running OpenTelemetry with ottrace.
type transportOrder struct {
	name string
	rt   func(http.RoundTripper) http.RoundTripper
}

// ottraceOrders are both orders of httpmw's transport and otelhttp's
// (with ottest.Propagators and tp).
func ottraceOrders(tp *sdktrace.TracerProvider) []transportOrder {
	opts := []otelhttp.Option{otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(ottest.Propagators)}
	return []transportOrder{
		{"otelhttp outside httpmw", func(base http.RoundTripper) http.RoundTripper {
			return otelhttp.NewTransport(must(httpmw.NewTransport(base)), opts...)
		}},
		{"httpmw outside otelhttp", func(base http.RoundTripper) http.RoundTripper {
			return must(httpmw.NewTransport(otelhttp.NewTransport(base, opts...)))
		}},
	}
}
