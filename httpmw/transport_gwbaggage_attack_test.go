package httpmw_test

import (
	"net/http"
	"testing"
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
	routedAsHeadersSay(t, []http.Header{
		{"Grpc-Metadata-Baggage": {"sandbox.id=pr-1"}},
		{"grpc-metadata-baggage": {"sandbox.id=pr-1"}},
		{"GRPC-METADATA-BAGGAGE": {"tenant=acme,sandbox.id=pr-1"}},
		{"Accept": {"*/*"}, "grpc-metadata-baggage": {"sandbox.id=pr-1"}, "Grpc-Metadata-Baggage": {"tenant=acme"}},
	}, http.Header{"Sandbox-Id": {"pr-1"}, "grpc-metadata-baggage": {"sandbox.id=pr-2"}})
}
