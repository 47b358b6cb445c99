package grpcmw_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

var (
	loopback  = netip.MustParsePrefix("127.0.0.0/8")
	elsewhere = netip.MustParsePrefix("10.0.0.0/8")
)

func testKeys(t testing.TB) (*propagation.Signer, *propagation.Verifier) {
	t.Helper()
	key := propagation.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	signer, err := propagation.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := propagation.NewVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	return signer, verifier
}

// ticketFor returns a ticket for s, issued by testKeys' signer to expire
// an hour after the time it returns (the tests' clock), and the verifier
// of its key.
func ticketFor(t testing.TB, s propagation.Sandbox) (ticket string, verifier *propagation.Verifier, issued time.Time) {
	t.Helper()
	signer, verifier := testKeys(t)
	issued = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ticket, err := signer.SignUntil(s, issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ticket, verifier, issued
}

// TestServerTrust runs every trust and spoofing case over the four kinds of
// call, against a real server on loopback, with raw markers a client wrote
// by hand (no client interceptor).
func TestServerTrust(t *testing.T) {
	signer, verifier := testKeys(t)
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice@example.com"}
	ticket, err := signer.SignUntil(alice, issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, foreignVerifier := func() (*propagation.Signer, *propagation.Verifier) {
		v, err := propagation.NewVerifier(propagation.Key{ID: "other", Secret: []byte("ffffffffffffffffffffffffffffffff")})
		if err != nil {
			t.Fatal(err)
		}
		return nil, v
	}()
	keepForeign, err := propagation.NewCodec(propagation.KeepForeignRoutingKeys())
	if err != nil {
		t.Fatal(err)
	}
	// A codec whose ID key holds a '+' (a token byte): OpenTelemetry JS
	// decodes a%2Bb once, to that key.
	plusKey, err := propagation.NewCodec(propagation.WithBaggageKeys("a+b", "xx.yx", "kk"), propagation.WithTicketKey("zz"))
	if err != nil {
		t.Fatal(err)
	}
	clockAt := func(at time.Time) grpcmw.ServerOption { return grpcmw.WithClock(func() time.Time { return at }) }
	bigBaggage := "sandbox.id=feat-1"
	for i := range 64 {
		bigBaggage += ",m" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=1"
	}

	type want struct {
		code     codes.Code // OK: the handler ran
		msg      string     // part of the error message
		sandbox  string
		actor    string
		header   string         // the sandbox-id metadata the handler saw
		baggage  string         // the baggage metadata the handler saw
		decision audit.Decision // the audit record, "" for none
	}
	for _, tc := range []struct {
		name string
		opts []grpcmw.ServerOption
		md   []string
		want want
	}{
		{
			name: "no markers",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"baggage", "foo=bar"},
			want: want{baggage: "foo=bar"},
		},
		{
			name: "trusted peer, header",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox-id", "feat-1"},
			want: want{sandbox: "feat-1", header: "feat-1", decision: audit.Admitted},
		},
		{
			name: "trusted peer, baggage only",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"baggage", "foo=bar,sandbox.id=feat-1,sandbox.actor=alice%40example.com"},
			want: want{sandbox: "feat-1", actor: "alice@example.com", baggage: "foo=bar,sandbox.id=feat-1,sandbox.actor=alice%40example.com", decision: audit.Admitted},
		},
		{
			name: "trust all",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"sandbox-id", "feat-1", "baggage", "sandbox.id=feat-1"},
			want: want{sandbox: "feat-1", header: "feat-1", baggage: "sandbox.id=feat-1", decision: audit.Admitted},
		},
		{
			name: "untrusted peer is stripped",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"sandbox-id", "feat-1", "baggage", "foo=bar,sandbox.id=feat-1,sandbox.actor=mallory"},
			want: want{baggage: "foo=bar", decision: audit.Stripped},
		},
		// Issue 13: markers under the wide definition.
		{
			name: "trusted peer, empty sandbox-id is unreadable",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox-id", ""},
			want: want{code: codes.InvalidArgument, msg: "is empty", decision: audit.Rejected},
		},
		{
			name: "trusted peer, percent-encoded key",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"baggage", "sandbox%2Eid=feat-1"},
			want: want{code: codes.InvalidArgument, msg: "lenient parser", decision: audit.Rejected},
		},
		{
			// One more reading of the member (otelgrpc with the ottrace
			// propagator writes ot-baggage-sandbox.id): it agrees.
			name: "trusted peer, metadata named as a baggage key, agreeing",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox-id", "feat-1", "sandbox.id", "feat-1", "ot-baggage-sandbox.id", "feat-1"},
			want: want{sandbox: "feat-1", header: "feat-1", decision: audit.Admitted},
		},
		{
			name: "trusted peer, metadata named as a baggage key, disagreeing",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox-id", "feat-1", "ot-baggage-sandbox.id", "feat-2"},
			want: want{code: codes.InvalidArgument, msg: "conflicting", decision: audit.Rejected},
		},
		{
			name: "trusted peer, metadata named as the actor key, none in the markers",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox-id", "feat-1", "ot-baggage-sandbox.actor", "alice"},
			want: want{code: codes.InvalidArgument, msg: "conflicting", decision: audit.Rejected},
		},
		{
			name: "trusted peer, metadata named as a baggage key alone",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox.id", "feat-1"},
			want: want{code: codes.InvalidArgument, msg: "baggage member key", decision: audit.Rejected},
		},
		{
			name: "trust all, metadata named as a baggage key alone",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"sandbox.id", "feat-1"},
			want: want{code: codes.InvalidArgument, msg: "baggage member key", decision: audit.Rejected},
		},
		{
			name: "untrusted peer, metadata named as a baggage key alone is stripped",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"sandbox.id", "feat-1"},
			want: want{decision: audit.Stripped},
		},
		{
			name: "untrusted peer, lookalikes and foreign routing keys are stripped",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"baggage", "foo=bar,+sandbox.id=feat-1,%20sandbox.actor=x,sd-routing-key=x", "uberctx-sd-routing-key", "x"},
			want: want{baggage: "foo=bar", decision: audit.Stripped},
		},
		{
			name: "untrusted peer, a key of ours read by a decoding parser is stripped",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithCodec(plusKey)},
			md:   []string{"baggage", "foo=bar,a%2Bb=feat-1"},
			want: want{baggage: "foo=bar", decision: audit.Stripped},
		},
		{
			name: "untrusted peer, only foreign routing keys: stripped",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"baggage", "foo=bar,sd-routing-key=x,okteto-divert=y", "ot-baggage-sd-routing-key", "x"},
			want: want{baggage: "foo=bar", decision: audit.Stripped},
		},
		{
			name: "untrusted peer, only a Signadot header form: stripped",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"uberctx-sd-routing-key", "x", "baggage", "foo=bar"},
			want: want{baggage: "foo=bar", decision: audit.Stripped},
		},
		{
			name: "trusted peer, foreign routing keys travel",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"baggage", "foo=bar,sd-routing-key=x"},
			want: want{baggage: "foo=bar,sd-routing-key=x"},
		},
		{
			name: "untrusted peer, KeepForeignRoutingKeys",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithCodec(keepForeign)},
			md:   []string{"baggage", "foo=bar,sd-routing-key=x"},
			want: want{baggage: "foo=bar,sd-routing-key=x"},
		},
		{
			name: "zero policy strips",
			md:   []string{"sandbox-id", "feat-1"},
			want: want{decision: audit.Stripped},
		},
		{
			name: "untrusted peer with unreadable markers is stripped, not rejected",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"sandbox-id", "Not_A_Label"},
			want: want{decision: audit.Stripped},
		},
		{
			name: "malformed ID",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)},
			md:   []string{"sandbox-id", "Feat_1"},
			want: want{code: codes.InvalidArgument, msg: "invalid sandbox ID", decision: audit.Rejected},
		},
		{
			name: "header and baggage disagree",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"sandbox-id", "feat-1", "baggage", "sandbox.id=feat-2"},
			want: want{code: codes.InvalidArgument, msg: "conflicting sandbox markers", decision: audit.Rejected},
		},
		{
			name: "two header values",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"sandbox-id", "feat-1", "sandbox-id", "feat-2"},
			want: want{code: codes.InvalidArgument, msg: "conflicting sandbox markers", decision: audit.Rejected},
		},
		{
			name: "bad percent-encoding",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=%zz"},
			want: want{code: codes.InvalidArgument, msg: "malformed sandbox marker", decision: audit.Rejected},
		},
		{
			name: "actor without ID",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"baggage", "sandbox.actor=alice"},
			want: want{code: codes.InvalidArgument, msg: "without a sandbox ID", decision: audit.Rejected},
		},
		{
			name: "baggage over the W3C limits",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll()},
			md:   []string{"baggage", bigBaggage},
			want: want{code: codes.InvalidArgument, msg: "W3C limits", decision: audit.Rejected},
		},
		{
			name: "valid ticket from an untrusted peer",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier), clockAt(issued)},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + ticket},
			// The ticket admitted the call and goes no further: the
			// handler's metadata no longer holds it.
			want: want{sandbox: "feat-1", actor: "alice@example.com", baggage: "sandbox.id=feat-1,sandbox.actor=alice%40example.com", decision: audit.Admitted},
		},
		{
			name: "ticket for another actor (tampered)",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier), clockAt(issued)},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=mallory,sandbox.ticket=" + ticket},
			want: want{code: codes.InvalidArgument, msg: "invalid sandbox ticket", decision: audit.Rejected},
		},
		{
			name: "ticket with a flipped signature",
			opts: []grpcmw.ServerOption{grpcmw.TrustAll(), grpcmw.WithVerifier(verifier), clockAt(issued)},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + flipLast(ticket)},
			want: want{code: codes.InvalidArgument, msg: "invalid sandbox ticket", decision: audit.Rejected},
		},
		{
			name: "expired ticket",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier), clockAt(issued.Add(2 * time.Hour))},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + ticket},
			want: want{code: codes.InvalidArgument, msg: "sandbox ticket expired", decision: audit.Rejected},
		},
		{
			name: "ticket signed with an unknown key",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(foreignVerifier), clockAt(issued)},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + ticket},
			want: want{code: codes.InvalidArgument, msg: "unknown key", decision: audit.Rejected},
		},
		{
			name: "ticket without a verifier does not open the door",
			opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)},
			md:   []string{"baggage", "sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + ticket},
			want: want{decision: audit.Stripped},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logger := newAuditLog()
			svc := &grpctest.Service{Name: "svc"}
			addr := start(t, svc, serverOpts(t, append(tc.opts, grpcmw.WithLogger(logger))...)...)
			client := testpb.NewTestServiceClient(dial(t, addr))
			for i, k := range kinds {
				ctx := context.Background()
				if tc.md != nil {
					ctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
				}
				before := svc.Calls()
				seen, err := call(ctx, client, k)
				if tc.want.code != codes.OK {
					if status.Code(err) != tc.want.code || !strings.Contains(status.Convert(err).Message(), tc.want.msg) {
						t.Fatalf("%s: err = %v, want %s containing %q", k, err, tc.want.code, tc.want.msg)
					}
					if !strings.HasPrefix(status.Convert(err).Message(), "grpcmw: sandbox markers rejected: ") {
						t.Errorf("%s: message %q does not say who rejected the call", k, status.Convert(err).Message())
					}
					if svc.Calls() != before {
						t.Errorf("%s: the handler ran for a rejected call", k)
					}
				} else {
					if err != nil {
						t.Fatalf("%s: %v", k, err)
					}
					if svc.Calls() != before+1 {
						t.Errorf("%s: handler ran %d times, want 1", k, svc.Calls()-before)
					}
					got := want{sandbox: seen.Sandbox, actor: seen.Actor, header: seen.Header, baggage: seen.Baggage, decision: tc.want.decision}
					if got != tc.want {
						t.Errorf("%s: handler saw %+v, want %+v", k, got, tc.want)
					}
				}
				var wantDecisions []string
				if tc.want.decision != "" {
					wantDecisions = make([]string, i+1)
					for j := range wantDecisions {
						wantDecisions[j] = string(tc.want.decision)
					}
				}
				if got := log.Decisions(); !reflect.DeepEqual(got, wantDecisions) {
					t.Errorf("%s: audit decisions %q, want %q", k, got, wantDecisions)
				}
			}
			for _, rec := range log.Records() {
				if rec[audit.KeyProtocol] != audit.GRPC || !strings.HasPrefix(rec[audit.KeyPeer], "127.0.0.1:") || !strings.HasPrefix(rec[audit.KeyTarget], "/grpc.testing.TestService/") {
					t.Errorf("audit record %v: want protocol grpc, loopback peer and the method", rec)
				}
				if rec[audit.KeyDecision] != string(audit.Admitted) && rec[audit.KeyReason] == "" {
					t.Errorf("audit record %v has no reason", rec)
				}
			}
		})
	}
}

func flipLast(s string) string {
	b := []byte(s)
	if b[len(b)-1] == 'A' {
		b[len(b)-1] = 'B'
	} else {
		b[len(b)-1] = 'A'
	}
	return string(b)
}

// TestStripLeavesTransportMetadata calls the interceptor directly to look
// at both sides: the handler's metadata is stripped, the metadata the
// transport put in the context is not modified.
func TestStripLeavesTransportMetadata(t *testing.T) {
	md := metadata.Pairs("sandbox-id", "feat-1", "baggage", "a=1,sandbox.id=feat-1", "x-user", "u1")
	orig := md.Copy()
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(203, 0, 113, 5), Port: 4000}})
	ctx = metadata.NewIncomingContext(ctx, md)

	var handled metadata.MD
	intercept := serverIn(t, grpcmw.WithTrustedNetworks(loopback)).Unary()
	_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(ctx context.Context, _ any) (any, error) {
		if _, ok := propagation.FromContext(ctx); ok {
			t.Error("an untrusted peer's sandbox reached the handler")
		}
		handled, _ = metadata.FromIncomingContext(ctx)
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(md, orig) {
		t.Errorf("transport metadata modified: %v, was %v", md, orig)
	}
	want := metadata.Pairs("baggage", "a=1", "x-user", "u1")
	if !reflect.DeepEqual(handled, want) {
		t.Errorf("handler saw %v, want %v", handled, want)
	}
}

// TestStripCleansOTelBaggage: otelgrpc's server stats handler extracts
// baggage before any interceptor runs. Stripping must remove our members
// from that baggage too, or the next otelgrpc client would send an
// untrusted peer's sandbox on to hops that trust us.
func TestStripCleansOTelBaggage(t *testing.T) {
	otelServer := grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(otelprop.Baggage{})))
	md := []string{"baggage", "foo=bar,sandbox.id=feat-1,sandbox.actor=mallory"}

	t.Run("without the interceptor the members stay", func(t *testing.T) {
		// The control: shows the test can see the problem.
		addr := start(t, &grpctest.Service{Name: "svc"}, otelServer)
		seen, err := call(metadata.AppendToOutgoingContext(context.Background(), md...), testpb.NewTestServiceClient(dial(t, addr)), unary)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(seen.OTel, "sandbox.id=feat-1") {
			t.Fatalf("OTel baggage %q: the stats handler did not extract it; the test below proves nothing", seen.OTel)
		}
	})
	t.Run("stripped", func(t *testing.T) {
		addr := start(t, &grpctest.Service{Name: "svc"}, append(serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere)), otelServer)...)
		client := testpb.NewTestServiceClient(dial(t, addr))
		for _, k := range kinds {
			seen, err := call(metadata.AppendToOutgoingContext(context.Background(), md...), client, k)
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			if seen.OTel != "foo=bar" || seen.Baggage != "foo=bar" || seen.Sandbox != "" {
				t.Errorf("%s: handler saw OTel baggage %q, metadata baggage %q, sandbox %q; want foo=bar, foo=bar and none", k, seen.OTel, seen.Baggage, seen.Sandbox)
			}
		}
	})
	t.Run("sandbox already in the context is stripped", func(t *testing.T) {
		// A propagation.Propagator among otelgrpc's propagators puts the
		// sandbox into the context before the interceptor runs; stripping
		// must take it out again.
		early := grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(
			otelprop.NewCompositeTextMapPropagator(otelprop.Baggage{}, propagation.NewPropagator(nil)))))
		svc := &grpctest.Service{Name: "svc"}
		alog, logger := newAuditLog()
		addr := start(t, svc, append(serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithLogger(logger)), early)...)
		client := testpb.NewTestServiceClient(dial(t, addr))
		for _, k := range kinds {
			seen, err := call(metadata.AppendToOutgoingContext(context.Background(), md...), client, k)
			if err != nil {
				t.Fatalf("%s: %v (the docs promise: stripped and served, not rejected)", k, err)
			}
			if seen.Sandbox != "" || seen.OTel != "foo=bar" || seen.Baggage != "foo=bar" {
				t.Errorf("%s: handler saw sandbox %q, OTel baggage %q, metadata baggage %q; want none, foo=bar, foo=bar", k, seen.Sandbox, seen.OTel, seen.Baggage)
			}
		}
		if d := alog.Decisions(); len(d) != len(kinds) || slices.ContainsFunc(d, func(s string) bool { return s != string(audit.Stripped) }) {
			t.Errorf("audit decisions %v; want one stripped per call", d)
		}
	})
}

// TestRejectedErrorInProcess: in an in-process interceptor chain the error
// still unwraps to the sentinels.
func TestRejectedErrorInProcess(t *testing.T) {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("sandbox-id", "NOPE"))
	intercept := serverIn(t, grpcmw.WithTrustedNetworks(loopback)).Unary()
	_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) {
		t.Error("handler called")
		return nil, nil
	})
	if !errors.Is(err, grpcmw.ErrRejected) || !errors.Is(err, propagation.ErrInvalidID) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("err = %v (code %s), want ErrRejected wrapping ErrInvalidID, InvalidArgument", err, status.Code(err))
	}
}
