package grpcmw_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
)

// TestGatewayFormsFromUntrustedPeer: metadata in grpc-gateway's form of a
// marker (grpc-metadata-sandbox-id, grpc-metadata-baggage holding
// sandbox.id, grpc-metadata-sandbox.id) means nothing on gRPC, but a
// handler that copies its incoming metadata onto an outgoing HTTP request
// sends Grpc-Metadata-Sandbox-Id, which the next HTTP hop with the
// library reads as ours (as a gateway would pass it on): an untrusted
// peer would steer that request into a sandbox. The server strips them
// from an untrusted peer, with an audit record; a trusted peer keeps them.
// (Found by the ax attack, end to end through a routing transport.)
func TestGatewayFormsFromUntrustedPeer(t *testing.T) {
	var cases []markerFormCase
	for _, kv := range [][2]string{
		{"grpc-metadata-sandbox-id", "pr-1"},
		{"grpc-metadata-baggage", "sandbox.id=pr-1"},
		{"grpc-metadata-sandbox.id", "pr-1"},
		{"grpc-metadata-uberctx-sandbox.id", "pr-1"},
	} {
		md := []string{kv[0], kv[1], "baggage", "foo=bar"}
		cases = append(cases,
			markerFormCase{name: kv[0] + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: kv[0], decision: audit.Stripped},
			markerFormCase{name: kv[0] + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md},
		)
	}
	// Beside markers of ours that are stripped anyway.
	cases = append(cases, markerFormCase{
		name:     "beside sandbox-id/untrusted peer",
		opts:     []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
		md:       []string{"sandbox-id", "pr-2", "grpc-metadata-sandbox-id", "pr-1"},
		key:      "grpc-metadata-sandbox-id",
		decision: audit.Stripped,
	})
	runMarkerForms(t, cases)
}

// TestDeepGatewayFormsFromUntrustedPeer: each grpc-gateway removes one
// grpc-metadata- prefix, so metadata under two or more of them
// (grpc-metadata-grpc-metadata-sandbox-id), and under one before a key
// header that is a marker only beside others on gRPC
// (grpc-metadata-sandbox.actor), or spelled with '_' as CGI-style hops
// read it, reaches a marker through handlers that copy their metadata
// onto HTTP requests and gateways that trust the hops before them (an
// HTTP hop keeps such a header from a trusted source, for the gateway
// behind it). The server only looked for the single-prefix forms of the
// keys that name a sandbox: it kept all of these from an untrusted peer.
// Each is stripped with an audit record; a trusted peer keeps them.
func TestDeepGatewayFormsFromUntrustedPeer(t *testing.T) {
	var cases []markerFormCase
	for _, kv := range [][2]string{
		{"grpc-metadata-grpc-metadata-sandbox-id", "pr-1"},
		{"grpc-metadata-grpc-metadata-grpc-metadata-sandbox-id", "pr-1"},
		{"grpc-metadata-grpc-metadata-baggage", "sandbox.id=pr-1"},
		{"grpc-metadata-grpc-metadata-sandbox.id", "pr-1"},
		{"grpc-metadata-grpc-metadata-uberctx-sd-routing-key", "x"},
		{"grpc-metadata-sandbox.actor", "mallory"},
		{"grpc-metadata-ot-baggage-sandbox.ticket", "x"},
		{"grpc-metadata-baggage", "sd-routing-key=x"},
		{"grpc_metadata_sandbox_id", "pr-1"},
		{"grpc_metadata_grpc-metadata-sandbox-id", "pr-1"},
	} {
		md := []string{kv[0], kv[1], "baggage", "foo=bar"}
		cases = append(cases,
			markerFormCase{name: kv[0] + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: kv[0], decision: audit.Stripped},
			markerFormCase{name: kv[0] + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md},
		)
	}
	// Not ours under the prefixes: kept, no record.
	for _, kv := range [][2]string{
		{"grpc-metadata-grpc-metadata-x-user", "u1"},
		{"grpc-metadata-grpc-metadata-baggage", "foo=bar"},
	} {
		cases = append(cases, markerFormCase{name: kv[0] + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: []string{kv[0], kv[1]}})
	}
	runMarkerForms(t, cases)
}
