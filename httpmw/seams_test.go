package httpmw_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTelOnlyHopForwardsNoUnreadableMarkers (issue 13, point 3): client →
// B (otelhttp only, with the README's propagators: TraceContext, Baggage,
// then ours) → C (httpmw, TrustAll). Markers B cannot read (a header and
// baggage that disagree, two IDs, a lookalike key) must not reach C as a
// sandbox: B's Propagator takes them out of the OpenTelemetry baggage it
// would forward. Foreign members travel on.
func TestOTelOnlyHopForwardsNoUnreadableMarkers(t *testing.T) {
	alog, logger := newAuditLog()
	c := httptest.NewServer(must(httpmw.NewHandler(echo("C"), httpmw.TrustAll(), httpmw.WithLogger(logger))))
	defer c.Close()

	props := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil))
	bClient := newClient(t, otelhttp.NewTransport(&http.Transport{}, otelhttp.WithPropagators(props)))
	var bBaggage baggage.Baggage
	b := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bBaggage = baggage.FromContext(r.Context())
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, c.URL, nil)
		forward(w, bClient, req)
	}), "B", otelhttp.WithPropagators(props)))
	defer b.Close()

	client := newClient(t, &http.Transport{})
	for _, tc := range []struct {
		name   string
		header http.Header
		want   string // the sandbox C admits
	}{
		{"header and baggage disagree", http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=pr-2,tenant=acme"}}, ""},
		{"two baggage IDs", http.Header{"Baggage": {"sandbox.id=pr-1,sandbox.id=pr-2,tenant=acme"}}, ""},
		{"lookalike key", http.Header{"Baggage": {"\u00a0sandbox.id=pr-2,tenant=acme"}}, ""},
		{"empty header beside baggage", http.Header{"Sandbox-Id": {""}, "Baggage": {"sandbox.id=pr-2,tenant=acme"}}, ""},
		{"readable markers travel", http.Header{"Sandbox-Id": {"pr-2"}, "Baggage": {"sandbox.id=pr-2,tenant=acme"}}, "pr-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(alog.Records())
			req, _ := http.NewRequest(http.MethodGet, b.URL, nil)
			req.Header = tc.header
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := decodeSeen(t, resp)
			if got.Sandbox != tc.want {
				t.Fatalf("C admitted sandbox %q; want %q (C saw baggage %q)", got.Sandbox, tc.want, got.Baggage)
			}
			if bBaggage.Member("tenant").Value() != "acme" {
				t.Errorf("B lost the foreign member: %v", bBaggage)
			}
			if tc.want == "" {
				if len(got.Baggage) != 1 || got.Baggage[0] != "tenant=acme" {
					t.Errorf("C saw baggage %q; want only tenant=acme", got.Baggage)
				}
				if n := len(alog.Records()) - before; n != 0 {
					t.Errorf("C audited %d records for a request without markers", n)
				}
			}
		})
	}
}
