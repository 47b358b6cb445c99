package grpcmw_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/internal/porttest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

var plaintext = grpcmw.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))

// fleet is a baseline server and a sandbox server for service "cart",
// each trusting every peer, and a router in front of them.
type fleet struct {
	baseline, sandbox         *grpctest.Service
	baselineAddr, sandboxAddr string
	table                     *routes.Table
	router                    *grpcmw.Router
	client                    testpb.TestServiceClient
}

func newFleet(t *testing.T, sbs func(sandboxAddr string) []routes.Sandbox, opts ...grpcmw.RouterOption) *fleet {
	t.Helper()
	f := &fleet{baseline: &grpctest.Service{Name: "baseline"}, sandbox: &grpctest.Service{Name: "sandbox"}}
	f.baselineAddr = start(t, f.baseline, serverOpts(t, grpcmw.TrustAll())...)
	f.sandboxAddr = start(t, f.sandbox, serverOpts(t, grpcmw.TrustAll())...)
	table, err := routes.NewStatic(sbs(f.sandboxAddr))
	if err != nil {
		t.Fatal(err)
	}
	f.table = table
	// The baseline connection has no sandboxkit interceptor: the router
	// injects the markers itself.
	f.router, err = grpcmw.NewRouter(dial(t, f.baselineAddr), table, "cart", append([]grpcmw.RouterOption{plaintext}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.router.Close() })
	f.client = testpb.NewTestServiceClient(f.router)
	return f
}

func cartOverride(addr string) []routes.Sandbox {
	return []routes.Sandbox{
		{ID: "feat-a", Actor: "alice", Services: map[string]routes.Route{"cart": {Upstream: addr}}},
		{ID: "feat-b", Actor: "bob", Services: map[string]routes.Route{"payments": {Upstream: addr}}},
	}
}

func inSandbox(id string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id})
}

// TestRouterRoutes: unary and all streaming kinds go to the sandbox server
// when the sandbox overrides the service, to the baseline otherwise, and
// carry the sandbox either way; one connection is shared by all calls.
func TestRouterRoutes(t *testing.T) {
	log, logger := newAuditLog()
	f := newFleet(t, cartOverride, grpcmw.WithLogger(logger))
	for _, tc := range []struct {
		name, server, sandbox string
		decision              audit.Decision
		ctx                   context.Context
	}{
		{"no sandbox", "baseline", "", "", context.Background()},
		{"sandbox overrides cart", "sandbox", "feat-a", audit.Routed, inSandbox("feat-a")},
		{"sandbox overrides another service", "baseline", "feat-b", audit.Fallback, inSandbox("feat-b")},
		{"sandbox unknown to the table", "baseline", "feat-z", audit.Fallback, inSandbox("feat-z")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range kinds {
				n := len(log.Records())
				seen, err := call(tc.ctx, f.client, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seen.Server != tc.server || seen.Sandbox != tc.sandbox || seen.Header != tc.sandbox {
					t.Errorf("%s: served by %s with sandbox %q (header %q); want %s with %q", k, seen.Server, seen.Sandbox, seen.Header, tc.server, tc.sandbox)
				}
				recs := log.Records()[n:]
				if tc.decision == "" {
					if len(recs) != 0 {
						t.Errorf("%s: audit records %v for a call without a sandbox", k, recs)
					}
					continue
				}
				if len(recs) != 1 || recs[0][audit.KeyDecision] != string(tc.decision) || recs[0][audit.KeyID] != tc.sandbox || recs[0][audit.KeyTarget] != "cart" || recs[0][audit.KeyProtocol] != audit.GRPC {
					t.Errorf("%s: audit %v, want one %s record for %s", k, recs, tc.decision, tc.sandbox)
				}
			}
		})
	}
	if n := f.router.Conns(); n != 1 {
		t.Errorf("router holds %d sandbox connections, want 1", n)
	}
	// Every call the sandbox server served came over one connection.
	var peers []string
	for range 3 {
		seen, err := call(inSandbox("feat-a"), f.client, unary)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, seen.Peer)
	}
	if peers[0] != peers[1] || peers[1] != peers[2] {
		t.Errorf("sandbox calls came from %v, want one shared connection", peers)
	}
}

// TestRouterClosesConnections: a sandbox connection is closed when its
// route is removed, moves to another upstream or expires, and when the
// router is closed; a stream in flight keeps it until the stream ends. goleak
// checks that the connection's goroutines are gone each time.
func TestRouterClosesConnections(t *testing.T) {
	f := newFleet(t, cartOverride)
	other := &grpctest.Service{Name: "sandbox-v2"}
	otherAddr := start(t, other, serverOpts(t, grpcmw.TrustAll())...)
	if _, err := call(context.Background(), f.client, unary); err != nil { // connects the baseline
		t.Fatal(err)
	}
	idle := goleak.IgnoreCurrent() // servers, baseline connection, router watcher

	mustServe := func(t *testing.T, want string) {
		t.Helper()
		seen, err := call(inSandbox("feat-a"), f.client, unary)
		if err != nil {
			t.Fatal(err)
		}
		if seen.Server != want {
			t.Fatalf("served by %s, want %s", seen.Server, want)
		}
	}
	waitConns := func(t *testing.T, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for f.router.Conns() != want {
			if time.Now().After(deadline) {
				t.Fatalf("router holds %d connections, want %d", f.router.Conns(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	noLeak := func(t *testing.T, what string) {
		t.Helper()
		if err := goleak.Find(idle); err != nil {
			t.Fatalf("%s: sandbox connection not closed: %v", what, err)
		}
	}

	t.Run("route removed", func(t *testing.T) {
		mustServe(t, "sandbox")
		if err := f.table.Update(nil); err != nil {
			t.Fatal(err)
		}
		waitConns(t, 0)
		noLeak(t, "route removed")
		mustServe(t, "baseline")
	})
	t.Run("route moved", func(t *testing.T) {
		if err := f.table.Update(cartOverride(f.sandboxAddr)); err != nil {
			t.Fatal(err)
		}
		mustServe(t, "sandbox")
		if err := f.table.Update(cartOverride(otherAddr)); err != nil {
			t.Fatal(err)
		}
		mustServe(t, "sandbox-v2")
		waitConns(t, 1)
		if err := f.table.Update(nil); err != nil {
			t.Fatal(err)
		}
		waitConns(t, 0)
		noLeak(t, "route moved")
	})
	t.Run("stream in flight", func(t *testing.T) {
		if err := f.table.Update(cartOverride(f.sandboxAddr)); err != nil {
			t.Fatal(err)
		}
		st, err := f.client.FullDuplexCall(inSandbox("feat-a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.table.Update(nil); err != nil {
			t.Fatal(err)
		}
		waitConns(t, 0)
		// The route is gone but the stream still works on its connection.
		for range 2 {
			if err := st.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("stream broken by the route removal: %v", err)
			}
			if seen, _ := grpctest.Parse(string(resp.GetPayload().GetBody())); seen.Server != "sandbox" {
				t.Fatalf("stream served by %s", seen.Server)
			}
		}
		if err := goleak.Find(idle); err == nil {
			t.Fatal("the connection was closed under a live stream")
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("Recv after CloseSend: %v", err)
		}
		noLeak(t, "stream ended")
	})
	t.Run("sandbox expires", func(t *testing.T) {
		sbs := cartOverride(f.sandboxAddr)
		// Long enough for the first call to connect and be served on a
		// loaded machine (a second was not always), then waited out.
		const life = 4 * time.Second
		sbs[0].Expires = time.Now().Add(life)
		if err := f.table.Update(sbs); err != nil {
			t.Fatal(err)
		}
		mustServe(t, "sandbox")
		time.Sleep(time.Until(sbs[0].Expires))
		waitConns(t, 0) // no table change: the router's timer notices the expiry
		noLeak(t, "sandbox expired")
		mustServe(t, "baseline")
	})
	t.Run("router closed", func(t *testing.T) {
		if err := f.table.Update(cartOverride(f.sandboxAddr)); err != nil {
			t.Fatal(err)
		}
		mustServe(t, "sandbox")
		if err := f.router.Close(); err != nil {
			t.Fatal(err)
		}
		if err := f.router.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		for _, ctx := range []context.Context{inSandbox("feat-a"), inSandbox("feat-b"), context.Background()} {
			for _, k := range kinds {
				_, err := call(ctx, f.client, k)
				if !errors.Is(err, grpcmw.ErrClosed) || status.Code(err) != codes.Canceled {
					t.Errorf("%s after Close: %v, want ErrClosed (Canceled)", k, err)
				}
			}
		}
		if err := goleak.Find(idle); err != nil {
			t.Fatalf("after Close: %v", err)
		}
	})
}

// TestRouterUnavailable: a sandbox whose upstream cannot be reached gets
// Unavailable naming the sandbox, never a silent answer from the baseline;
// with WithFallbackOnUnavailable the baseline answers, audited. An
// Unavailable status from the sandbox's own handler is not an unreachable
// upstream.
func TestRouterUnavailable(t *testing.T) {
	dead := porttest.Refused(t) // nothing listens there
	deadRoute := func(string) []routes.Sandbox {
		return []routes.Sandbox{{ID: "feat-a", Services: map[string]routes.Route{"cart": {Upstream: dead}}}}
	}

	t.Run("no fallback", func(t *testing.T) {
		f := newFleet(t, deadRoute)
		for _, k := range kinds {
			_, err := call(inSandbox("feat-a"), f.client, k)
			if status.Code(err) != codes.Unavailable || !errors.Is(err, grpcmw.ErrSandboxUnavailable) {
				t.Fatalf("%s: err = %v, want ErrSandboxUnavailable with code Unavailable", k, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, `sandbox "feat-a"`) || !strings.Contains(msg, dead) {
				t.Errorf("%s: message %q does not name the sandbox and upstream", k, msg)
			}
		}
		if f.baseline.Calls() != 0 {
			t.Errorf("the baseline served %d sandbox calls", f.baseline.Calls())
		}
	})
	t.Run("fallback", func(t *testing.T) {
		log, logger := newAuditLog()
		f := newFleet(t, deadRoute, grpcmw.WithFallbackOnUnavailable(), grpcmw.WithLogger(logger))
		for _, k := range kinds {
			n := len(log.Records())
			seen, err := call(inSandbox("feat-a"), f.client, k)
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			if seen.Server != "baseline" || seen.Sandbox != "feat-a" {
				t.Errorf("%s: served by %s with sandbox %q, want baseline with feat-a", k, seen.Server, seen.Sandbox)
			}
			got := log.Decisions()[n:]
			if !slices.Equal(got, []string{string(audit.Routed), string(audit.Fallback)}) {
				t.Errorf("%s: audit decisions %q, want routed then fallback", k, got)
			}
			if r := log.Records()[len(log.Records())-1]; !strings.Contains(r[audit.KeyReason], "unavailable") {
				t.Errorf("%s: fallback reason %q", k, r[audit.KeyReason])
			}
		}
	})
	t.Run("handler's own Unavailable passes through", func(t *testing.T) {
		f := newFleet(t, cartOverride, grpcmw.WithFallbackOnUnavailable())
		_, err := f.client.UnaryCall(inSandbox("feat-a"), &testpb.SimpleRequest{
			ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Unavailable), Message: "try later"},
		})
		if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "try later" || errors.Is(err, grpcmw.ErrSandboxUnavailable) {
			t.Errorf("err = %v, want the handler's own status", err)
		}
		if f.baseline.Calls() != 0 || f.sandbox.Calls() != 1 {
			t.Errorf("baseline served %d, sandbox %d; want 0 and 1", f.baseline.Calls(), f.sandbox.Calls())
		}
	})
}

// TestRouterNoSandboxNoAllocs: the router adds no allocation to a call
// without a sandbox.
func TestRouterNoSandboxNoAllocs(t *testing.T) {
	r, err := grpcmw.NewRouter(nopConn{}, routes.New(), "cart", plaintext)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	desc := &grpc.StreamDesc{ServerStreams: true}
	if n := testing.AllocsPerRun(200, func() { _ = r.Invoke(ctx, "/s/m", nil, nil) }); n != 0 {
		t.Errorf("Invoke: %v allocations", n)
	}
	if n := testing.AllocsPerRun(200, func() { _, _ = r.NewStream(ctx, desc, "/s/m") }); n != 0 {
		t.Errorf("NewStream: %v allocations", n)
	}
}

// nopConn is a connection that does nothing, to isolate the router's cost.
type nopConn struct{}

func (nopConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error { return nil }

func (nopConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, nil
}

// TestRouterTableNeverLoaded: a sandbox call through a router whose table
// has never loaded cannot be decided; it fails closed with Unavailable
// (ErrSandboxUnavailable), audited as not synced, never silently reaching
// the baseline; with WithFallbackOnUnavailable the baseline answers,
// audited as a fallback for the same reason. Calls without a sandbox are
// unaffected, and a table filled by hand (NewStatic, even empty) counts as
// loaded.
func TestRouterTableNeverLoaded(t *testing.T) {
	baseline := &grpctest.Service{Name: "baseline"}
	addr := start(t, baseline, serverOpts(t, grpcmw.TrustAll())...)
	router := func(table *routes.Table, opts ...grpcmw.RouterOption) testpb.TestServiceClient {
		r, err := grpcmw.NewRouter(dial(t, addr), table, "cart", append([]grpcmw.RouterOption{plaintext}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return testpb.NewTestServiceClient(r)
	}
	lastReason := func(log *auditLog, decision audit.Decision) string {
		recs := log.Records()
		if len(recs) == 0 || recs[len(recs)-1][audit.KeyDecision] != string(decision) {
			t.Fatalf("audit %v, want a last %s record", recs, decision)
		}
		return recs[len(recs)-1][audit.KeyReason]
	}

	t.Run("fails closed", func(t *testing.T) {
		log, logger := newAuditLog()
		failing := routes.New() // given a source that never answered
		if err := failing.Load(context.Background(), routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) {
			return nil, errors.New("source down")
		})); err == nil {
			t.Fatal("Load from a failing source succeeded")
		}
		for name, table := range map[string]*routes.Table{"fresh": routes.New(), "source never synced": failing} {
			client := router(table, grpcmw.WithLogger(logger))
			before := baseline.Calls()
			for _, k := range kinds {
				_, err := call(inSandbox("feat-a"), client, k)
				if status.Code(err) != codes.Unavailable || !errors.Is(err, grpcmw.ErrSandboxUnavailable) {
					t.Fatalf("%s, %s: err = %v, want ErrSandboxUnavailable with code Unavailable", name, k, err)
				}
				if msg := status.Convert(err).Message(); !strings.Contains(msg, `sandbox "feat-a"`) || !strings.Contains(msg, "cart") {
					t.Errorf("%s, %s: message %q does not name the sandbox and service", name, k, msg)
				}
				if r := lastReason(log, audit.Rejected); r != audit.ReasonNotSynced {
					t.Errorf("%s, %s: reason %q, want %q", name, k, r, audit.ReasonNotSynced)
				}
			}
			if n := baseline.Calls() - before; n != 0 {
				t.Errorf("%s: the baseline served %d sandbox calls", name, n)
			}
			seen, err := call(context.Background(), client, unary)
			if err != nil || seen.Server != "baseline" {
				t.Errorf("%s: a call without a sandbox: %v, %v; want the baseline", name, seen, err)
			}
		}
	})
	t.Run("fallback", func(t *testing.T) {
		log, logger := newAuditLog()
		client := router(routes.New(), grpcmw.WithFallbackOnUnavailable(), grpcmw.WithLogger(logger))
		for _, k := range kinds {
			seen, err := call(inSandbox("feat-a"), client, k)
			if err != nil || seen.Server != "baseline" || seen.Sandbox != "feat-a" {
				t.Fatalf("%s: %v, %v; want the baseline with feat-a", k, seen, err)
			}
			if r := lastReason(log, audit.Fallback); r != audit.ReasonNotSynced {
				t.Errorf("%s: reason %q, want %q", k, r, audit.ReasonNotSynced)
			}
		}
	})
	t.Run("static table is loaded", func(t *testing.T) {
		// feat-b is in the table and overrides no service; feat-a is not
		// in it at all (a typo, or torn down): both go to the baseline,
		// each with its own reason.
		table, err := routes.NewStatic([]routes.Sandbox{{ID: "feat-b"}})
		if err != nil {
			t.Fatal(err)
		}
		for id, reason := range map[string]string{"feat-a": audit.ReasonUnknownSandbox, "feat-b": audit.ReasonNotOverridden} {
			log, logger := newAuditLog()
			client := router(table, grpcmw.WithLogger(logger))
			seen, err := call(inSandbox(id), client, unary)
			if err != nil || seen.Server != "baseline" {
				t.Fatalf("%s: %v, %v; want the baseline", id, seen, err)
			}
			if r := lastReason(log, audit.Fallback); r != reason {
				t.Errorf("%s: reason %q, want %q", id, r, reason)
			}
		}
	})
}
