package httpmw_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestKeyHeaderAloneOnHTTP: a header named as any of our baggage keys, the
// actor's, origin's and ticket's as much as the ID's, in each of its three
// forms (Sandbox.actor, Uberctx-Sandbox.actor, Ot-Baggage-Sandbox.actor),
// is a marker alone, as it is on gRPC metadata and Kafka headers: a
// Jaeger or OpenTracing propagator on a later hop turns the Uberctx- and
// Ot-Baggage- forms into baggage sandbox.actor, which the next hop with
// the library refuses, and the gRPC hop behind a header-copying handler
// refuses the metadata. Before, only the ID's forms were markers alone on
// HTTP: an untrusted client's Uberctx-Sandbox.actor passed unstripped and
// unaudited, and a trusted client's was served as production with the
// header left for the next hop to refuse. Now an untrusted client's is
// stripped (one audit record) and a trusted client's is answered 400.
func TestKeyHeaderAloneOnHTTP(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		json.NewEncoder(w).Encode(struct {
			Sandbox string
			Header  http.Header
		}{s.ID, r.Header})
	})
	log, logger := newAuditLog()
	serve := func(prefix string) *httptest.Server {
		srv := httptest.NewServer(must(httpmw.NewHandler(app, httpmw.WithLogger(logger), httpmw.WithTrustedNetworks(netip.MustParsePrefix(prefix)))))
		t.Cleanup(srv.Close)
		return srv
	}
	untrusted, trusted := serve("10.0.0.0/8"), serve("127.0.0.0/8")
	codec := propagation.Default()
	for _, k := range codec.KeyHeaders() {
		for _, many := range []bool{false, true} {
			for _, spelling := range []string{k, strings.ToUpper(k)} {
				lines := []string{spelling + ": alice"}
				name := spelling
				if many {
					name += " among many" // past the one-pass size of a small header
					for i := range 10 {
						lines = append(lines, fmt.Sprintf("X-Filler-%d: %d", i, i))
					}
				}
				t.Run(name, func(t *testing.T) {
					before := len(log.Records())
					resp := sendRaw(t, untrusted, lines)
					if resp.status != 200 {
						t.Fatalf("untrusted: status %d (%s)", resp.status, resp.body)
					}
					var v struct {
						Sandbox string
						Header  http.Header
					}
					if err := json.Unmarshal([]byte(resp.body), &v); err != nil {
						t.Fatal(err)
					}
					if v.Sandbox != "" {
						t.Errorf("untrusted: served in sandbox %q", v.Sandbox)
					}
					if m, err := codec.Read(otelprop.HeaderCarrier(v.Header)); m.Found || err != nil {
						t.Errorf("untrusted: the handler kept %v, which the next hop reads (found=%v err=%v)", v.Header, m.Found, err)
					}
					var decisions []string
					for _, r := range log.Records()[before:] {
						decisions = append(decisions, r["decision"])
					}
					if !slices.Equal(decisions, []string{stripped}) {
						t.Errorf("untrusted: decisions %q, want %q", decisions, []string{stripped})
					}
					if resp := sendRaw(t, trusted, lines); resp.status != 400 {
						t.Errorf("trusted: status %d, want 400 (the marker names no sandbox)", resp.status)
					}
				})
			}
		}
	}
}
