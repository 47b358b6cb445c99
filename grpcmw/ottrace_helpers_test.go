package grpcmw_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
)

// otFleet builds services that run OpenTelemetry with ottrace beside
// W3C's propagators (ottest.Propagators): every hop has otelgrpc's stats
// handlers.
type otFleet struct {
	props, tpo otelgrpc.Option
}

func newOTFleet(t *testing.T) otFleet {
	ottest.Quiet(t)
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return otFleet{otelgrpc.WithPropagators(ottest.Propagators), otelgrpc.WithTracerProvider(tp)}
}

// library starts a service with grpcmw's server interceptors, trusting
// loopback, and returns its address.
func (f otFleet) library(t *testing.T, name string) string {
	return start(t, &grpctest.Service{Name: name}, append(serverOpts(t, grpcmw.WithTrustedNetworks(loopback)),
		grpc.StatsHandler(otelgrpc.NewServerHandler(f.props, f.tpo)))...)
}

// otelOnly starts a service that runs only OpenTelemetry and forwards each
// call to the service at to, and returns its address.
func (f otFleet) otelOnly(t *testing.T, name, to string) string {
	next := testpb.NewTestServiceClient(dial(t, to, grpc.WithStatsHandler(otelgrpc.NewClientHandler(f.props, f.tpo))))
	return start(t, &grpctest.Service{Name: name, Forward: func(ctx context.Context) (string, error) {
		seen, err := call(ctx, next, unary)
		return seen.String(), err
	}}, grpc.StatsHandler(otelgrpc.NewServerHandler(f.props, f.tpo)))
}

// client dials addr as a service of the library does: grpcmw's client
// interceptors under otelgrpc's client stats handler.
func (f otFleet) client(t *testing.T, addr string) testpb.TestServiceClient {
	return testpb.NewTestServiceClient(dial(t, addr, append(clientOpts(t),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(f.props, f.tpo)))...))
}
