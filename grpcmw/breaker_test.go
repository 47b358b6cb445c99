package grpcmw_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/internal/porttest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

func withActor(id, actor string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: actor})
}

// failWith makes a unary call whose handler answers with code c.
func failWith(ctx context.Context, client testpb.TestServiceClient, c codes.Code) error {
	_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(c), Message: "as asked"}})
	return err
}

// wantRefused checks a refusal's code, message and RetryInfo detail.
func wantRefused(t *testing.T, err error, code codes.Code, text string, retry time.Duration) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), text) || !strings.Contains(st.Message(), "retry after") {
		t.Fatalf("err = %v; want %v naming %q and a retry hint", err, code, text)
	}
	var got time.Duration = -1
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			got = ri.GetRetryDelay().AsDuration()
		}
	}
	if got != retry {
		t.Errorf("RetryInfo delay %v; want %v", got, retry)
	}
}

func TestServerBreaker(t *testing.T) {
	clk := clocktest.New()
	log, logger := newAuditLog()
	g := breaker.NewGroup(breaker.Settings{
		Budget:      breaker.Budget{Rate: 0.5, Burst: 1},
		Failures:    2,
		OpenTimeout: 30 * time.Second,
	}, breaker.WithClock(clk.Now))
	started := make(chan struct{}, 1)
	svc := &grpctest.Service{Name: "cart", Forward: func(ctx context.Context) (string, error) {
		if s, _ := propagation.FromContext(ctx); s.ID == "pr-wait" {
			started <- struct{}{}
			<-ctx.Done()
			return "", status.FromContextError(ctx.Err()).Err()
		}
		return "", nil
	}}
	// An outer interceptor reports when ours has returned (and so has told
	// the budget the call's outcome).
	returned := make(chan struct{}, 1)
	signal := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		defer func() {
			select {
			case returned <- struct{}{}:
			default: // nobody waits
			}
		}()
		return h(ctx, req)
	}
	in := serverIn(t, grpcmw.TrustAll(), grpcmw.WithBreaker(g), grpcmw.WithLogger(logger))
	addr := start(t, svc,
		grpc.ChainUnaryInterceptor(signal, in.Unary()),
		grpc.ChainStreamInterceptor(in.Stream()))
	client := testpb.NewTestServiceClient(dial(t, addr, clientOpts(t)...))
	drain := func() {
		for len(returned) > 0 {
			<-returned
		}
	}

	t.Run("over the rate: ResourceExhausted, every kind", func(t *testing.T) {
		for _, k := range kinds {
			id := "pr-" + strings.ReplaceAll(string(k), "-", "")
			if _, err := call(withActor(id, "alice"), client, k); err != nil {
				t.Fatalf("%s: first call: %v", k, err)
			}
			calls := svc.Calls()
			_, err := call(withActor(id, "alice"), client, k)
			wantRefused(t, err, codes.ResourceExhausted, `rate limit exceeded for sandbox "`+id+`"`, 2*time.Second)
			if svc.Calls() != calls {
				t.Errorf("%s: the handler ran for a refused call", k)
			}
			rec := log.Records()[len(log.Records())-1]
			if rec[audit.KeyDecision] != string(audit.Throttled) || rec[audit.KeyID] != id || rec[audit.KeyActor] != "alice" || rec[audit.KeyPeer] == "" || rec[audit.KeyProtocol] != audit.GRPC {
				t.Errorf("%s: audit record %v; want throttled %s/alice with the peer", k, rec, id)
			}
		}
	})

	t.Run("failures open the breaker: Unavailable", func(t *testing.T) {
		for _, c := range []codes.Code{codes.Internal, codes.Unavailable} {
			clk.Advance(2 * time.Second)
			if err := failWith(withActor("pr-bad", ""), client, c); status.Code(err) != c {
				t.Fatalf("err = %v; want the handler's %v", err, c)
			}
		}
		clk.Advance(2 * time.Second)
		wantRefused(t, failWith(withActor("pr-bad", ""), client, codes.OK), codes.Unavailable, "circuit breaker is open", 28*time.Second)
	})

	t.Run("application errors are not failures", func(t *testing.T) {
		for _, c := range []codes.Code{codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied} {
			clk.Advance(2 * time.Second)
			if err := failWith(withActor("pr-app", ""), client, c); status.Code(err) != c {
				t.Fatalf("err = %v; want %v", err, c)
			}
		}
		if s := g.State("pr-app"); s != breaker.StateClosed {
			t.Errorf("breaker %v; want closed", s)
		}
	})

	t.Run("cancellation is not a failure", func(t *testing.T) {
		drain()
		for range 3 {
			clk.Advance(2 * time.Second)
			ctx, cancel := context.WithCancel(withActor("pr-wait", ""))
			go func() { <-started; cancel() }()
			if err := failWith(ctx, client, codes.OK); status.Code(err) != codes.Canceled {
				t.Fatalf("err = %v; want Canceled", err)
			}
			<-returned
		}
		if s := g.State("pr-wait"); s != breaker.StateClosed {
			t.Errorf("breaker %v after cancelled calls; want closed", s)
		}
	})

	t.Run("baseline untouched", func(t *testing.T) {
		keys := g.Len()
		for range 5 {
			if err := failWith(context.Background(), client, codes.Internal); status.Code(err) != codes.Internal {
				t.Fatalf("err = %v", err)
			}
		}
		if g.Len() != keys {
			t.Errorf("group holds %d keys after baseline calls, %d before", g.Len(), keys)
		}
	})
}

func TestClientBreaker(t *testing.T) {
	clk := clocktest.New()
	log, logger := newAuditLog()
	g := breaker.NewGroup(breaker.Settings{
		Budget:      breaker.Budget{Rate: 0.5, Burst: 1, MaxInFlight: 1},
		Failures:    2,
		OpenTimeout: 30 * time.Second,
	}, breaker.WithClock(clk.Now))
	svc := &grpctest.Service{Name: "cart"}
	addr := start(t, svc, serverOpts(t, grpcmw.TrustAll())...)
	client := testpb.NewTestServiceClient(dial(t, addr, clientOpts(t, grpcmw.WithBreaker(g), grpcmw.WithLogger(logger))...))

	t.Run("refused before sending", func(t *testing.T) {
		if err := failWith(withActor("pr-1", "alice"), client, codes.OK); err != nil {
			t.Fatal(err)
		}
		calls := svc.Calls()
		err := failWith(withActor("pr-1", "alice"), client, codes.OK)
		wantRefused(t, err, codes.ResourceExhausted, "grpcmw: call to /grpc.testing.TestService/UnaryCall refused", 2*time.Second)
		if d, ok := breaker.RetryAfter(err); !errors.Is(err, breaker.ErrThrottled) || !ok || d != 2*time.Second {
			t.Errorf("err = %v; want it to wrap ErrThrottled with a 2s hint", err)
		}
		if svc.Calls() != calls {
			t.Error("the refused call reached the server")
		}
		if rec := log.Records()[len(log.Records())-1]; rec[audit.KeyDecision] != string(audit.Throttled) || rec[audit.KeyActor] != "alice" {
			t.Errorf("audit record %v", rec)
		}
	})

	t.Run("failures and application errors", func(t *testing.T) {
		for range 3 {
			clk.Advance(2 * time.Second)
			if err := failWith(withActor("pr-2", ""), client, codes.NotFound); status.Code(err) != codes.NotFound {
				t.Fatalf("err = %v", err)
			}
		}
		for range 2 {
			clk.Advance(2 * time.Second)
			if err := failWith(withActor("pr-2", ""), client, codes.Unknown); status.Code(err) != codes.Unknown {
				t.Fatalf("err = %v", err)
			}
		}
		clk.Advance(2 * time.Second)
		err := failWith(withActor("pr-2", ""), client, codes.OK)
		if !errors.Is(err, breaker.ErrOpen) || status.Code(err) != codes.Unavailable {
			t.Errorf("err = %v; want ErrOpen as Unavailable", err)
		}
	})

	t.Run("unreachable server is a failure, cancellation is not", func(t *testing.T) {
		dead := porttest.Refused(t) // nothing listens there
		g := breaker.NewGroup(breaker.Settings{Failures: 1})
		down := testpb.NewTestServiceClient(dial(t, dead, clientOpts(t, grpcmw.WithBreaker(g))...))
		ctx, cancel := context.WithCancel(withActor("pr-3", ""))
		cancel()
		if err := failWith(ctx, down, codes.OK); status.Code(err) != codes.Canceled {
			t.Fatalf("err = %v; want Canceled", err)
		}
		if s := g.State("pr-3"); s != breaker.StateClosed {
			t.Fatalf("breaker %v after a cancelled call; want closed", s)
		}
		if err := failWith(withActor("pr-3", ""), down, codes.OK); status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v; want Unavailable", err)
		}
		if err := failWith(withActor("pr-3", ""), down, codes.OK); !errors.Is(err, breaker.ErrOpen) {
			t.Errorf("err = %v; want ErrOpen", err)
		}
	})

	t.Run("a stream is in flight until it ends", func(t *testing.T) {
		clk.Advance(2 * time.Second)
		st, err := client.FullDuplexCall(withActor("pr-4", ""))
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * time.Second)
		_, err = client.FullDuplexCall(withActor("pr-4", ""))
		if !errors.Is(err, breaker.ErrTooManyInFlight) || status.Code(err) != codes.Unavailable {
			t.Fatalf("second stream: err = %v; want ErrTooManyInFlight as Unavailable", err)
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("Recv: %v; want EOF", err)
		}
		if _, err := call(withActor("pr-4", ""), client, bidi); err != nil {
			t.Errorf("stream after the first ended: %v", err)
		}
	})
}

func TestRouterBreaker(t *testing.T) {
	dead := porttest.Refused(t) // nothing listens there
	sandboxes := func(addr string) []routes.Sandbox {
		return []routes.Sandbox{
			{ID: "feat-a", Services: map[string]routes.Route{"cart": {Upstream: addr}}},
			{ID: "feat-d", Services: map[string]routes.Route{"cart": {Upstream: dead}}},
		}
	}

	t.Run("sandbox and baseline upstreams share the budget", func(t *testing.T) {
		clk := clocktest.New()
		g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 1}}, breaker.WithClock(clk.Now))
		f := newFleet(t, sandboxes, grpcmw.WithBreaker(g))
		for _, id := range []string{"feat-a", "feat-z"} { // routed; not overriding: baseline
			for _, k := range kinds {
				clk.Advance(time.Second)
				if _, err := call(inSandbox(id), f.client, k); err != nil {
					t.Fatalf("%s %s: %v", id, k, err)
				}
				b, s := f.baseline.Calls(), f.sandbox.Calls()
				_, err := call(inSandbox(id), f.client, k)
				if !errors.Is(err, breaker.ErrThrottled) || status.Code(err) != codes.ResourceExhausted {
					t.Fatalf("%s %s: err = %v; want ErrThrottled", id, k, err)
				}
				if f.baseline.Calls() != b || f.sandbox.Calls() != s {
					t.Errorf("%s %s: a refused call was served", id, k)
				}
			}
		}
		keys := g.Len()
		for _, k := range kinds {
			if _, err := call(context.Background(), f.client, k); err != nil {
				t.Fatalf("baseline %s: %v", k, err)
			}
		}
		if g.Len() != keys {
			t.Errorf("baseline calls added keys: %d, then %d", keys, g.Len())
		}
	})

	t.Run("a fallback reports its own outcome and frees its slot", func(t *testing.T) {
		g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{MaxInFlight: 1}, Failures: 1})
		f := newFleet(t, sandboxes, grpcmw.WithBreaker(g), grpcmw.WithFallbackOnUnavailable())
		for round := range 2 {
			for _, k := range kinds {
				seen, err := call(inSandbox("feat-d"), f.client, k)
				if err != nil || seen.Server != "baseline" {
					t.Fatalf("round %d, %s: %+v, %v; want the baseline's answer", round, k, seen, err)
				}
			}
		}
		if s := g.State("feat-d"); s != breaker.StateClosed {
			t.Errorf("breaker %v; want closed (the fallbacks succeeded)", s)
		}
	})

	t.Run("without fallback, an unreachable sandbox upstream is a failure", func(t *testing.T) {
		g := breaker.NewGroup(breaker.Settings{Failures: 2})
		f := newFleet(t, sandboxes, grpcmw.WithBreaker(g))
		for _, k := range []kind{unary, serverStream} {
			if _, err := call(inSandbox("feat-d"), f.client, k); !errors.Is(err, grpcmw.ErrSandboxUnavailable) {
				t.Fatalf("%s: err = %v; want ErrSandboxUnavailable", k, err)
			}
		}
		if _, err := call(inSandbox("feat-d"), f.client, unary); !errors.Is(err, breaker.ErrOpen) {
			t.Errorf("err = %v; want ErrOpen", err)
		}
	})
}

// TestBreakerNoSandboxNoAllocs: with a breaker, calls without a sandbox
// still cost no allocation in the interceptors and the router.
func TestBreakerNoSandboxNoAllocs(t *testing.T) {
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1e9, MaxInFlight: 100}})
	opt := grpcmw.WithBreaker(g)
	ctx := context.Background()
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	streamer := func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
		return nil, nil
	}
	out, in := clientIn(t, opt), serverIn(t, opt)
	unaryClient, streamClient := out.Unary(), out.Stream()
	unaryServer, streamServer := in.Unary(), in.Stream()
	handler := func(context.Context, any) (any, error) { return nil, nil }
	streamHandler := func(any, grpc.ServerStream) error { return nil }
	uinfo := &grpc.UnaryServerInfo{FullMethod: "/s/m"}
	sinfo := &grpc.StreamServerInfo{FullMethod: "/s/m"}
	desc := &grpc.StreamDesc{}
	ss := &ctxStream{ctx: ctx}
	r, err := grpcmw.NewRouter(nopConn{}, routes.New(), "cart", plaintext, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"unary client", func() { _ = unaryClient(ctx, "/s/m", nil, nil, nil, invoker) }},
		{"stream client", func() { _, _ = streamClient(ctx, desc, nil, "/s/m", streamer) }},
		{"unary server", func() { _, _ = unaryServer(ctx, nil, uinfo, handler) }},
		{"stream server", func() { _ = streamServer(nil, ss, sinfo, streamHandler) }},
		{"router invoke", func() { _ = r.Invoke(ctx, "/s/m", nil, nil) }},
		{"router stream", func() { _, _ = r.NewStream(ctx, desc, "/s/m") }},
	} {
		if got := testing.AllocsPerRun(200, tc.f); got != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tc.name, got)
		}
	}
	if g.Len() != 0 {
		t.Errorf("group holds %d keys", g.Len())
	}
}

// TestBreakerNilKeepsGroup: a nil WithBreaker after a group adds nothing;
// it does not take the group away.
func TestBreakerNilKeepsGroup(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 1}}, breaker.WithClock(clk.Now))
	out, err := grpcmw.NewClientInterceptors(grpcmw.WithBreaker(g), grpcmw.WithBreaker(nil))
	if err != nil {
		t.Fatal(err)
	}
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	ctx := inSandbox("feat-a")
	if err := out.Unary()(ctx, "/s/m", nil, nil, nil, invoker); err != nil {
		t.Fatal(err)
	}
	if err := out.Unary()(ctx, "/s/m", nil, nil, nil, invoker); !errors.Is(err, breaker.ErrThrottled) {
		t.Errorf("second call: %v, want ErrThrottled (the nil option dropped the group)", err)
	}
}
