package httpmw_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestTransportNonCanonicalGatewayBaggage: grpc-gateway's baggage header
// (Grpc-Metadata-Baggage) is a marker on HTTP, which the transport reads
// on a request without a context sandbox. Set under a non-canonical key
// (req.Header["grpc-metadata-baggage"], as code copying incoming gRPC
// metadata onto an outgoing request does), the transport missed it: its
// marker names held the dedicated header, the key headers and their
// gateway forms, and plain baggage, but not the gateway's baggage. The
// request went to the production upstream of a service pr-1 overrides,
// unbudgeted, while the next hop's server canonicalised the key and
// served it as pr-1 (found by copying an untrusted gRPC peer's metadata
// into a request through a grpcmw server; the canonical key is the
// control).
func TestTransportNonCanonicalGatewayBaggage(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart")))
	for _, h := range []http.Header{
		{"Grpc-Metadata-Baggage": {"sandbox.id=pr-1"}},
		{"grpc-metadata-baggage": {"sandbox.id=pr-1"}},
		{"GRPC-METADATA-BAGGAGE": {"tenant=acme,sandbox.id=pr-1"}},
		{"Accept": {"*/*"}, "grpc-metadata-baggage": {"sandbox.id=pr-1"}, "Grpc-Metadata-Baggage": {"tenant=acme"}},
	} {
		req := mustRequest(t, context.Background(), http.MethodGet, baseline.URL+"/items", nil)
		req.Header = h.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("header %v: %v", h, err)
		}
		if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" {
			t.Errorf("header %v: served by %s as %q; want pr-1's own cart", h, got.Server, got.Sandbox)
		}
	}
	// Two sandboxes under two spellings are not sent.
	hb, hs := baseline.hits.Load(), sandbox.hits.Load()
	req := mustRequest(t, context.Background(), http.MethodGet, baseline.URL+"/items", nil)
	req.Header = http.Header{"Sandbox-Id": {"pr-1"}, "grpc-metadata-baggage": {"sandbox.id=pr-2"}}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("two sandboxes under two spellings: status %d; want an error, nothing sent", resp.StatusCode)
	}
	if baseline.hits.Load() != hb || sandbox.hits.Load() != hs {
		t.Error("a request with unreadable markers was sent")
	}
}
