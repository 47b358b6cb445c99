package grpcmw_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkClientMetadataAtk6: the client interceptor on a sandbox call
// whose caller appended metadata of its own, without (x-user) and with
// (ot-baggage-tenant) a key in OpenTracing's baggage form.
func BenchmarkClientMetadataAtk6(b *testing.B) {
	client := clientIn(b).Unary()
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	sandbox := propagation.ContextWithSandbox(context.Background(), benchSandbox)
	for _, tc := range []struct{ name, key string }{{"x-user", "x-user"}, {"ot-baggage", "ot-baggage-tenant"}} {
		ctx := metadata.AppendToOutgoingContext(sandbox, tc.key, "acme")
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = client(ctx, "/m", nil, nil, nil, invoker)
			}
		})
	}
}
