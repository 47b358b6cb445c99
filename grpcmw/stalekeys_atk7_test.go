package grpcmw_test

import (
	"context"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestStaleKeyMetadataAtk7: a sandbox call whose caller's outgoing
// metadata holds keys named as ours from elsewhere (a handler forwarding
// its incoming metadata, code written for Jaeger or OpenTracing) in a
// form the client interceptor does not write. httpmw's transport drops
// such headers before it writes the context's sandbox (dropStaleMarkers);
// the gRPC client must not send another sandbox's member beside the
// context's either: the next hop with the library must see the context's
// sandbox.
func TestStaleKeyMetadataAtk7(t *testing.T) {
	cAddr := start(t, &grpctest.Service{Name: "C"}, serverOpts(t, grpcmw.WithTrustedNetworks(loopback))...)
	toC := testpb.NewTestServiceClient(dial(t, cAddr, clientOpts(t)...))
	for _, tc := range []struct {
		name string
		kv   []string
	}{
		{"key", []string{"sandbox.id", "pr-9"}},
		{"uberctx id", []string{"uberctx-sandbox.id", "pr-9"}},
		{"uberctx actor", []string{"uberctx-sandbox.actor", "mallory"}},
		{"key origin", []string{"sandbox.origin", "pr-77"}},
		{"ot id beside baggage", []string{"ot-baggage-sandbox.id", "pr-9", "baggage", "tenant=acme"}},
		{"uberctx id beside baggage", []string{"uberctx-sandbox.id", "pr-9", "baggage", "tenant=acme"}},
		{"underscore uberctx id", []string{"uberctx_sandbox.id", "pr-9"}},
	} {
		for _, how := range []string{"appended", "new"} {
			t.Run(tc.name+"/"+how, func(t *testing.T) {
				ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: "alice"})
				if how == "appended" {
					ctx = metadata.AppendToOutgoingContext(ctx, tc.kv...)
				} else {
					ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(tc.kv...))
				}
				seen, err := call(ctx, toC, unary)
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				if seen.Server != "C" || seen.Sandbox != "pr-1" {
					t.Errorf("C saw %+v; want sandbox pr-1", seen)
				}
			})
		}
	}
}
