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

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestGatewayForms: grpc-gateway's default header matcher passes an HTTP
// header named Grpc-Metadata-<name> on to the gRPC server behind it as
// metadata <name> (Grpc-Metadata-Sandbox-Id becomes sandbox-id,
// Grpc-Metadata-Baggage becomes baggage), on a loopback call that server
// trusts. Those headers used to pass httpmw untouched from an untrusted
// client: in front of a gateway, Grpc-Metadata-Sandbox-Id: pr-1 ran the
// gRPC handler in pr-1. They are markers on the HTTP side: stripped (and
// audited) from an untrusted client, in every spelling the codec reads
// for the plain name; from a trusted one, Grpc-Metadata-Sandbox-Id and
// Grpc-Metadata-Baggage are read as more values of the header and
// baggage (they must agree with the others, else 400), and a key header
// under the prefix is unreadable (400) as it is without.
func TestGatewayForms(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		json.NewEncoder(w).Encode(struct {
			Sandbox string
			Header  http.Header
		}{s.ID, r.Header})
	})
	log, logger := newAuditLog()
	serve := func(opts ...httpmw.HandlerOption) *httptest.Server {
		srv := httptest.NewServer(must(httpmw.NewHandler(app, append(opts, httpmw.WithLogger(logger))...)))
		t.Cleanup(srv.Close)
		return srv
	}
	untrusted := serve(httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))
	trusted := serve(httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))

	for _, tc := range []struct {
		name    string
		trusted bool
		headers []string
		status  int
		sandbox string   // the handler's context
		gone    []string // headers the handler must not see
		kept    []string // "Name: value" the handler must see
		records []string // decisions
	}{
		{"id", false, []string{"Grpc-Metadata-Sandbox-Id: pr-1"}, 200, "", []string{"Grpc-Metadata-Sandbox-Id"}, nil, []string{stripped}},
		{"id lower-case", false, []string{"grpc-metadata-sandbox-id: pr-1"}, 200, "", []string{"Grpc-Metadata-Sandbox-Id"}, nil, []string{stripped}},
		{"id underscore", false, []string{"Grpc-Metadata-Sandbox_Id: pr-1"}, 200, "", []string{"Grpc-Metadata-Sandbox_id"}, nil, []string{stripped}},
		{"key header", false, []string{"Grpc-Metadata-Sandbox.id: pr-1"}, 200, "", []string{"Grpc-Metadata-Sandbox.id"}, nil, []string{stripped}},
		{"jaeger key header", false, []string{"Grpc-Metadata-Uberctx-Sandbox.id: pr-1"}, 200, "", []string{"Grpc-Metadata-Uberctx-Sandbox.id"}, nil, []string{stripped}},
		{"baggage", false, []string{"Grpc-Metadata-Baggage: foo=bar,sandbox.id=pr-1"}, 200, "", nil, []string{"Grpc-Metadata-Baggage: foo=bar"}, []string{stripped}},
		{"baggage only ours", false, []string{"Grpc-Metadata-Baggage: sandbox.id=pr-1"}, 200, "", []string{"Grpc-Metadata-Baggage"}, nil, []string{stripped}},
		{"foreign header", false, []string{"Grpc-Metadata-Uberctx-Sd-Routing-Key: x"}, 200, "", []string{"Grpc-Metadata-Uberctx-Sd-Routing-Key"}, nil, []string{stripped}},
		{"foreign baggage", false, []string{"Grpc-Metadata-Baggage: foo=bar,sd-routing-key=x"}, 200, "", nil, []string{"Grpc-Metadata-Baggage: foo=bar"}, []string{stripped}},
		{"other baggage", false, []string{"Grpc-Metadata-Baggage: foo=bar"}, 200, "", nil, []string{"Grpc-Metadata-Baggage: foo=bar"}, nil},
		{"beside plain markers", false, []string{"Sandbox-Id: pr-1", "Grpc-Metadata-Sandbox-Id: pr-1"}, 200, "", []string{"Sandbox-Id", "Grpc-Metadata-Sandbox-Id"}, nil, []string{stripped}},

		{"trusted id", true, []string{"Grpc-Metadata-Sandbox-Id: pr-1"}, 200, "pr-1", nil, []string{"Grpc-Metadata-Sandbox-Id: pr-1"}, []string{admitted}},
		{"trusted id agrees", true, []string{"Sandbox-Id: pr-1", "Grpc-Metadata-Sandbox-Id: pr-1"}, 200, "pr-1", nil, []string{"Grpc-Metadata-Sandbox-Id: pr-1"}, []string{admitted}},
		{"trusted id disagrees", true, []string{"Sandbox-Id: pr-1", "Grpc-Metadata-Sandbox-Id: pr-2"}, 400, "", nil, nil, []string{rejected}},
		{"trusted id disagrees with baggage", true, []string{"Baggage: sandbox.id=pr-1", "Grpc-Metadata-Sandbox-Id: pr-2"}, 400, "", nil, nil, []string{rejected}},
		{"trusted baggage", true, []string{"Grpc-Metadata-Baggage: sandbox.id=pr-1"}, 200, "pr-1", nil, []string{"Grpc-Metadata-Baggage: sandbox.id=pr-1"}, []string{admitted}},
		{"trusted baggage disagrees", true, []string{"Baggage: sandbox.id=pr-1", "Grpc-Metadata-Baggage: sandbox.id=pr-2"}, 400, "", nil, nil, []string{rejected}},
		{"trusted baggage disagrees with header", true, []string{"Sandbox-Id: pr-1", "Grpc-Metadata-Baggage: sandbox.id=pr-2"}, 400, "", nil, nil, []string{rejected}},
		{"trusted malformed baggage", true, []string{"Grpc-Metadata-Baggage: sandbox.id=PR_1"}, 400, "", nil, nil, []string{rejected}},
		{"trusted key header", true, []string{"Sandbox-Id: pr-1", "Grpc-Metadata-Sandbox.id: pr-2"}, 400, "", nil, nil, []string{rejected}},
		{"trusted key header alone", true, []string{"Grpc-Metadata-Sandbox.id: pr-2"}, 400, "", nil, nil, []string{rejected}},
	} {
		for _, many := range []bool{false, true} {
			name := tc.name
			headers := tc.headers
			if many {
				// Past the size the codec reads in one pass.
				name += " among many"
				for i := range 10 {
					headers = append(slices.Clip(headers), fmt.Sprintf("X-Filler-%d: %d", i, i))
				}
			}
			t.Run(name, func(t *testing.T) {
				srv := untrusted
				if tc.trusted {
					srv = trusted
				}
				before := len(log.Records())
				resp := sendRaw(t, srv, headers)
				if resp.status != tc.status {
					t.Fatalf("status %d (%s), want %d", resp.status, resp.body, tc.status)
				}
				var decisions []string
				for _, r := range log.Records()[before:] {
					decisions = append(decisions, r["decision"])
				}
				if !slices.Equal(decisions, tc.records) {
					t.Errorf("decisions %q, want %q", decisions, tc.records)
				}
				if tc.status != 200 {
					return
				}
				var v struct {
					Sandbox string
					Header  http.Header
				}
				if err := json.Unmarshal([]byte(resp.body), &v); err != nil {
					t.Fatal(err)
				}
				if v.Sandbox != tc.sandbox {
					t.Errorf("handler ran in sandbox %q, want %q", v.Sandbox, tc.sandbox)
				}
				for _, h := range tc.gone {
					if got, ok := v.Header[h]; ok {
						t.Errorf("handler saw %s: %q", h, got)
					}
				}
				for _, kv := range tc.kept {
					k, val, _ := strings.Cut(kv, ": ")
					if got := strings.Join(v.Header[k], ","); got != val {
						t.Errorf("handler saw %s: %q, want %q", k, got, val)
					}
				}
			})
		}
	}
}
