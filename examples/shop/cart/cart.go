package cart

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// MethodPrice is the full name of the one method of the service.
const MethodPrice = "/shop.Cart/Price"

// PriceRequest asks for the price of Qty of Item.
type PriceRequest struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// Quote is the answer: the price and who computed it.
type Quote struct {
	Item       string `json:"item"`
	Qty        int    `json:"qty"`
	UnitCents  int64  `json:"unitCents"`
	TotalCents int64  `json:"totalCents"`
	// Rule names the pricing rule that produced TotalCents.
	Rule string `json:"rule"`
	// Server is the deployment that answered: "cart" for the baseline,
	// "cart@<sandbox>" for a sandbox's version.
	Server string `json:"server"`
	// Sandbox is the sandbox the server saw in the call, "" for
	// production traffic.
	Sandbox string `json:"sandbox,omitempty"`
}

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
// prices with rule. opts configure grpcmw's server interceptors: cart is an
// internal hop behind the gateway, so the demo gives it [grpcmw.TrustAll]
// and the audit logger; options that cannot work are the error of
// [grpcmw.NewServerInterceptors]. Serve it on a listener and stop it when
// done.
func NewServer(server string, rule Rule, opts ...grpcmw.ServerOption) (*grpc.Server, error) {
	in, err := grpcmw.NewServerInterceptors(opts...)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer(
		grpc.ForceServerCodecV2(Codec{}),
		grpc.ChainUnaryInterceptor(in.Unary()),
		grpc.ChainStreamInterceptor(in.Stream()),
	)
	Register(s, server, rule)
	return s, nil
}

// Register registers the cart service named server, pricing with rule, on
// s, as generated RegisterXServer functions do. s must use [Codec]
// (grpc.ForceServerCodecV2); [NewServer] builds such a server with
// grpcmw's interceptors.
func Register(s grpc.ServiceRegistrar, server string, rule Rule) {
	s.RegisterService(&serviceDesc, &service{server: server, rule: rule})
}

type service struct {
	server string
	rule   Rule
}

func (s *service) price(ctx context.Context, req *PriceRequest) (*Quote, error) {
	unit, ok := UnitPrice(req.Item)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cart: no item %q", req.Item)
	}
	if req.Qty < 1 || req.Qty > 1000 {
		return nil, status.Errorf(codes.InvalidArgument, "cart: quantity %d out of range 1..1000", req.Qty)
	}
	total, rule := s.rule(unit, req.Qty)
	q := &Quote{Item: req.Item, Qty: req.Qty, UnitCents: unit, TotalCents: total, Rule: rule, Server: s.server}
	if sb, ok := propagation.FromContext(ctx); ok { // put there by grpcmw's interceptor
		q.Sandbox = sb.ID
	}
	return q, nil
}

// serviceDesc is what protoc-gen-go-grpc would generate for the service.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: "shop.Cart",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Price",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			req := new(PriceRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			s := srv.(*service)
			if icpt == nil {
				return s.price(ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: MethodPrice}
			return icpt(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return s.price(ctx, req.(*PriceRequest))
			})
		},
	}},
}

// Client calls the cart service.
type Client struct {
	cc grpc.ClientConnInterface
}

// NewClient returns a client calling through cc: a *grpc.ClientConn, or a
// [grpcmw.Router] that sends each call to the sandbox's cart or the
// baseline.
func NewClient(cc grpc.ClientConnInterface) *Client {
	return &Client{cc: cc}
}

// Price asks for the price of qty of item. Errors carry the gRPC status.
func (c *Client) Price(ctx context.Context, item string, qty int) (Quote, error) {
	var q Quote
	err := c.cc.Invoke(ctx, MethodPrice, &PriceRequest{Item: item, Qty: qty}, &q, grpc.ForceCodecV2(Codec{}))
	if err != nil {
		return Quote{}, fmt.Errorf("cart: pricing %d %s: %w", qty, item, err)
	}
	return q, nil
}
