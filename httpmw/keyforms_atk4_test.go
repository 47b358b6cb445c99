package httpmw_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestKeyHeaderFormsThroughProxy (atk4, held): 15f3db1 made a header named
// as any key (actor, origin, ticket too) a marker alone on HTTP. Through
// NewProxy, each key's header in every form (bare, Uberctx-,
// Ot-Baggage-, under one and two grpc-gateway prefixes, with some or all
// hyphens as '_', in upper case) from an untrusted client reaches the
// upstream as nothing any hop reads (the upstream's raw headers, read by
// the codec, by grpc-gateway's matcher and as a CGI hop reads '_'), and
// from a trusted one is answered 400 unless it is a deep spelling, which
// a trusted source keeps (see the package doc). A '_' spelling under at
// most one prefix, which a trusted source kept, is 400 too (atkproxy):
// the proxied service, CGI-style perhaps, reads it as the marker.
func TestKeyHeaderFormsThroughProxy(t *testing.T) {
	var seen http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
	}))
	defer upstream.Close()
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: upstream.URL}}})
	untrusted := newProxyServer(t, tab, upstream.URL, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))
	trusted := newProxyServer(t, tab, upstream.URL, httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))
	codec := propagation.Default()
	var names []string
	for _, k := range codec.KeyHeaders() {
		for _, p := range []string{"", "Grpc-Metadata-", "grpc_metadata-", "Grpc-Metadata-Grpc-Metadata-"} {
			n := p + k
			names = append(names, n, strings.ToUpper(n), strings.ReplaceAll(n, "-", "_"), strings.Replace(n, "-", "_", 1))
		}
	}
	for _, n := range names {
		seen = nil
		resp := sendRaw(t, untrusted, []string{n + ": pr-1"})
		if resp.status != http.StatusOK {
			t.Fatalf("untrusted %s: status %d (%s)", n, resp.status, resp.body)
		}
		hc := otelprop.HeaderCarrier(seen)
		if m, err := codec.Read(hc); m.Found || err != nil || codec.Foreign(hc) {
			t.Errorf("untrusted %s: the upstream got %v (found=%v, foreign=%v, err=%v)", n, seen, m.Found, codec.Foreign(hc), err)
		}
		cgi := http.Header{}
		for k, v := range seen {
			cgi[http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))] = v
		}
		if m, err := codec.Read(otelprop.HeaderCarrier(cgi)); m.Found || err != nil {
			t.Errorf("untrusted %s: a CGI hop behind reads %v as a marker (%v)", n, cgi, err)
		}
		md := gatewayMetadata(cgi)
		if m, err := codec.Read(md); m.Found || err != nil {
			t.Errorf("untrusted %s: the gRPC hop behind a gateway reads %v (%v)", n, md, err)
		}
		// Read here, or by the proxied service as a CGI hop reads '_':
		// every form under at most one prefix.
		read := !strings.HasPrefix(strings.ReplaceAll(strings.ToLower(n), "_", "-"), "grpc-metadata-grpc-metadata-")
		resp = sendRaw(t, trusted, []string{n + ": pr-1"})
		if read && resp.status != http.StatusBadRequest {
			t.Errorf("trusted %s: status %d, want 400", n, resp.status)
		}
		if !read && resp.status == http.StatusBadRequest {
			t.Errorf("trusted %s: status 400 (%s)", n, resp.body)
		}
	}
}
