package grpcmw_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTPropagatorDifferential is httpmw's test of the same name on gRPC:
// OpenTelemetry's OT propagator (go.opentelemetry.io/contrib/propagators/ot)
// turns metadata ot-baggage-<key> of a call with OT trace metadata into a
// baggage member <key>, which that hop's W3C Baggage propagator sends on.
// Every call goes to a real server on loopback, with and without otelgrpc
// running the OT propagator in front of the interceptors:
//
//   - from an untrusted peer, neither the metadata the handler gets, read
//     by the OT propagator and sent on as W3C baggage, nor the handler's
//     context's baggage hold a member of ours, and the next hop's codec
//     finds no marker in what is sent on;
//   - from a trusted peer, a call the OT propagator reads a member of ours
//     from is not served as production: refused (InvalidArgument), or
//     admitted in the sandbox that member names.
func TestOTPropagatorDifferential(t *testing.T) {
	ottest.Quiet(t)
	c := propagation.Default()
	ours := ottest.OurKeys(c)
	withOT := ottest.Propagators
	asHeader := func(md metadata.MD) http.Header { return ottest.Canonical(md) }
	readOT := func(md metadata.MD) map[string]string { return ottest.Ours(c, md) }

	type served struct {
		called  bool
		sandbox propagation.Sandbox
		inSB    bool
		md      metadata.MD
		ctxBag  baggage.Baggage
	}
	var (
		mu   sync.Mutex
		last served
	)
	handler := func(_ any, stream grpc.ServerStream) error {
		var in emptypb.Empty
		if err := stream.RecvMsg(&in); err != nil {
			return err
		}
		ctx := stream.Context()
		s, ok := propagation.FromContext(ctx)
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		last = served{called: true, sandbox: s, inSB: ok, md: md, ctxBag: baggage.FromContext(ctx)}
		mu.Unlock()
		return stream.SendMsg(&emptypb.Empty{})
	}
	conns := map[string]*grpc.ClientConn{}
	for _, sv := range []struct {
		name  string
		trust grpcmw.ServerOption
		otel  bool
	}{
		{"trusted", grpcmw.WithTrustedNetworks(loopback), false},
		{"untrusted", grpcmw.WithTrustedNetworks(elsewhere), false},
		{"trusted+otel", grpcmw.WithTrustedNetworks(loopback), true},
		{"untrusted+otel", grpcmw.WithTrustedNetworks(elsewhere), true},
	} {
		opts := append(serverOpts(t, sv.trust), grpc.UnknownServiceHandler(handler))
		if sv.otel {
			opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(withOT))))
		}
		conns[sv.name] = dial(t, startRaw(t, opts...))
	}

	var otTrace []string
	for _, kv := range ottest.TraceHeaders {
		otTrace = append(otTrace, kv[0], kv[1])
	}
	values := []string{"pr-1", "pr-2", "", "%70r-1", "pr-1;p=1"}
	beside := [][2]string{{}, {"sandbox-id", "pr-1"}, {"baggage", "sandbox.id=pr-1,sandbox.actor=alice"}}
	sets, otReads := 0, 0
	for _, k := range c.Keys() {
		for _, p := range []string{"ot-baggage-", "ot_baggage_", "ot-baggage_"} {
			for _, v := range values {
				for _, b := range beside {
					kv := append(append([]string(nil), otTrace...), p+k, v)
					if b[0] != "" {
						kv = append(kv, b[0], b[1])
					}
					sentMD := metadata.Pairs(kv...)
					sent := readOT(sentMD)
					sets++
					if len(sent) > 0 {
						otReads++
					}
					for name, cc := range conns {
						desc := fmt.Sprintf("%s: %s=%q beside %v", name, p+k, v, b)
						mu.Lock()
						last = served{}
						mu.Unlock()
						err := cc.Invoke(metadata.NewOutgoingContext(context.Background(), sentMD), "/probe.Probe/Call", &emptypb.Empty{}, &emptypb.Empty{})
						mu.Lock()
						got := last
						mu.Unlock()
						if name == "untrusted" || name == "untrusted+otel" {
							if err != nil || !got.called || got.inSB {
								t.Errorf("%s: %v, sandbox %v (%v); want production", desc, err, got.sandbox, got.inSB)
								continue
							}
							if left := readOT(got.md); len(left) > 0 {
								t.Errorf("%s: the OT propagator reads %v from the metadata handed on", desc, left)
							}
							for _, m := range got.ctxBag.Members() {
								if ours[m.Key()] {
									t.Errorf("%s: the context's baggage holds %s=%s", desc, m.Key(), m.Value())
								}
							}
							next := http.Header{}
							withOT.Inject(withOT.Extract(context.Background(), otelprop.HeaderCarrier(asHeader(got.md))), otelprop.HeaderCarrier(next))
							if m, rerr := c.Read(otelprop.HeaderCarrier(next)); m.Found || rerr != nil {
								t.Errorf("%s: the next hop reads %+v, %v from %v", desc, m, rerr, next)
							}
							continue
						}
						if len(sent) == 0 || status.Code(err) == codes.InvalidArgument {
							continue
						}
						switch {
						case err != nil:
							t.Errorf("%s: %v", desc, err)
						case !got.inSB:
							t.Errorf("%s: served as production, but the OT propagator reads %v", desc, sent)
						case sent["sandbox.id"] != "" && sent["sandbox.id"] != got.sandbox.ID,
							sent["sandbox.actor"] != "" && sent["sandbox.actor"] != got.sandbox.Actor:
							t.Errorf("%s: admitted in %+v, but the OT propagator reads %v", desc, got.sandbox, sent)
						}
					}
				}
			}
		}
	}
	if otReads < sets/4 {
		t.Fatalf("the OT propagator read a member of ours from %d of %d metadata sets: the test does not reach it", otReads, sets)
	}
	t.Logf("%d calls; the OT propagator read a member of ours from %d of %d metadata sets", sets*len(conns), otReads, sets)
}

// startRaw serves a gRPC server with opts and no service of its own on
// loopback (grpc.UnknownServiceHandler answers every method), until the
// test ends.
func startRaw(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}
