package grpcmw_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestMixedUnderscoreMetadata: a marker key with some of its hyphens
// written as underscores (uberctx_sd-routing-key, ot-baggage_sandbox.id),
// alone or under grpc-gateway's prefix, is the key itself to a CGI, WSGI,
// Rack or PHP hop a handler forwards its metadata to, as the spelling with
// all of them so (uberctx_sd_routing_key) is, which the server strips. An
// HTTP hop with the library strips Grpc-Metadata-Uberctx_sd-Routing-Key
// from an untrusted client (its deep-form test reads '_' as '-'
// anywhere), but the server kept grpc-metadata-uberctx_sd-routing-key
// from an untrusted peer, and both kept the spellings alone. Each is
// stripped from an untrusted peer with an audit record; a trusted peer
// keeps them.
func TestMixedUnderscoreMetadata(t *testing.T) {
	var cases []markerFormCase
	for _, key := range []string{
		"uberctx_sd-routing-key", "ot-baggage_sd_routing-key", "ot-baggage_sandbox.id", "uberctx_sandbox.actor", "ot_baggage-sandbox.ticket",
		"grpc-metadata-uberctx_sd-routing-key", "grpc-metadata-ot-baggage_sandbox.id", "grpc_metadata-grpc-metadata-uberctx-sd_routing_key",
	} {
		md := []string{key, "feat-1", "baggage", "foo=bar"}
		cases = append(cases,
			markerFormCase{name: key + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: key, decision: audit.Stripped},
			markerFormCase{name: key + "/zero policy", md: md, key: key, decision: audit.Stripped},
			markerFormCase{name: key + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md},
		)
	}
	// A configured name with a '_' is read as it is; spelled with '-'
	// for it, it is another spelling, stripped alike.
	codec, err := propagation.NewCodec(propagation.WithHeader("x_sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"x-sandbox", "grpc-metadata-x-sandbox", "x_sandbox"} {
		md := []string{key, "feat-1", "baggage", "foo=bar"}
		var admitted audit.Decision // the header itself admits a trusted peer's call
		if key == "x_sandbox" {
			admitted = audit.Admitted
		}
		cases = append(cases,
			markerFormCase{name: key + "/x_sandbox codec/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithCodec(codec), grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: key, decision: audit.Stripped},
			markerFormCase{name: key + "/x_sandbox codec/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithCodec(codec), grpcmw.WithTrustedNetworks(loopback)}, md: md, decision: admitted},
		)
	}
	runMarkerForms(t, cases)
}
