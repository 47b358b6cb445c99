package grpcmw_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The attack: grpcmw's client side used together with otelgrpc's client
// stats handler. gRPC runs the interceptors first and the stats handler's
// TagRPC after them; otelgrpc's Baggage propagator then sets the baggage
// metadata from the context's OpenTelemetry baggage, replacing the one the
// interceptor wrote, whenever that baggage is not empty. The sandbox must
// still reach the server in baggage, once, with no stale member of ours.

// otelProps are the propagators a client or server may give otelgrpc: the
// plain composite of OpenTelemetry's, the README's (ours after Baggage),
// and ours before Baggage (the order the README warns against on a
// server; a client's injection must not depend on it).
var otelProps = []struct {
	name string
	prop otelprop.TextMapPropagator
}{
	{"tracecontext+baggage", otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{})},
	{"readme", propagation.NewTextMapPropagator(nil)},
	{"ours before baggage", otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, propagation.NewPropagator(nil), otelprop.Baggage{})},
}

// otelActor is the actor of the sandbox the tests send: its '@' is
// percent-encoded in OpenTelemetry's baggage, not in the codec's.
const otelActor = "alice@example.com"

// otelBaggages are the OpenTelemetry baggages a caller's context may hold
// beside its sandbox (feat-1, otelActor).
var otelBaggages = []struct {
	name    string
	members string
}{
	{"none", ""},
	{"other member", "tenant=acme"},
	{"stale sandbox", "tenant=acme,sandbox.id=stale,sandbox.actor=mallory"},
	{"stale sandbox only", "sandbox.id=stale"},
	{"stale sandbox percent-encoded", "tenant=acme,sandbox%2Eid=stale"},
}

func withOTelBaggage(t *testing.T, ctx context.Context, members string) context.Context {
	t.Helper()
	if members == "" {
		return ctx
	}
	bag, err := baggage.Parse(members)
	if err != nil {
		t.Fatal(err)
	}
	return baggage.ContextWithBaggage(ctx, bag)
}

// checkOurBaggage fails unless the baggage lines hold exactly one
// sandbox.id member, feat-1, and nothing else of ours but actor otelActor.
func checkOurBaggage(t *testing.T, where, lines string, wantOther string) {
	t.Helper()
	ids := 0
	for _, mem := range strings.Split(lines, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(mem), "=")
		v, _, _ = strings.Cut(v, ";")
		k = strings.TrimSpace(k)
		switch {
		case k == "sandbox.id":
			ids++
			if v != "feat-1" {
				t.Errorf("%s: baggage %q has sandbox.id=%q", where, lines, v)
			}
		case k == "sandbox.actor":
			if d, err := url.PathUnescape(v); err != nil || d != otelActor {
				t.Errorf("%s: baggage %q has sandbox.actor=%q", where, lines, v)
			}
		case strings.HasPrefix(k, "sandbox."):
			t.Errorf("%s: baggage %q has member %q", where, lines, mem)
		default:
			// W3C baggage keys are case-sensitive: Sandbox.ID is
			// not ours. A percent-encoded spelling is, to a
			// lenient parser.
			if d, err := url.QueryUnescape(k); err != nil || d != k && strings.HasPrefix(d, "sandbox.") {
				t.Errorf("%s: baggage %q has member %q", where, lines, mem)
			}
		}
	}
	if ids != 1 {
		t.Errorf("%s: baggage %q has %d sandbox.id members, want 1", where, lines, ids)
	}
	if wantOther != "" && !strings.Contains(lines, wantOther) {
		t.Errorf("%s: baggage %q lost %q", where, lines, wantOther)
	}
}

// checkSeen checks what a server saw of a sandbox (feat-1, otelActor) call
// made with a context holding OpenTelemetry baggage members.
func checkSeen(t *testing.T, where string, seen grpctest.Seen, withGrpcmw bool, members string) {
	t.Helper()
	other := ""
	if strings.Contains(members, "tenant=acme") {
		other = "tenant=acme"
	}
	checkOurBaggage(t, where+" (metadata)", seen.Baggage, other)
	if withGrpcmw {
		if seen.Sandbox != "feat-1" || seen.Actor != otelActor {
			t.Errorf("%s: context sandbox %q actor %q, want feat-1 "+otelActor, where, seen.Sandbox, seen.Actor)
		}
	}
	if seen.Header != "feat-1" {
		t.Errorf("%s: sandbox-id metadata %q, want feat-1 once", where, seen.Header)
	}
}

// TestClientUnderOTelStatsHandler: grpcmw's client interceptors and
// otelgrpc's client stats handler on one connection (dial options in both
// orders), with the caller's context holding other, stale or no
// OpenTelemetry baggage: an OpenTelemetry-only server and a grpcmw server
// each get the sandbox once in baggage, on every kind of call.
func TestClientUnderOTelStatsHandler(t *testing.T) {
	for _, cp := range otelProps {
		for _, sp := range otelProps {
			for _, withGrpcmw := range []bool{false, true} {
				srvOpts := []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(sp.prop)))}
				if withGrpcmw {
					srvOpts = append(srvOpts, serverOpts(t, grpcmw.TrustAll())...)
				}
				addr := start(t, &grpctest.Service{Name: "S"}, srvOpts...)
				stats := grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(cp.prop)))
				for order, opts := range [][]grpc.DialOption{
					append(clientOpts(t), stats),
					append([]grpc.DialOption{stats}, clientOpts(t)...),
				} {
					client := testpb.NewTestServiceClient(dial(t, addr, opts...))
					for _, ob := range otelBaggages {
						ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1", Actor: otelActor})
						ctx = withOTelBaggage(t, ctx, ob.members)
						for _, k := range kinds {
							where := cp.name + " client, " + sp.name + " server, order " + string(rune('0'+order)) + ", " + ob.name + ", " + string(k)
							if withGrpcmw {
								where += ", grpcmw server"
							}
							seen, err := call(ctx, client, k)
							if err != nil {
								t.Errorf("%s: %v", where, err)
								continue
							}
							checkSeen(t, where, seen, withGrpcmw, ob.members)
						}
					}
				}
			}
		}
	}
}

// TestRouterUnderOTelStatsHandler: the Router, with otelgrpc's client stats
// handler on its baseline connection and on its sandbox connections
// (WithDialOptions), sends a sandbox once in baggage whether it routes the
// call to the sandbox's upstream or falls back to the baseline.
func TestRouterUnderOTelStatsHandler(t *testing.T) {
	for _, cp := range otelProps {
		t.Run(cp.name, func(t *testing.T) {
			stats := grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(cp.prop)))
			srvStats := grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(otelProps[0].prop)))
			baselineAddr := start(t, &grpctest.Service{Name: "baseline"}, srvStats)
			sandboxAddr := start(t, &grpctest.Service{Name: "sandbox"}, srvStats)
			for _, rt := range []struct{ overrides, server string }{{"cart", "sandbox"}, {"payments", "baseline"}} {
				table, err := routes.NewStatic([]routes.Sandbox{
					{ID: "feat-1", Actor: "alice", Services: map[string]routes.Route{rt.overrides: {Upstream: sandboxAddr}}},
				})
				if err != nil {
					t.Fatal(err)
				}
				router, err := grpcmw.NewRouter(dial(t, baselineAddr, stats), table, "cart", plaintext, grpcmw.WithDialOptions(stats))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { router.Close() })
				client := testpb.NewTestServiceClient(router)
				for _, ob := range otelBaggages {
					ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1", Actor: otelActor})
					ctx = withOTelBaggage(t, ctx, ob.members)
					for _, k := range kinds {
						where := rt.server + ", " + ob.name + ", " + string(k)
						seen, err := call(ctx, client, k)
						if err != nil {
							t.Errorf("%s: %v", where, err)
							continue
						}
						if seen.Server != rt.server {
							t.Errorf("%s: answered by %q", where, seen.Server)
						}
						checkSeen(t, where, seen, false, ob.members)
					}
				}
			}
		})
	}
}

// TestForwardingServiceUnderOTel: A -> B -> C, B running otelgrpc's stats
// handlers on both sides and grpcmw's interceptors, and forwarding its
// incoming metadata to its outgoing calls. A sends the sandbox in the
// dedicated header beside other baggage (an HTTP hop translated to gRPC,
// say); C, OpenTelemetry-only or grpcmw, must get the sandbox in baggage.
func TestForwardingServiceUnderOTel(t *testing.T) {
	for _, bp := range otelProps {
		for _, withGrpcmw := range []bool{false, true} {
			name := bp.name
			if withGrpcmw {
				name += "/grpcmw C"
			}
			t.Run(name, func(t *testing.T) {
				cOpts := []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(otelProps[0].prop)))}
				if withGrpcmw {
					cOpts = append(cOpts, serverOpts(t, grpcmw.TrustAll())...)
				}
				cAddr := start(t, &grpctest.Service{Name: "C"}, cOpts...)
				toC := testpb.NewTestServiceClient(dial(t, cAddr, append(clientOpts(t),
					grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(bp.prop))))...))
				b := &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
					in, _ := metadata.FromIncomingContext(ctx)
					out := metadata.MD{}
					for k, v := range in {
						if !strings.HasPrefix(k, ":") && k != "content-type" && k != "user-agent" && k != "traceparent" {
							out[k] = v
						}
					}
					seen, err := call(metadata.NewOutgoingContext(ctx, out), toC, unary)
					return seen.String(), err
				}}
				bAddr := start(t, b, append([]grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(bp.prop)))},
					serverOpts(t, grpcmw.TrustAll())...)...)
				toB := testpb.NewTestServiceClient(dial(t, bAddr))
				for _, md := range []metadata.MD{
					metadata.Pairs("sandbox-id", "feat-1", "baggage", "tenant=acme,sandbox.actor=alice%40example.com"),
					metadata.Pairs("sandbox-id", "feat-1", "baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,tenant=acme"),
				} {
					for _, k := range kinds {
						where := md.Get("baggage")[0] + ", " + string(k)
						seenB, err := call(metadata.NewOutgoingContext(context.Background(), md), toB, k)
						if err != nil {
							t.Errorf("%s: %v", where, err)
							continue
						}
						if seenB.Sandbox != "feat-1" {
							t.Fatalf("%s: B admitted %q", where, seenB.Sandbox)
						}
						seenC, err := grpctest.Parse(seenB.Next)
						if err != nil {
							t.Fatal(err)
						}
						checkSeen(t, where, seenC, withGrpcmw, "tenant=acme")
					}
				}
			})
		}
	}
}

// TestForwardingServiceStripsUnderOTel: as TestForwardingServiceUnderOTel,
// with B's peer untrusted: B strips the sandbox (which otelgrpc's Baggage
// propagator had already put into its context's baggage), and C, reached
// with B's incoming metadata forwarded and otelgrpc on B's client, sees no
// sandbox and none of our members, while the other member travels.
func TestForwardingServiceStripsUnderOTel(t *testing.T) {
	for _, bp := range otelProps {
		t.Run(bp.name, func(t *testing.T) {
			cAddr := start(t, &grpctest.Service{Name: "C"}, append([]grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(otelProps[0].prop)))},
				serverOpts(t, grpcmw.TrustAll())...)...)
			toC := testpb.NewTestServiceClient(dial(t, cAddr, append(clientOpts(t),
				grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(bp.prop))))...))
			b := &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
				in, _ := metadata.FromIncomingContext(ctx)
				out := metadata.MD{}
				for k, v := range in {
					if !strings.HasPrefix(k, ":") && k != "content-type" && k != "user-agent" && k != "traceparent" {
						out[k] = v
					}
				}
				seen, err := call(metadata.NewOutgoingContext(ctx, out), toC, unary)
				return seen.String(), err
			}}
			bAddr := start(t, b, append([]grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(bp.prop)))},
				serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere))...)...)
			toB := testpb.NewTestServiceClient(dial(t, bAddr))
			md := metadata.Pairs("sandbox-id", "feat-1", "baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,tenant=acme")
			for _, k := range kinds {
				seenB, err := call(metadata.NewOutgoingContext(context.Background(), md), toB, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				seenC, err := grpctest.Parse(seenB.Next)
				if err != nil {
					t.Fatal(err)
				}
				if seenB.Sandbox != "" || seenC.Sandbox != "" || seenC.Header != "" || strings.Contains(seenC.Baggage, "sandbox") || !strings.Contains(seenC.Baggage, "tenant=acme") {
					t.Errorf("%s: B saw sandbox %q; C saw sandbox %q, header %q, baggage %q", k, seenB.Sandbox, seenC.Sandbox, seenC.Header, seenC.Baggage)
				}
			}
		})
	}
}

// TestTicketNotForwardedUnderOTel: an edge service admits a call on its
// ticket, with otelgrpc's stats handlers on both sides (its Baggage
// propagator puts the ticket member into the context's baggage). Its
// calls onward carry the sandbox, never the ticket: a ticket is an edge
// credential, and Codec.Inject replaces it; otelgrpc's client must not
// send it back from the context.
func TestTicketNotForwardedUnderOTel(t *testing.T) {
	ticket, verifier, issued := ticketFor(t, propagation.Sandbox{ID: "feat-1", Actor: otelActor})
	for _, bp := range otelProps {
		t.Run(bp.name, func(t *testing.T) {
			cAddr := start(t, &grpctest.Service{Name: "C"}, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(otelProps[0].prop))))
			toC := testpb.NewTestServiceClient(dial(t, cAddr, append(clientOpts(t),
				grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(bp.prop))))...))
			b := &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
				seen, err := call(ctx, toC, unary)
				return seen.String(), err
			}}
			bAddr := start(t, b, append([]grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(bp.prop)))},
				serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier), grpcmw.WithClock(func() time.Time { return issued }))...)...)
			toB := testpb.NewTestServiceClient(dial(t, bAddr))
			md := metadata.Pairs("baggage", "tenant=acme,sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket="+ticket)
			for _, k := range kinds {
				seenB, err := call(metadata.NewOutgoingContext(context.Background(), md), toB, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seenB.Sandbox != "feat-1" {
					t.Fatalf("%s: B admitted %q", k, seenB.Sandbox)
				}
				seenC, err := grpctest.Parse(seenB.Next)
				if err != nil {
					t.Fatal(err)
				}
				checkSeen(t, string(k), seenC, false, "tenant=acme")
				if strings.Contains(seenC.Baggage, "ticket") {
					t.Errorf("%s: C got the ticket: baggage %q", k, seenC.Baggage)
				}
			}
		})
	}
}

// TestFullOTelBaggageUnderOTelStatsHandler: the context's OpenTelemetry
// baggage is at (or near) the W3C limits, as OpenTelemetry's parser lets
// in from an incoming call whose sandbox came in the dedicated header: 63
// or 64 members, or close to 8192 bytes. With the sandbox's members added
// the baggage otelgrpc writes from the context would exceed them: a grpcmw
// server refuses such baggage (propagation.ErrBaggageLimit), an
// OpenTelemetry-only one keeps the first 64 members (ours among them or
// not, by map order) or none over 8192 bytes. Foreign members give way;
// the sandbox arrives.
func TestFullOTelBaggageUnderOTelStatsHandler(t *testing.T) {
	many := func(n int, size int) string {
		var ms []string
		for i := range n {
			ms = append(ms, fmt.Sprintf("m%02d=%s", i, strings.Repeat("v", size)))
		}
		return strings.Join(ms, ",")
	}
	p := otelProps[0].prop
	for _, withGrpcmw := range []bool{false, true} {
		srvOpts := []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(p)))}
		if withGrpcmw {
			srvOpts = append(srvOpts, serverOpts(t, grpcmw.TrustAll())...)
		}
		addr := start(t, &grpctest.Service{Name: "S"}, srvOpts...)
		client := testpb.NewTestServiceClient(dial(t, addr, append(clientOpts(t),
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(p))))...))
		for _, tc := range []struct{ name, members string }{
			{"63 members", many(63, 1)},
			{"64 members", many(64, 1)},
			{"8180 bytes", many(8, 1016) + ",x=" + strings.Repeat("y", 8180-8*1021-3)},
		} {
			bag, err := baggage.Parse(tc.members)
			if err != nil || bag.Len() == 0 {
				t.Fatalf("%s: %v", tc.name, err)
			}
			ctx := baggage.ContextWithBaggage(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1", Actor: otelActor}), bag)
			for _, k := range kinds {
				where := fmt.Sprintf("%s, %s, grpcmw server %v", tc.name, k, withGrpcmw)
				for range 10 { // otelgrpc writes the members in map order
					seen, err := call(ctx, client, k)
					if err != nil {
						t.Errorf("%s: %v", where, err)
						break
					}
					checkOurBaggage(t, where+" (metadata)", seen.Baggage, "")
					if !strings.Contains(seen.OTel, "sandbox.id=feat-1") {
						t.Errorf("%s: the server's OpenTelemetry baggage %.80q... has no sandbox", where, seen.OTel)
						break
					}
					if withGrpcmw && seen.Sandbox != "feat-1" {
						t.Errorf("%s: served in sandbox %q", where, seen.Sandbox)
						break
					}
					if b, err := baggage.Parse(seen.Baggage); err != nil || b.Len() < propagation.MaxBaggageMembers-2 && !strings.Contains(tc.name, "bytes") {
						t.Errorf("%s: %d members arrived (%v), want the others kept up to the limit", where, b.Len(), err)
						break
					}
				}
			}
		}
	}
}

// TestFullCallerBaggage: the caller's outgoing metadata holds a baggage
// at (or near) the W3C limits (set by the caller, or forwarded from an
// incoming call whose sandbox came in the dedicated header), and no
// otelgrpc. The sandbox's members merged into it must not push it over
// them, or the next grpcmw hop refuses the call (propagation.ErrBaggageLimit).
func TestFullCallerBaggage(t *testing.T) {
	many := func(n int, size int) string {
		var ms []string
		for i := range n {
			ms = append(ms, fmt.Sprintf("m%02d=%s", i, strings.Repeat("v", size)))
		}
		return strings.Join(ms, ",")
	}
	addr := start(t, &grpctest.Service{Name: "S"}, serverOpts(t, grpcmw.TrustAll())...)
	client := testpb.NewTestServiceClient(dial(t, addr, clientOpts(t)...))
	for _, tc := range []struct {
		name string
		md   metadata.MD
	}{
		{"63 members", metadata.Pairs("baggage", many(63, 1))},
		{"64 members in two lines", metadata.Pairs("baggage", many(32, 1), "baggage", strings.ReplaceAll(many(32, 1), "m", "n"))},
		{"64 members and a stale sandbox", metadata.Pairs("sandbox-id", "stale", "baggage", many(64, 1)+",sandbox.id=stale")},
		{"8180 bytes", metadata.Pairs("baggage", many(8, 1016)+",x="+strings.Repeat("y", 8180-8*1021-3))},
	} {
		ctx := metadata.NewOutgoingContext(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1", Actor: otelActor}), tc.md)
		for _, k := range kinds {
			where := tc.name + ", " + string(k)
			seen, err := call(ctx, client, k)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			checkSeen(t, where, seen, true, "")
			if n := strings.Count(seen.Baggage, ",") + 1; n > propagation.MaxBaggageMembers || n < propagation.MaxBaggageMembers-2 && !strings.Contains(tc.name, "bytes") {
				t.Errorf("%s: %d members arrived, want the others kept up to the limit", where, n)
			}
		}
	}
}
