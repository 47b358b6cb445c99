package grpcmw_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
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
	ottest.Quiet(t)
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	props := otelgrpc.WithPropagators(ottest.Propagators)
	tpo := otelgrpc.WithTracerProvider(tp)

	cAddr := start(t, &grpctest.Service{Name: "C"}, append(serverOpts(t, grpcmw.WithTrustedNetworks(loopback)),
		grpc.StatsHandler(otelgrpc.NewServerHandler(props, tpo)))...)
	toC := testpb.NewTestServiceClient(dial(t, cAddr, grpc.WithStatsHandler(otelgrpc.NewClientHandler(props, tpo))))
	bAddr := start(t, &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
		seen, err := call(ctx, toC, unary)
		return seen.String(), err
	}}, grpc.StatsHandler(otelgrpc.NewServerHandler(props, tpo)))
	toB := testpb.NewTestServiceClient(dial(t, bAddr, append(clientOpts(t),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(props, tpo)))...))

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
