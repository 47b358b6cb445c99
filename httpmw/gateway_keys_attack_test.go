package httpmw_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// gatewayMetadata is what grpc-gateway v2's default header matcher
// (runtime.DefaultHeaderMatcher, applied in runtime.annotateContext) makes
// of h for the gRPC call behind it: each key canonicalised, and one
// starting with "Grpc-Metadata-" passed on without that prefix, as gRPC
// metadata (lower case) of the characters gRPC allows in a key.
func gatewayMetadata(h http.Header) otelprop.MapCarrier {
	md := otelprop.MapCarrier{}
	for k, vals := range h {
		k = textproto.CanonicalMIMEHeaderKey(k)
		rest, ok := strings.CutPrefix(k, "Grpc-Metadata-")
		if !ok || len(vals) == 0 || strings.ContainsFunc(rest, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_')
		}) {
			continue
		}
		md[strings.ToLower(rest)] = strings.Join(vals, ",")
	}
	return md
}

// TestGatewayKeyHeadersOfEveryKey: behind httpmw.NewHandler, grpc-gateway
// turns Grpc-Metadata-<name> into gRPC metadata <name>, and the gRPC hop's
// codec reads a metadata key named as any of our baggage keys (the actor's,
// the origin's, the ticket's as much as the ID's, in each of the three
// header forms) as an unreadable marker: a trusted loopback gateway call
// is refused (InvalidArgument). On the HTTP side only the ID's forms were
// markers alone, so an untrusted client's Grpc-Metadata-Sandbox.actor
// passed untouched and unaudited, and the gRPC hop failed a production
// request on a marker an outsider wrote. Every header an untrusted
// client's request keeps must be nothing to the gRPC hop; a trusted one
// sending such a header alone is refused here (400) as it would be there.
//
// The same holds for the key headers themselves (Sandbox.actor,
// Uberctx-Sandbox.actor, Ot-Baggage-Sandbox.ticket): a marker alone on
// gRPC metadata and Kafka headers, and baggage sandbox.actor to a later
// hop's Jaeger or OpenTracing propagator, they were markers alone on HTTP
// only for the ID (36 of these 96 subtests failed before): now one key
// gets one answer on every carrier.
func TestGatewayKeyHeadersOfEveryKey(t *testing.T) {
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
	var headers []string
	for _, k := range codec.KeyHeaders() {
		headers = append(headers, k, strings.ToUpper(k), "Grpc-Metadata-"+k, "GRPC-METADATA-"+strings.ToUpper(k))
	}
	for _, h := range headers {
		for _, many := range []bool{false, true} {
			lines := []string{h + ": x"}
			name := h
			if many {
				name += " among many"
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
					t.Errorf("untrusted: the handler kept %v, which the next HTTP hop reads (found=%v err=%v)", v.Header, m.Found, err)
				}
				md := gatewayMetadata(v.Header)
				if m, err := codec.Read(md); m.Found || err != nil || codec.Foreign(md) {
					t.Errorf("untrusted: the handler passed %v; the gRPC hop behind a gateway reads found=%v err=%v", v.Header, m.Found, err)
				}
				var decisions []string
				for _, r := range log.Records()[before:] {
					decisions = append(decisions, r["decision"])
				}
				if !slices.Equal(decisions, []string{stripped}) {
					t.Errorf("untrusted: decisions %q, want %q", decisions, []string{stripped})
				}
				if resp := sendRaw(t, trusted, lines); resp.status != 400 {
					t.Errorf("trusted: status %d, want 400 (the gRPC hop refuses it)", resp.status)
				}
			})
		}
	}
}
