package grpcmw_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTTraceOnlyHopKeepsSandboxAtk6 is httpmw's
// TestOTTraceOnlyHopKeepsSandbox on gRPC: A (grpcmw's client interceptors
// under otelgrpc's client stats handler running ottrace) calls B, which
// runs only otelgrpc with ottrace and calls C (grpcmw, trusted). ottrace
// on B replaces the baggage with the ot-baggage-<key> members it finds,
// so every call of A's that carries such metadata must carry the sandbox
// in it too; C must see A's sandbox. The OT-form member comes from A's
// context baggage (otelgrpc writes it) or from metadata the application
// set on the call itself, appended or as new outgoing metadata.
func TestOTTraceOnlyHopKeepsSandboxAtk6(t *testing.T) {
	fleet := newOTFleet(t)
	toB := fleet.client(t, fleet.otelOnly(t, "B", fleet.library(t, "C")))

	for _, tc := range []struct {
		name string
		ctx  func(context.Context) context.Context
	}{
		{"context baggage", func(ctx context.Context) context.Context { return withOTelBaggage(t, ctx, "tenant=acme") }},
		{"appended metadata", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, "ot-baggage-tenant", "acme")
		}},
		{"new outgoing metadata", func(ctx context.Context) context.Context {
			return metadata.NewOutgoingContext(ctx, metadata.Pairs("ot-baggage-tenant", "acme"))
		}},
		{"appended metadata, stale member of ours", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, "ot-baggage-tenant", "acme", "ot-baggage-sandbox.id", "pr-9")
		}},
	} {
		for _, k := range kinds {
			t.Run(tc.name+"/"+string(k), func(t *testing.T) {
				ctx := tc.ctx(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: "alice"}))
				seen, err := call(ctx, toB, k)
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				next, err := grpctest.Parse(seen.Next)
				if err != nil || next.Server != "C" || next.Sandbox != "pr-1" {
					t.Errorf("C saw %+v (%v); want sandbox pr-1 (B saw %+v)", next, err, seen)
				}
			})
		}
	}
}
