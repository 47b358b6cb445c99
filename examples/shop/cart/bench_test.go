package cart_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// BenchmarkHop measures one real gRPC call to cart on loopback, side by
// side: "plain" has no sandboxkit on either end; "production" goes through
// a grpcmw.Router and grpcmw's server interceptors without a sandbox;
// "sandbox" carries pr-42, which the Router sends to pr-42's cart and
// whose markers the server interceptor reads and admits.
func BenchmarkHop(b *testing.B) {
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	bare := grpc.NewServer() // no sandboxkit
	cart.Register(bare, "cart", cart.ListPrice)
	b.Cleanup(bare.Stop)
	baseline, err := cart.NewServer("cart", cart.ListPrice, grpcmw.TrustAll())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(baseline.Stop)
	changed, err := cart.NewServer("cart@pr-42", cart.BulkDiscount, grpcmw.TrustAll())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(changed.Stop)
	bareAddr, baselineAddr, changedAddr := serve(bare), serve(baseline), serve(changed)

	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"cart": {Upstream: changedAddr}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, creds)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		return conn
	}
	router, err := grpcmw.NewRouter(dial(baselineAddr), table, "cart", grpcmw.WithDialOptions(creds))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { router.Close() })

	sandbox := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	for _, bc := range []struct {
		name string
		c    *cart.Client
		ctx  context.Context
	}{
		{"plain", cart.NewClient(dial(bareAddr)), context.Background()},
		{"production", cart.NewClient(router), context.Background()},
		{"sandbox", cart.NewClient(router), sandbox},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.c.Price(bc.ctx, "mug", 3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
