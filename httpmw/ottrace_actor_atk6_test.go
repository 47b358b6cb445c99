package httpmw_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTTraceActorsAtk6: two services with the library in a fleet running
// OpenTelemetry with ottrace, A calling C, both orders of A's client
// transports, for actors that ottrace cannot carry as they are (a '%',
// a ',' or a space, which W3C's baggage carries percent-encoded): C
// serves A's sandbox with A's actor, never a 400. A's context baggage
// holds a member of the caller's (tenant), so that otelhttp writes
// ot-baggage- headers from it. An actor holding a '%' with otelhttp under
// httpmw is a known fault, left open (see CHANGELOG, atk6): httpmw mirrors
// the actor into the context's baggage for otelhttp's Baggage propagator,
// ottrace writes it as it is in Ot-Baggage-Sandbox.actor, and C refuses
// that (400) as another value to a hop that percent-decodes it.
func TestOTTraceActorsAtk6(t *testing.T) {
	tp, props, loopback := otFleet(t)
	c := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		io.WriteString(w, s.ID+"/"+s.Actor)
	}), loopback)), "C", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
	defer c.Close()
	for _, order := range ottraceOrders(tp) {
		client := &http.Client{Transport: order.rt(&http.Transport{})}
		a := httptest.NewServer(otelhttp.NewHandler(must(httpmw.NewHandler(relay(client, c.URL), loopback)), "A", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(props)))
		for _, actor := range []string{"alice", "50%", "a%41", "a,b", "a;b", "a b", `a"b`, `a\b`, "zoë"} {
			// The known limitation: refused, never served as something
			// else (pinned, so that a change either way is seen).
			refused := order.name == "httpmw outside otelhttp" && strings.Contains(actor, "%")
			req, _ := http.NewRequest(http.MethodGet, a.URL, nil)
			req.Header.Set("Sandbox-Id", "pr-1")
			req.Header.Set("Baggage", "tenant=acme,sandbox.id=pr-1,sandbox.actor="+url.PathEscape(actor))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case refused && resp.StatusCode != http.StatusBadRequest:
				t.Errorf("%s, actor %q: C answered %d %q; want the known refusal, 400", order.name, actor, resp.StatusCode, body)
			case !refused && (resp.StatusCode != http.StatusOK || string(body) != "pr-1/"+actor):
				t.Errorf("%s, actor %q: C answered %d %q; want 200 pr-1/%s", order.name, actor, resp.StatusCode, body, actor)
			}
		}
		a.Close()
		client.CloseIdleConnections()
	}
}
