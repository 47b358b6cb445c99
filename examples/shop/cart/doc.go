// Package cart is the shop's pricing service: one gRPC method,
// /shop.Cart/Price, that quotes a quantity of an item.
//
// Two deployments of it run side by side in the demo: the baseline, which
// charges the list price ([ListPrice]), and the one sandbox pr-42 built
// from a pull request that adds a bulk discount ([BulkDiscount]). Which one
// answers a call is decided by the caller's [grpcmw.Router], from the
// sandbox in the call's context; the server only reads that sandbox back
// (with grpcmw's server interceptors) and reports it in the [Quote].
//
// The service has no generated code: messages are plain Go structs sent
// as JSON by [Codec], which the server and [Client] force per connection
// and per call, so nothing is registered globally.
//
// [NewServer] and [Client] are safe for concurrent use.
package cart
