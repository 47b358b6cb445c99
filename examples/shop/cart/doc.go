// Package cart is the shop's pricing service: one gRPC method,
// /shop.Cart/Price, that quotes a quantity of an item.
//
// Two deployments of it run side by side in the demo: the baseline, which
// charges the list price ([ListPrice]), and the one sandbox pr-42 built
// from a pull request that adds a bulk discount ([BulkDiscount]). Which one
// answers a call is decided by the caller's [grpcmw.Router], from the
// sandbox in the call's context; the server only reads that sandbox back
// (with grpcmw's server interceptors) and reports it in the quote.
//
// The messages and the service are protobuf, generated from
// ../cartpb/cart.proto into package cartpb, sent with gRPC's standard
// codec. Servers from [NewServer] also serve reflection and the health
// service, so grpcurl reaches them without a .proto:
//
//	grpcurl -plaintext 127.0.0.1:PORT list
//	grpcurl -plaintext -d '{"item":"mug","qty":3}' 127.0.0.1:PORT shop.Cart/Price
//
// [NewServer] and [Client] are safe for concurrent use.
package cart
