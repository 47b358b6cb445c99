// Package cartpb holds the protobuf messages and the gRPC service of the
// shop's cart, generated from cart.proto.
//
// The generators (protoc-gen-go, protoc-gen-go-grpc) are pinned as tool
// directives in the repository's go.mod; buf, which compiles the .proto
// without a protoc, is pinned in tools/go.mod to keep its dependencies out
// of the library's module. scripts/check-generated.sh checks that the
// committed code is what they generate.
package cartpb

// GOWORK=off: -modfile is refused in workspace mode (the repository has a
// go.work), and tools/go.mod is no module of the workspace.
//
//go:generate env GOWORK=off go tool -modfile=../../../tools/go.mod buf generate
