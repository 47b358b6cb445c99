package grpcmw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// auditLog keeps the audit records the middleware emits.
type auditLog = audittest.Recorder

func newAuditLog() (*auditLog, *slog.Logger) { return audittest.New() }

// start serves a test service on loopback until the test ends.
func start(t testing.TB, svc *grpctest.Service, opts ...grpc.ServerOption) string {
	t.Helper()
	addr, stop, err := grpctest.Start(svc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

// dial connects to addr (plain text) until the test ends.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// serverIn builds server interceptors, failing the test on an error.
func serverIn(t testing.TB, opts ...grpcmw.ServerOption) *grpcmw.ServerInterceptors {
	t.Helper()
	in, err := grpcmw.NewServerInterceptors(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// clientIn builds client interceptors, failing the test on an error.
func clientIn(t testing.TB, opts ...grpcmw.ClientOption) *grpcmw.ClientInterceptors {
	t.Helper()
	out, err := grpcmw.NewClientInterceptors(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// serverOpts installs both server interceptors.
func serverOpts(t testing.TB, opts ...grpcmw.ServerOption) []grpc.ServerOption {
	t.Helper()
	in := serverIn(t, opts...)
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(in.Unary()), grpc.ChainStreamInterceptor(in.Stream())}
}

// clientOpts installs both client interceptors.
func clientOpts(t testing.TB, opts ...grpcmw.ClientOption) []grpc.DialOption {
	t.Helper()
	out := clientIn(t, opts...)
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(out.Unary()), grpc.WithChainStreamInterceptor(out.Stream())}
}

// kind is one of the four kinds of gRPC call.
type kind string

const (
	unary        kind = "unary"
	serverStream kind = "server-stream"
	clientStream kind = "client-stream"
	bidi         kind = "bidi"
)

var kinds = []kind{unary, serverStream, clientStream, bidi}

// call makes one call of kind k and returns what the handler saw.
func call(ctx context.Context, c testpb.TestServiceClient, k kind) (grpctest.Seen, error) {
	var seen string
	switch k {
	case unary:
		var hdr metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr))
		if err != nil {
			return grpctest.Seen{}, err
		}
		seen = string(resp.GetPayload().GetBody())
		if h := hdr.Get(grpctest.SeenHeader); len(h) != 1 || h[0] != seen {
			return grpctest.Seen{}, fmt.Errorf("header %q and payload %q differ", h, seen)
		}
	case serverStream:
		st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{}, {}},
		})
		if err != nil {
			return grpctest.Seen{}, err
		}
		n := 0
		for {
			resp, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return grpctest.Seen{}, err
			}
			n++
			seen = string(resp.GetPayload().GetBody())
		}
		if n != 2 {
			return grpctest.Seen{}, fmt.Errorf("got %d responses, want 2", n)
		}
	case clientStream:
		st, err := c.StreamingInputCall(ctx)
		if err != nil {
			return grpctest.Seen{}, err
		}
		for _, b := range []string{"abc", "de"} {
			if err := st.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte(b)}}); err != nil && !errors.Is(err, io.EOF) {
				return grpctest.Seen{}, err
			}
		}
		resp, err := st.CloseAndRecv()
		if err != nil {
			return grpctest.Seen{}, err
		}
		if resp.GetAggregatedPayloadSize() != 5 {
			return grpctest.Seen{}, fmt.Errorf("aggregated size %d, want 5", resp.GetAggregatedPayloadSize())
		}
		hdr, err := st.Header()
		if err != nil {
			return grpctest.Seen{}, err
		}
		if h := hdr.Get(grpctest.SeenHeader); len(h) == 1 {
			seen = h[0]
		}
	case bidi:
		st, err := c.FullDuplexCall(ctx)
		if err != nil {
			return grpctest.Seen{}, err
		}
		for range 2 {
			if err := st.Send(&testpb.StreamingOutputCallRequest{}); err != nil && !errors.Is(err, io.EOF) {
				return grpctest.Seen{}, err
			}
			resp, err := st.Recv()
			if err != nil {
				return grpctest.Seen{}, err
			}
			seen = string(resp.GetPayload().GetBody())
		}
		if err := st.CloseSend(); err != nil {
			return grpctest.Seen{}, err
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			return grpctest.Seen{}, fmt.Errorf("after CloseSend: %v, want EOF", err)
		}
	}
	return grpctest.Parse(seen)
}
