package gateway

import (
	"context"

	"google.golang.org/grpc"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/examples/shop/cartpb"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// NewGRPC returns the gateway's gRPC edge: the cart service (shop.Cart)
// as customers and developers call it, forwarded to c, which picks the
// sandbox's cart or the baseline. Like [New], it admits sandbox metadata
// only with a ticket that verifier accepts; markers without one are
// stripped and the call is served as production. opts are added to
// grpcmw's server interceptors (the demo adds the audit logger). The
// server also serves reflection and the health service, so grpcurl can
// list, describe and call it without a .proto. Options that cannot work
// are the error of [grpcmw.NewServerInterceptors].
func NewGRPC(verifier *propagation.Verifier, c *cart.Client, opts ...grpcmw.ServerOption) (*grpc.Server, error) {
	in, err := grpcmw.NewServerInterceptors(append([]grpcmw.ServerOption{grpcmw.WithVerifier(verifier)}, opts...)...)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(in.Unary()), grpc.ChainStreamInterceptor(in.Stream()))
	cartpb.RegisterCartServer(s, &edge{cart: c})
	cart.RegisterIntrospection(s)
	return s, nil
}

// edge forwards Price with the call's context, so an admitted sandbox
// goes along to the cart it chose.
type edge struct {
	cartpb.UnimplementedCartServer
	cart *cart.Client
}

func (e *edge) Price(ctx context.Context, req *cartpb.PriceRequest) (*cartpb.Quote, error) {
	return e.cart.Price(ctx, req.GetItem(), int(req.GetQty())) // errors keep cart's status code
}
