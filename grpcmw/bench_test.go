package grpcmw_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// benchService answers UnaryCall with an empty response and looks at
// nothing, so the benchmarks measure gRPC and the middleware.
type benchService struct {
	testpb.UnimplementedTestServiceServer
}

var emptyResponse = &testpb.SimpleResponse{}

func (benchService) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return emptyResponse, nil
}

func startBench(b *testing.B, opts ...grpc.ServerOption) string {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(srv, benchService{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	b.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

func benchCalls(b *testing.B, ctx context.Context, c testpb.TestServiceClient) {
	b.Helper()
	req := &testpb.SimpleRequest{}
	if _, err := c.UnaryCall(ctx, req); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.UnaryCall(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

var benchSandbox = propagation.Sandbox{ID: "feat-1234", Actor: "alice@example.com"}

func noopServer(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	return h(ctx, req)
}

func noopClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return inv(ctx, method, req, reply, cc, opts...)
}

// BenchmarkUnary: one unary call over loopback TCP, without interceptors
// (bare), with pass-through interceptors (noop), with the client and server interceptors and no sandbox
// (baseline), and with a sandbox admitted by the server (sandbox).
func BenchmarkUnary(b *testing.B) {
	bare := testpb.NewTestServiceClient(dial(b, startBench(b)))
	ours := testpb.NewTestServiceClient(dial(b, startBench(b, serverOpts(b, grpcmw.WithTrustedNetworks(loopback))...), clientOpts(b)...))
	sandbox := propagation.ContextWithSandbox(context.Background(), benchSandbox)

	// gRPC's own price for having interceptors at all (the generated
	// handler allocates its info and closure), as a control.
	noop := testpb.NewTestServiceClient(dial(b, startBench(b, grpc.ChainUnaryInterceptor(noopServer)), grpc.WithChainUnaryInterceptor(noopClient)))

	b.Run("bare", func(b *testing.B) { benchCalls(b, context.Background(), bare) })
	b.Run("noop", func(b *testing.B) { benchCalls(b, context.Background(), noop) })
	b.Run("baseline", func(b *testing.B) { benchCalls(b, context.Background(), ours) })
	b.Run("sandbox", func(b *testing.B) { benchCalls(b, sandbox, ours) })
}

// BenchmarkRouter: one unary call over loopback TCP on a plain connection
// (direct) and through a Router (router); without a sandbox, and with a
// sandbox that overrides the service (direct-sandbox: a connection to the
// sandbox's server with the client interceptor; router-sandbox: the router
// picks that server).
func BenchmarkRouter(b *testing.B) {
	baselineAddr, sandboxAddr := startBench(b), startBench(b)
	table, err := routes.NewStatic([]routes.Sandbox{{ID: benchSandbox.ID, Services: map[string]routes.Route{"cart": {Upstream: sandboxAddr}}}})
	if err != nil {
		b.Fatal(err)
	}
	baseline := dial(b, baselineAddr)
	router, err := grpcmw.NewRouter(baseline, table, "cart", plaintext)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { router.Close() })
	direct := testpb.NewTestServiceClient(baseline)
	routed := testpb.NewTestServiceClient(router)
	toSandbox := testpb.NewTestServiceClient(dial(b, sandboxAddr, clientOpts(b)...))
	sandbox := propagation.ContextWithSandbox(context.Background(), benchSandbox)

	b.Run("direct", func(b *testing.B) { benchCalls(b, context.Background(), direct) })
	b.Run("router", func(b *testing.B) { benchCalls(b, context.Background(), routed) })
	b.Run("direct-sandbox", func(b *testing.B) { benchCalls(b, sandbox, toSandbox) })
	b.Run("router-sandbox", func(b *testing.B) { benchCalls(b, sandbox, routed) })
}

// BenchmarkInterceptors isolates the interceptors' own cost (no network:
// no-op invoker and handler), where a loopback call's noise would hide it.
func BenchmarkInterceptors(b *testing.B) {
	client := clientIn(b).Unary()
	server := serverIn(b, grpcmw.WithTrustedNetworks(loopback)).Unary()
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	handler := func(context.Context, any) (any, error) { return nil, nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/grpc.testing.TestService/UnaryCall"}

	p := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}})
	sandbox := propagation.ContextWithSandbox(context.Background(), benchSandbox)
	md := metadata.MD{}
	propagation.Default().InjectSandbox(benchSandbox, mdPairs(md))
	md.Set(":authority", "cart")
	md.Set("content-type", "application/grpc")
	plainIn := metadata.NewIncomingContext(p, metadata.Pairs(":authority", "cart", "content-type", "application/grpc"))
	sandboxIn := metadata.NewIncomingContext(p, md)

	run := func(name string, f func()) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f()
			}
		})
	}
	run("client/baseline", func() { _ = client(context.Background(), "/m", nil, nil, nil, invoker) })
	run("client/sandbox", func() { _ = client(sandbox, "/m", nil, nil, nil, invoker) })
	run("server/baseline", func() { _, _ = server(plainIn, nil, info, handler) })
	run("server/sandbox", func() { _, _ = server(sandboxIn, nil, info, handler) })
	// A call without markers from a peer outside the trusted networks:
	// the edge's common case, where other tools' routing keys and the
	// underscore spellings of markers are looked for.
	untrusted := serverIn(b, grpcmw.WithTrustedNetworks(elsewhere)).Unary()
	run("server/baseline-untrusted", func() { _, _ = untrusted(plainIn, nil, info, handler) })

	// The same with WithBreaker: a budget that admits everything, so the
	// figures are the cost of asking it (warm key).
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1 << 20}})
	bclient := clientIn(b, grpcmw.WithBreaker(g)).Unary()
	bserver := serverIn(b, grpcmw.WithTrustedNetworks(loopback), grpcmw.WithBreaker(g)).Unary()
	run("client/baseline+breaker", func() { _ = bclient(context.Background(), "/m", nil, nil, nil, invoker) })
	run("client/sandbox+breaker", func() { _ = bclient(sandbox, "/m", nil, nil, nil, invoker) })
	run("server/baseline+breaker", func() { _, _ = bserver(plainIn, nil, info, handler) })
	run("server/sandbox+breaker", func() { _, _ = bserver(sandboxIn, nil, info, handler) })
}

// mdPairs is a minimal TextMapCarrier over metadata for the benchmark's
// setup.
type mdPairs metadata.MD

func (m mdPairs) Get(k string) string {
	if v := metadata.MD(m).Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (m mdPairs) Set(k, v string) { metadata.MD(m).Set(k, v) }
func (m mdPairs) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// BenchmarkInterceptorsManyKeys: an untrusted peer's call without markers
// but with many metadata keys (n of them, under grpc-gateway's prefix or
// not, none a marker), which the server interceptor reads in full: its
// cost must grow with the keys, not with their square.
func BenchmarkInterceptorsManyKeys(b *testing.B) {
	untrusted := serverIn(b, grpcmw.WithTrustedNetworks(elsewhere)).Unary()
	handler := func(context.Context, any) (any, error) { return nil, nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/grpc.testing.TestService/UnaryCall"}
	p := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}})
	for _, prefix := range []string{"grpc-metadata-x-", "x-"} {
		for _, n := range []int{10, 100, 1000} {
			md := metadata.Pairs(":authority", "cart", "content-type", "application/grpc")
			for i := range n {
				md.Set(fmt.Sprintf("%s%d", prefix, i), "v")
			}
			ctx := metadata.NewIncomingContext(p, md)
			b.Run(fmt.Sprint(prefix, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, _ = untrusted(ctx, nil, info, handler)
				}
			})
		}
	}
}
