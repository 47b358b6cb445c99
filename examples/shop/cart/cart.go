package cart

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/examples/shop/cartpb"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// MethodPrice is the full name of the one method of the service.
const MethodPrice = cartpb.Cart_Price_FullMethodName

// Rule prices qty items of unit price unit, and names itself.
type Rule func(unit int64, qty int) (total int64, name string)

// ListPrice is the baseline rule: the unit price times the quantity.
func ListPrice(unit int64, qty int) (int64, string) {
	return unit * int64(qty), "list price"
}

// BulkDiscount is the rule of pull request 42: 20% off from three items on.
func BulkDiscount(unit int64, qty int) (int64, string) {
	if qty < 3 {
		return ListPrice(unit, qty)
	}
	return unit * int64(qty) * 80 / 100, "bulk discount: 20% off 3 or more"
}

// UnitPrice returns the list price of item in cents.
func UnitPrice(item string) (int64, bool) {
	switch item {
	case "mug":
		return 1200, true
	case "tee":
		return 2500, true
	case "sticker":
		return 300, true
	}
	return 0, false
}

// NewServer returns a gRPC server of the cart service named server that
// prices with rule, with server reflection and the gRPC health service so
// that standard tools (grpcurl, grpc-health-probe) can use it. opts
// configure grpcmw's server interceptors: cart is an internal hop behind
// the gateway, so the demo gives it [grpcmw.TrustAll] and the audit
// logger; options that cannot work are the error of
// [grpcmw.NewServerInterceptors]. Serve it on a listener and stop it when
// done.
func NewServer(server string, rule Rule, opts ...grpcmw.ServerOption) (*grpc.Server, error) {
	in, err := grpcmw.NewServerInterceptors(opts...)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer(
		grpc.ChainUnaryInterceptor(in.Unary()),
		grpc.ChainStreamInterceptor(in.Stream()),
	)
	Register(s, server, rule)
	RegisterIntrospection(s)
	return s, nil
}

// Register registers the cart service named server, pricing with rule, on
// s. [NewServer] builds a server with grpcmw's interceptors around it.
func Register(s grpc.ServiceRegistrar, server string, rule Rule) {
	cartpb.RegisterCartServer(s, &service{server: server, rule: rule})
}

// RegisterIntrospection registers what standard gRPC tools ask a server
// first: server reflection (grpcurl list and describe need no .proto) and
// the health service, answering SERVING.
func RegisterIntrospection(s *grpc.Server) {
	reflection.Register(s)
	healthgrpc.RegisterHealthServer(s, health.NewServer()) // SERVING from the start
}

type service struct {
	cartpb.UnimplementedCartServer
	server string
	rule   Rule
}

// Price implements [cartpb.CartServer].
func (s *service) Price(ctx context.Context, req *cartpb.PriceRequest) (*cartpb.Quote, error) {
	unit, ok := UnitPrice(req.GetItem())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cart: no item %q", req.GetItem())
	}
	qty := req.GetQty()
	if qty < 1 || qty > 1000 {
		return nil, status.Errorf(codes.InvalidArgument, "cart: quantity %d out of range 1..1000", qty)
	}
	total, rule := s.rule(unit, int(qty))
	q := &cartpb.Quote{Item: req.GetItem(), Qty: qty, UnitCents: unit, TotalCents: total, Rule: rule, Server: s.server}
	if sb, ok := propagation.FromContext(ctx); ok { // put there by grpcmw's interceptor
		q.Sandbox = sb.ID
	}
	return q, nil
}

// Client calls the cart service.
type Client struct {
	c cartpb.CartClient
}

// NewClient returns a client calling through cc: a *grpc.ClientConn, or a
// [grpcmw.Router] that sends each call to the sandbox's cart or the
// baseline.
func NewClient(cc grpc.ClientConnInterface) *Client {
	return &Client{c: cartpb.NewCartClient(cc)}
}

// Price asks for the price of qty of item. Errors carry the gRPC status.
func (c *Client) Price(ctx context.Context, item string, qty int) (*cartpb.Quote, error) {
	if qty < math.MinInt32 || qty > math.MaxInt32 {
		return nil, fmt.Errorf("cart: pricing %d %s: %w", qty, item, status.Error(codes.InvalidArgument, "cart: quantity out of range"))
	}
	q, err := c.c.Price(ctx, &cartpb.PriceRequest{Item: item, Qty: int32(qty)})
	if err != nil {
		return nil, fmt.Errorf("cart: pricing %d %s: %w", qty, item, err)
	}
	return q, nil
}
