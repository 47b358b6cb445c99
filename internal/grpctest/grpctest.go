// Package grpctest is a small gRPC service for sandboxkit's tests and
// examples: grpc_testing's TestService (unary, server-, client- and
// bidi-streaming calls), whose every reply tells which server answered and
// what its handler saw (sandbox in the context, markers in the incoming
// metadata, OpenTelemetry baggage, peer).
package grpctest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel/baggage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// SeenHeader is the response header metadata key under which every call
// (of any kind) reports what its handler saw.
const SeenHeader = "x-grpctest-seen"

// Seen is what a handler saw.
type Seen struct {
	Server  string // Service.Name
	Sandbox string // propagation.FromContext ID, "" for none
	Actor   string
	Header  string // incoming sandbox-id metadata, values joined by ","
	Baggage string // incoming baggage metadata, values joined by ","
	OTel    string // baggage.FromContext, as a header value
	Peer    string // the client's address
	User    string // incoming x-user metadata, values joined by ","
	Next    string // what Service.Forward returned
}

// String encodes s (as a URL query).
func (s Seen) String() string {
	v := url.Values{}
	for k, x := range map[string]string{
		"server": s.Server, "sandbox": s.Sandbox, "actor": s.Actor, "header": s.Header,
		"baggage": s.Baggage, "otel": s.OTel, "peer": s.Peer, "next": s.Next, "user": s.User,
	} {
		if x != "" {
			v.Set(k, x)
		}
	}
	return v.Encode()
}

// Parse decodes what [Seen.String] encoded.
func Parse(str string) (Seen, error) {
	v, err := url.ParseQuery(str)
	if err != nil {
		return Seen{}, err
	}
	return Seen{
		Server: v.Get("server"), Sandbox: v.Get("sandbox"), Actor: v.Get("actor"), Header: v.Get("header"),
		Baggage: v.Get("baggage"), OTel: v.Get("otel"), Peer: v.Get("peer"), Next: v.Get("next"), User: v.Get("user"),
	}, nil
}

// Service implements testpb.TestServiceServer. Each handler sets the
// [SeenHeader] response header; UnaryCall, StreamingOutputCall and
// FullDuplexCall also put it in each response payload. A UnaryCall request
// with ResponseStatus set fails with that status.
type Service struct {
	testpb.UnimplementedTestServiceServer

	// Name says which server answered.
	Name string
	// Forward, when set, is called by every handler with its context; its
	// result is reported as Seen.Next, its error fails the call.
	Forward func(ctx context.Context) (string, error)

	calls atomic.Int64
}

// Calls returns how many handlers have run.
func (s *Service) Calls() int64 { return s.calls.Load() }

// See reports what a handler running with ctx sees.
func (s *Service) See(ctx context.Context) (Seen, error) {
	s.calls.Add(1)
	seen := Seen{Server: s.Name}
	if sb, ok := propagation.FromContext(ctx); ok {
		seen.Sandbox, seen.Actor = sb.ID, sb.Actor
	}
	md, _ := metadata.FromIncomingContext(ctx)
	seen.Header = strings.Join(md.Get(propagation.Default().Header()), ",")
	seen.Baggage = strings.Join(md.Get("baggage"), ",")
	seen.OTel = baggage.FromContext(ctx).String()
	seen.User = strings.Join(md.Get("x-user"), ",")
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		seen.Peer = p.Addr.String()
	}
	if s.Forward != nil {
		next, err := s.Forward(ctx)
		if err != nil {
			return seen, err
		}
		seen.Next = next
	}
	return seen, nil
}

func (s *Service) seen(ctx context.Context) (string, error) {
	seen, err := s.See(ctx)
	if err != nil {
		return "", err
	}
	str := seen.String()
	return str, grpc.SetHeader(ctx, metadata.Pairs(SeenHeader, str))
}

// EmptyCall reports in the header only.
func (s *Service) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	if _, err := s.seen(ctx); err != nil {
		return nil, err
	}
	return &testpb.Empty{}, nil
}

// UnaryCall reports in the header and the payload.
func (s *Service) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	str, err := s.seen(ctx)
	if err != nil {
		return nil, err
	}
	if st := req.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(str)}}, nil
}

// StreamingOutputCall sends one response per ResponseParameters entry (at
// least one).
func (s *Service) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	str, err := s.seen(stream.Context())
	if err != nil {
		return err
	}
	for i := 0; i < max(1, len(req.GetResponseParameters())); i++ {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(str)}}); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall reads every request and answers with their total
// payload size; what it saw goes in the header.
func (s *Service) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	if _, err := s.seen(stream.Context()); err != nil {
		return err
	}
	var n int32
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: n})
		}
		if err != nil {
			return err
		}
		n += int32(len(req.GetPayload().GetBody()))
	}
}

// FullDuplexCall answers each request at once.
func (s *Service) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	str, err := s.seen(stream.Context())
	if err != nil {
		return err
	}
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(str)}}); err != nil {
			return err
		}
	}
}

// Start serves svc on 127.0.0.1:0 with the server options and returns the
// address and a function that stops the server and waits for it.
func Start(svc *Service, opts ...grpc.ServerOption) (addr string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(srv, svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	return lis.Addr().String(), func() {
		srv.Stop()
		<-done
	}, nil
}
