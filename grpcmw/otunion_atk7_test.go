package grpcmw_test

import (
	"context"
	"fmt"
	"strings"
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

// TestOTFormUnionAtLimitsAtk7: A's call carries OpenTracing metadata the
// application set (ot-baggage-<key>) and its context carries OpenTelemetry
// baggage with other members. grpcmw's client interceptor writes the
// sandbox in that form and keeps the metadata's members within ottrace's
// limits; then otelgrpc's stats handler, which gRPC runs after the
// interceptors, adds every member of the context's baggage in that form.
// B (otelgrpc with ottrace only) reads the union, and baggage.New drops
// the members over 64 in map order, ours among them or not: C must still
// see A's sandbox.
func TestOTFormUnionAtLimitsAtk7(t *testing.T) {
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

	many := func(prefix string, n int) []string {
		var kv []string
		for i := range n {
			kv = append(kv, fmt.Sprintf("%s%02d", prefix, i), "v")
		}
		return kv
	}
	bag := func(n int) string {
		kv := many("k", n)
		var m []string
		for i := 0; i < len(kv); i += 2 {
			m = append(m, kv[i]+"="+kv[i+1])
		}
		return strings.Join(m, ",")
	}
	for _, tc := range []struct {
		name    string
		bag, ot int
	}{
		{"40 context members, 30 OT keys", 40, 30},
		{"63 context members, 63 OT keys", 63, 63},
	} {
		for _, k := range kinds {
			t.Run(tc.name+"/"+string(k), func(t *testing.T) {
				for i := range 10 { // ottrace drops members over the limits in map order
					ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: "alice"})
					ctx = withOTelBaggage(t, ctx, bag(tc.bag))
					ctx = metadata.AppendToOutgoingContext(ctx, many("ot-baggage-app", tc.ot)...)
					seen, err := call(ctx, toB, k)
					if err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
					next, err := grpctest.Parse(seen.Next)
					if err != nil || next.Server != "C" || next.Sandbox != "pr-1" {
						t.Fatalf("call %d: C saw %+v (%v); want sandbox pr-1", i, next, err)
					}
				}
			})
		}
	}
}
