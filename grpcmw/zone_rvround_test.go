package grpcmw_test

// Review of the router's reading of upstreams (rvround).

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRouterReachesAnIPv6UpstreamWithAZone: the route table takes an
// IPv6 literal with a zone in both forms, "[::1%lo]:port" and
// "http://[::1%25lo]:port" (RFC 6874's escape), and httpmw dials both.
// The router handed the host:port form to gRPC as it was, which reads a
// target as a URL: "invalid URL escape %lo", no connection, and the
// sandbox's calls never reached its version.
func TestRouterReachesAnIPv6UpstreamWithAZone(t *testing.T) {
	lis, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback here: %v", err)
	}
	srv := grpc.NewServer(serverOpts(t, grpcmw.TrustAll())...)
	testpb.RegisterTestServiceServer(srv, &grpctest.Service{Name: "sandbox"})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	for _, up := range []string{"[::1%lo]:" + port, "http://[::1%25lo]:" + port} {
		t.Run(up, func(t *testing.T) {
			if err := routes.ValidateUpstream(up); err != nil {
				t.Fatalf("the table refuses %q: %v", up, err)
			}
			f := newFleet(t, func(string) []routes.Sandbox {
				return []routes.Sandbox{{ID: "feat-a", Services: map[string]routes.Route{"cart": {Upstream: up}}}}
			})
			seen, err := call(inSandbox("feat-a"), f.client, unary)
			if err != nil {
				t.Fatalf("upstream %q: %v", up, err)
			}
			if seen.Server != "sandbox" {
				t.Errorf("upstream %q: served by %s, want the sandbox", up, seen.Server)
			}
		})
	}
}
