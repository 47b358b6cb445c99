package grpcmw_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
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
	runMarkerForms(t, cases)
}
