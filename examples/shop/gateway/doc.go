// Package gateway is the shop's edge: the HTTP endpoint POST /checkout
// that customers (and developers testing a sandbox) call. It prices the
// item with the cart service over gRPC and places the order with the order
// service over HTTP.
//
// # Trust
//
// The gateway is where sandbox traffic enters, so it is where trust is
// decided. [New] wraps the endpoint in [httpmw.NewHandler] whose only trust
// option is [httpmw.WithVerifier]: a request reaches a sandbox only with a
// ticket signed for it ([propagation.Signer]); sandbox markers without one,
// from whatever peer, are stripped and the request is served as
// production; a bad ticket is answered with 400. The services behind the
// gateway trust it (they run with [httpmw.TrustAll], and grpcmw.TrustAll for
// gRPC).
//
// The options given to New are added to that handler: the demo adds the
// audit logger ([httpmw.WithLogger]) and the per-sandbox budget
// ([httpmw.WithBreaker]), which answers a sandbox over its budget with
// 429 before the endpoint runs, while production traffic is not budgeted.
//
// # Errors
//
// Errors of the services are translated here, at the edge, to HTTP: gRPC
// NotFound to 404, InvalidArgument to 400, Unavailable to 503,
// ResourceExhausted to 429; a refusal of the order service keeps its
// status.
//
// The handler is safe for concurrent use.
package gateway
