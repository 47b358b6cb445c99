package grpcmw_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkKeyMetadataAgreeingAtk5: a trusted peer's sandbox call from
// an ottrace fleet (otelgrpc writes every baggage member as
// ot-baggage-<key> too) beside sandbox-id and baggage: each such key is
// read, in every spelling, and must agree.
func BenchmarkKeyMetadataAgreeingAtk5(b *testing.B) {
	server := serverIn(b, grpcmw.WithTrustedNetworks(loopback)).Unary()
	handler := func(context.Context, any) (any, error) { return nil, nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/grpc.testing.TestService/UnaryCall"}
	p := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}})
	md := metadata.MD{}
	propagation.Default().InjectSandbox(benchSandbox, mdPairs(md))
	md.Set(":authority", "cart")
	md.Set("content-type", "application/grpc")
	md.Set("ot-baggage-sandbox.id", benchSandbox.ID)
	if benchSandbox.Actor != "" {
		md.Set("ot-baggage-sandbox.actor", benchSandbox.Actor)
	}
	ctx := metadata.NewIncomingContext(p, md)
	if _, err := server(ctx, nil, info, handler); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = server(ctx, nil, info, handler)
	}
}
