package grpcmw_test

import (
	"context"
	"slices"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
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
	// Beside a marker of ours, stripped with it (one record).
	cases = append(cases, markerFormCase{
		name:     "beside sandbox-id/untrusted peer",
		opts:     []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
		md:       []string{"sandbox-id", "pr-2", "grpc-metadata-grpc-metadata-sandbox-id", "pr-1"},
		key:      "grpc-metadata-grpc-metadata-sandbox-id",
		decision: audit.Stripped,
	}, markerFormCase{
		name:     "underscore beside sandbox-id/untrusted peer",
		opts:     []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
		md:       []string{"sandbox-id", "pr-2", "grpc_metadata_grpc_metadata_sandbox_id", "pr-1"},
		key:      "grpc_metadata_grpc_metadata_sandbox_id",
		decision: audit.Stripped,
	})
	// Not ours under the prefixes: kept, no record.
	for _, kv := range [][2]string{
		{"grpc-metadata-grpc-metadata-x-user", "u1"},
		{"grpc-metadata-grpc-metadata-baggage", "foo=bar"},
	} {
		cases = append(cases, markerFormCase{name: kv[0] + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: []string{kv[0], kv[1]}})
	}
	runMarkerForms(t, cases)
}

// TestTicketDoesNotCarryGatewayForms: a ticket vouches for the sandbox
// read on this call, not for grpc-gateway forms in its metadata, which
// nothing reads here and which name another sandbox to an HTTP hop behind
// a copying handler (one prefix), or further on (more). An untrusted peer
// admitted on its ticket loses them, with a stripped record besides the
// admission; the sandbox stays.
func TestTicketDoesNotCarryGatewayForms(t *testing.T) {
	ticket, verifier, issued := ticketFor(t, propagation.Sandbox{ID: "feat-1"})
	for _, key := range []string{"grpc-metadata-sandbox-id", "grpc-metadata-grpc-metadata-sandbox-id", "grpc_metadata_sandbox.actor"} {
		t.Run(key, func(t *testing.T) {
			var held []string
			svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
				md, _ := metadata.FromIncomingContext(ctx)
				held = md.Get(key)
				return "", nil
			}}
			log, logger := newAuditLog()
			addr := start(t, svc, serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier),
				grpcmw.WithClock(func() time.Time { return issued }), grpcmw.WithLogger(logger))...)
			client := testpb.NewTestServiceClient(dial(t, addr))
			ctx := metadata.AppendToOutgoingContext(context.Background(), "baggage", "sandbox.id=feat-1,sandbox.ticket="+ticket, key, "pr-9")
			seen, err := call(ctx, client, unary)
			if err != nil {
				t.Fatal(err)
			}
			if seen.Sandbox != "feat-1" {
				t.Errorf("handler ran in sandbox %q, want feat-1", seen.Sandbox)
			}
			if len(held) != 0 {
				t.Errorf("handler holds %s %q from an untrusted peer", key, held)
			}
			if got, want := log.Decisions(), []string{string(audit.Stripped), string(audit.Admitted)}; !slices.Equal(got, want) {
				t.Errorf("decisions %q, want %q", got, want)
			}
		})
	}
}
