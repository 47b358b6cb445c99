package grpcmw_test

import (
	"context"
	"fmt"
	"net/http"
	"net/textproto"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// The attack: an untrusted peer's call, through otelgrpc's stats
// handler with the README's propagators and the server interceptors,
// must leave nothing in what the handler holds (its sandbox, incoming
// metadata, OpenTelemetry baggage) that a next hop reads as a marker of
// ours or another tool's routing key: a gRPC hop with the library (or an
// OpenTelemetry one) reading the metadata forwarded as it is, an HTTP hop
// reading it copied onto a request's headers (as grpc-gateway and many
// forwarding handlers do), an OpenTelemetry client sending the context's
// baggage. Each call that carried anything of the kind is audited once.

// mdRead is a forwarded metadata.MD as the next gRPC hop's codec reads it.
type mdRead metadata.MD

func (m mdRead) Get(k string) string {
	if v := m.Values(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (m mdRead) Values(k string) []string { return m[strings.ToLower(k)] }
func (m mdRead) Set(string, string)       {}
func (m mdRead) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// nextHopReads returns what a next hop reads in what a handler running
// with ctx holds, as marker or foreign routing key; admitted, when not
// empty, is the sandbox the handler's call was admitted to, which may be
// read (alone, readable, in the dedicated header and baggage).
func nextHopReads(codec *propagation.Codec, ctx context.Context, admitted string) []string {
	var out []string
	if sb, ok := propagation.FromContext(ctx); ok && sb.ID != admitted {
		out = append(out, "sandbox "+sb.ID+" in the context")
	}
	judge := func(hop string, c otelprop.TextMapCarrier) {
		m, err := codec.Read(c)
		switch {
		case m.Found && admitted == "":
			out = append(out, fmt.Sprintf("%s reads a marker (sandbox %q, err %v)", hop, m.Sandbox.ID, err))
		case m.Found && (err != nil || m.Sandbox.ID != admitted):
			out = append(out, fmt.Sprintf("%s reads sandbox %q, err %v; want %s", hop, m.Sandbox.ID, err, admitted))
		}
		if codec.Foreign(c) {
			out = append(out, hop+" reads another tool's routing key")
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	fwd := metadata.MD{}
	for k, v := range md {
		if !strings.HasPrefix(k, ":") && k != "content-type" && k != "user-agent" && k != "grpc-accept-encoding" && k != "traceparent" {
			fwd[k] = v
		}
	}
	judge("a gRPC hop given the forwarded metadata", mdRead(fwd))
	h := http.Header{}
	for k, v := range fwd {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		h[ck] = append(h[ck], v...)
	}
	judge("an HTTP hop given the metadata as headers", otelprop.HeaderCarrier(h))
	if b := baggage.FromContext(ctx); b.Len() > 0 {
		judge("a hop given the OpenTelemetry baggage", otelprop.HeaderCarrier(http.Header{"Baggage": {b.String()}}))
	}
	sort.Strings(out)
	return out
}

// otelReadme is otelgrpc's server stats handler with the README's
// propagators.
func otelReadme() grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(propagation.NewTextMapPropagator(nil))))
}

// attackCase is metadata an untrusted peer sends.
type attackCase struct {
	name  string
	md    []string
	audit int // records wanted per call
	// atMost: audit records are at most audit per call (gRPC's copy
	// of metadata with a key under two spellings keeps either).
	atMost bool
}

// pairs returns key and each of values as metadata pairs.
func pairs(key string, values []string) []string {
	out := make([]string, 0, 2*len(values))
	for _, v := range values {
		out = append(out, key, v)
	}
	return out
}

func untrustedCases() []attackCase {
	long := strings.Repeat("x", 2000)
	var huge []string
	for i := range 20 {
		huge = append(huge, fmt.Sprintf("k%d=%s", i, long))
	}
	many := make([]string, 600)
	for i := range many {
		many[i] = fmt.Sprintf("m%d=v", i)
	}
	cs := []attackCase{
		{"header", []string{"sandbox-id", "feat-1"}, 1, false},
		{"header with white space", []string{"sandbox-id", " feat-1 "}, 1, false},
		{"header empty", []string{"sandbox-id", ""}, 1, false},
		{"header repeated, conflicting", []string{"sandbox-id", "feat-1", "sandbox-id", "feat-2"}, 1, false},
		{"baggage", []string{"baggage", "sandbox.id=feat-1"}, 1, false},
		{"baggage split", []string{"baggage", "foo=bar", "baggage", "sandbox.id=feat-1"}, 1, false},
		{"baggage percent-encoded key", []string{"baggage", "foo=bar,sandbox%2Eid=feat-1"}, 1, false},
		{"baggage percent-encoded first byte", []string{"baggage", "%73andbox.id=feat-1"}, 1, false},
		{"baggage actor alone", []string{"baggage", "foo=bar", "baggage", "sandbox.actor=mallory"}, 1, false},
		{"baggage ticket alone", []string{"baggage", "sandbox.ticket=v1.x"}, 1, false},
		{"baggage over the scan limits", []string{"baggage", strings.Join(huge, ",") + ",sandbox.id=feat-1"}, 1, false},
		{"baggage with many members", []string{"baggage", strings.Join(many, ",") + ",sandbox.id=feat-1"}, 1, false},
		{"baggage in many values", append(pairs("baggage", many), "baggage", "sandbox.id=feat-1"), 1, false},
		{"member key metadata", []string{"sandbox.id", "feat-1"}, 1, false},
		{"uberctx id", []string{"uberctx-sandbox.id", "feat-1"}, 1, false},
		{"ot-baggage id", []string{"ot-baggage-sandbox.id", "feat-1"}, 1, false},
		{"underscore header", []string{"sandbox_id", "feat-1"}, 1, false},
		{"member actor key alone", []string{"sandbox.actor", "mallory"}, 1, false},
		{"uberctx actor alone", []string{"uberctx-sandbox.actor", "mallory"}, 1, false},
		{"ot-baggage origin alone", []string{"ot-baggage-sandbox.origin", "x"}, 1, false},
		{"uberctx ticket alone", []string{"uberctx-sandbox.ticket", "v1.x"}, 1, false},
		{"underscore uberctx actor alone", []string{"uberctx_sandbox.actor", "mallory"}, 1, false},
		{"signadot header", []string{"uberctx-sd-routing-key", "x"}, 1, false},
		{"signadot baggage", []string{"baggage", "sd-routing-key=x"}, 1, false},
		{"okteto baggage", []string{"baggage", "okteto-divert=x"}, 1, false},
		{"gateway header", []string{"grpc-metadata-sandbox-id", "feat-1"}, 1, false},
		{"gateway baggage", []string{"grpc-metadata-baggage", "sandbox.id=feat-1"}, 1, false},
		{"gateway member key", []string{"grpc-metadata-sandbox.id", "feat-1"}, 1, false},
		{"gateway actor key", []string{"grpc-metadata-sandbox.actor", "mallory"}, 1, false},
		{"gateway uberctx actor key", []string{"grpc-metadata-uberctx-sandbox.actor", "mallory"}, 1, false},
		{"gateway ticket key", []string{"grpc-metadata-sandbox.ticket", "v1.x"}, 1, false},
		{"gateway underscore header", []string{"grpc-metadata-sandbox_id", "feat-1"}, 1, false},
		{"gateway underscore uberctx id", []string{"grpc-metadata-uberctx_sandbox.id", "feat-1"}, 1, false},
		{"gateway signadot header", []string{"grpc-metadata-uberctx-sd-routing-key", "x"}, 1, false},
		{"gateway signadot baggage", []string{"grpc-metadata-baggage", "sd-routing-key=x"}, 1, false},
		{"gateway header beside baggage", []string{"grpc-metadata-sandbox-id", "feat-1", "baggage", "foo=bar"}, 1, false},
		{"binary header", []string{"sandbox-id-bin", "feat-1"}, 0, false},
		{"gateway baggage without markers", []string{"grpc-metadata-baggage", "foo=bar"}, 0, false},
		{"nothing", []string{"baggage", "foo=bar"}, 0, false},
	}
	return cs
}

// runUntrusted sends every case over the four kinds of call to a server
// that does not trust loopback and checks what its handler holds.
func runUntrusted(t *testing.T, cases []attackCase, earlier ...grpc.ServerOption) {
	runUntrustedCodec(t, propagation.Default(), []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, cases, earlier...)
}

// runUntrustedCodec is runUntrusted with the server, its otelgrpc
// propagators and the next hops on codec. A case whose audit is -1 wants
// one record per call when a next hop reads something in what the peer
// sent, none otherwise.
func runUntrustedCodec(t *testing.T, codec *propagation.Codec, policy []grpcmw.ServerOption, cases []attackCase, earlier ...grpc.ServerOption) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log, logger := newAuditLog()
			var mu sync.Mutex
			var leaked []string
			svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				leaked = nextHopReads(codec, ctx, "")
				return "", nil
			}}
			if tc.audit < 0 {
				tc.audit = 0
				if len(nextHopReads(codec, metadata.NewIncomingContext(context.Background(), metadata.Pairs(tc.md...)), "")) > 0 {
					tc.audit = 1
				}
			}
			otel := grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(propagation.NewTextMapPropagator(codec))))
			sopts := append(append([]grpc.ServerOption{otel}, earlier...), serverOpts(t, append(policy, grpcmw.WithLogger(logger), grpcmw.WithCodec(codec))...)...)
			addr := start(t, svc, sopts...)
			client := testpb.NewTestServiceClient(dial(t, addr))
			for i, k := range kinds {
				mu.Lock()
				leaked = nil
				mu.Unlock()
				if _, err := call(metadata.AppendToOutgoingContext(context.Background(), tc.md...), client, k); err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				mu.Lock()
				if len(leaked) != 0 {
					t.Errorf("%s: the handler holds what a next hop reads: %q", k, leaked)
				}
				mu.Unlock()
				if got := len(log.Decisions()); got != (i+1)*tc.audit && !(tc.atMost && got <= (i+1)*tc.audit) {
					t.Errorf("%s: %d audit records after %d calls, want %d each: %q", k, got, i+1, tc.audit, log.Decisions())
				}
				for _, r := range log.Records() {
					if r["decision"] != string(audit.Stripped) || r["reason"] == "" {
						t.Errorf("%s: audit record %v, want stripped with a reason", k, r)
					}
				}
			}
		})
	}
}

// TestUntrustedPeerLeavesNothingForNextHop sends each case from an
// untrusted peer. Before the fix, 12 of them reached the handler: metadata
// named as our actor, origin or ticket key alone (sandbox.actor,
// uberctx-sandbox.actor, ot-baggage-sandbox.origin, uberctx-sandbox.ticket,
// uberctx_sandbox.actor), which a Kafka hop or a Jaeger/OpenTracing
// propagator reads as a marker, and grpc-gateway forms other than those
// of the ID (grpc-metadata-sandbox.actor, -uberctx-sandbox.actor,
// -sandbox.ticket, -sandbox_id, -uberctx_sandbox.id,
// -uberctx-sd-routing-key), which an HTTP hop reads as a marker or a
// Signadot key; and grpc-metadata-baggage without any member of ours was
// audited as stripped.
func TestUntrustedPeerLeavesNothingForNextHop(t *testing.T) {
	runUntrusted(t, untrustedCases())
}

// httpKeys is an earlier layer that hands the calls on with their
// metadata keys in an HTTP header's canonical form (Sandbox-Id), as one
// that converts metadata to an http.Header and back does: grpc-go
// lower-cases what it reads from the wire, but nothing makes a raw
// metadata.MD in the context lower-case.
func httpKeys() []grpc.ServerOption {
	canon := func(ctx context.Context) context.Context {
		md, _ := metadata.FromIncomingContext(ctx)
		raw := metadata.MD{}
		for k, v := range md {
			raw[textproto.CanonicalMIMEHeaderKey(k)] = v
		}
		return metadata.NewIncomingContext(ctx, raw)
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(canon(ctx), req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &rawStream{ServerStream: ss, ctx: canon(ss.Context())})
		}),
	}
}

// rawStream is a grpc.ServerStream with a replaced context.
type rawStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *rawStream) Context() context.Context { return s.ctx }

// TestUntrustedPeerLeavesNothingForNextHopHTTPKeys: the same behind a
// layer that hands on canonical metadata keys (same 12 failures before).
func TestUntrustedPeerLeavesNothingForNextHopHTTPKeys(t *testing.T) {
	runUntrusted(t, untrustedCases(), httpKeys()...)
}

// TestTicketVouchesForItsSandboxOnlyGatewayForms: a valid ticket for feat-1
// admits an untrusted peer into feat-1 and nothing else: grpc-gateway
// forms of markers naming feat-2 (or of another tool's routing key) on
// the same call must not reach the handler, whose copy of its metadata
// onto an HTTP request would send them to a hop that reads them. Before
// the fix all 7 cases reached the handler, unaudited.
func TestTicketVouchesForItsSandboxOnlyGatewayForms(t *testing.T) {
	signer, verifier := testKeys(t)
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice"}
	ticket, err := signer.SignUntil(alice, issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bag := "sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket=" + ticket
	codec := propagation.Default()
	for _, extra := range [][]string{
		{"grpc-metadata-sandbox-id", "feat-2"},
		{"grpc-metadata-baggage", "sandbox.id=feat-2"},
		{"grpc-metadata-sandbox.id", "feat-2"},
		{"grpc-metadata-sandbox.actor", "mallory"},
		{"grpc-metadata-sandbox_id", "feat-2"},
		{"grpc-metadata-uberctx-sd-routing-key", "x"},
		{"grpc-metadata-baggage", "sd-routing-key=x"},
	} {
		t.Run(extra[0]+"="+extra[1], func(t *testing.T) {
			log, logger := newAuditLog()
			var mu sync.Mutex
			var leaked []string
			svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				leaked = nextHopReads(codec, ctx, "feat-1")
				return "", nil
			}}
			sopts := serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier),
				grpcmw.WithClock(func() time.Time { return issued }), grpcmw.WithLogger(logger))
			addr := start(t, svc, append(sopts, otelReadme())...)
			client := testpb.NewTestServiceClient(dial(t, addr))
			for i, k := range kinds {
				seen, err := call(metadata.AppendToOutgoingContext(context.Background(), "baggage", bag, extra[0], extra[1]), client, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seen.Sandbox != "feat-1" {
					t.Errorf("%s: handler ran in sandbox %q, want feat-1", k, seen.Sandbox)
				}
				mu.Lock()
				if len(leaked) != 0 {
					t.Errorf("%s: the handler holds what a next hop reads: %q", k, leaked)
				}
				mu.Unlock()
				// The foreign forms stripped, the sandbox admitted.
				if got := len(log.Decisions()); got != 2*(i+1) {
					t.Errorf("%s: audit decisions %q, want stripped and admitted per call", k, log.Decisions())
				}
			}
		})
	}
}

// earlyLayer is an earlier layer that changes what the server
// interceptors get: f returns the context the rest of the chain sees.
func earlyLayer(f func(context.Context) context.Context) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(f(ctx), req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &rawStream{ServerStream: ss, ctx: f(ss.Context())})
		}),
	}
}

// TestUntrustedPeerCaseVariants: an earlier layer adds metadata under an
// HTTP header's spelling (Baggage, Sandbox-Id) beside grpc-go's
// lower-case keys, here from a legacy x-legacy-baggage. gRPC's lookups
// find the exact key first, and FromIncomingContext keeps one of the two
// spellings at random: what the server interceptors judge and what the
// handler reads must be the same metadata, with nothing of ours in it.
// Before the fix the handler read a copy of its own, which leaked
// sandbox.id=feat-1 in 3 of 3 runs (-count=3) for Baggage and 1 of 3 for
// Grpc-Metadata-Baggage. A spelling that gRPC's copy drops reaches no one
// and is not audited: without the raw metadata, which gRPC does not hand
// out, the interceptors cannot see it.
func TestUntrustedPeerCaseVariants(t *testing.T) {
	for _, tc := range []struct {
		name, key string
	}{{"Baggage", "Baggage"}, {"Sandbox-Id", "Sandbox-Id"}, {"Grpc-Metadata-Baggage", "Grpc-Metadata-Baggage"}} {
		t.Run(tc.name, func(t *testing.T) {
			legacy := earlyLayer(func(ctx context.Context) context.Context {
				md, _ := metadata.FromIncomingContext(ctx)
				if v := md.Get("x-legacy"); len(v) > 0 {
					md[tc.key] = v
					delete(md, "x-legacy")
				}
				return metadata.NewIncomingContext(ctx, md)
			})
			val := "feat-1"
			if strings.HasSuffix(tc.key, "aggage") {
				val = "sandbox.id=feat-1"
			}
			runUntrusted(t, []attackCase{{tc.name, []string{strings.ToLower(tc.key), "foo", "baggage", "foo=bar", "x-legacy", val}, 1, true}}, legacy...)
		})
	}
}

// TestUntrustedPeerEarlyBaggage: an earlier layer (a propagator in
// otelgrpc's propagators reading a form the interceptors do not, here
// simulated) put our members into the context's OpenTelemetry baggage of
// an untrusted peer's call without a sandbox. otelgrpc's client stats
// handler would send them on: they must go, with an audit record, as an
// early sandbox does. Before the fix all 3 cases reached otelgrpc's
// client, unaudited.
func TestUntrustedPeerEarlyBaggage(t *testing.T) {
	for _, members := range []string{"sandbox.id=feat-1", "tenant=acme,sandbox.actor=mallory", "sd-routing-key=x"} {
		t.Run(members, func(t *testing.T) {
			early := earlyLayer(func(ctx context.Context) context.Context {
				if v := metadata.ValueFromIncomingContext(ctx, "x-early"); len(v) > 0 {
					b, err := baggage.Parse(v[0])
					if err != nil {
						panic(err)
					}
					return baggage.ContextWithBaggage(ctx, b)
				}
				return ctx
			})
			runUntrusted(t, []attackCase{{members, []string{"x-early", members}, 1, false}}, early...)
		})
	}
}

// TestUntrustedPeerLeavesNothingForNextHopCodecs runs the cases with the
// codecs an operator may configure, their names in place of the default
// ones: each call that carries what a next hop on that codec reads is
// stripped and audited once, any other is left alone.
func TestUntrustedPeerLeavesNothingForNextHopCodecs(t *testing.T) {
	for _, cc := range []struct {
		name string
		opts []propagation.Option
	}{
		{"signadot", []propagation.Option{propagation.WithSignadot()}},
		{"okteto", []propagation.Option{propagation.WithOkteto()}},
		{"keep foreign", []propagation.Option{propagation.KeepForeignRoutingKeys()}},
		{"mirror", []propagation.Option{propagation.WithBaggageMirror()}},
		{"no header", []propagation.Option{propagation.WithHeader("")}},
		{"own names", []propagation.Option{propagation.WithHeader("X-Route-Sb"), propagation.WithBaggageKeys("route.sb", "route.actor", "route.origin"), propagation.WithTicketKey("route.ticket")}},
	} {
		t.Run(cc.name, func(t *testing.T) {
			codec, err := propagation.NewCodec(cc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			keys := codec.Keys()
			header := codec.Header()
			if header == "" {
				header = "sandbox-id" // now nothing of ours
			}
			names := strings.NewReplacer(
				"sandbox.ticket", keys[3], "sandbox.actor", keys[1], "sandbox.origin", keys[2], "sandbox.id", keys[0],
				"sandbox-id", header, "sandbox_id", strings.ReplaceAll(header, "-", "_"))
			var cases []attackCase
			read := 0
			for _, tc := range untrustedCases() {
				md := make([]string, len(tc.md))
				for i, x := range tc.md {
					md[i] = names.Replace(x)
				}
				cases = append(cases, attackCase{name: tc.name, md: md, audit: -1})
				if len(nextHopReads(codec, metadata.NewIncomingContext(context.Background(), metadata.Pairs(md...)), "")) > 0 {
					read++
				}
			}
			// Not a vacuous run: most cases carry what a hop reads.
			if read < 25 {
				t.Fatalf("only %d of %d cases carry what a next hop reads", read, len(cases))
			}
			t.Logf("%d of %d cases carry what a next hop reads", read, len(cases))
			runUntrustedCodec(t, codec, []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, cases)
		})
	}
}

// TestUntrustedPeerLeavesNothingForNextHopZeroPolicy: the same with
// server interceptors built without any trust option, which trust no
// peer (an operator who forgot WithTrustedNetworks).
func TestUntrustedPeerLeavesNothingForNextHopZeroPolicy(t *testing.T) {
	runUntrustedCodec(t, propagation.Default(), nil, untrustedCases())
}

// TestUntrustedGatewayFormsKeepOthers: stripping an untrusted peer's
// grpc-gateway forms of markers leaves its other grpc-metadata- keys, and
// the other members of its gateway baggage, as they were.
func TestUntrustedGatewayFormsKeepOthers(t *testing.T) {
	log, logger := newAuditLog()
	var mu sync.Mutex
	var held metadata.MD
	svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		held, _ = metadata.FromIncomingContext(ctx)
		return "", nil
	}}
	addr := start(t, svc, serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithLogger(logger))...)
	client := testpb.NewTestServiceClient(dial(t, addr))
	for _, k := range kinds {
		ctx := metadata.AppendToOutgoingContext(context.Background(),
			"grpc-metadata-sandbox-id", "feat-1", "grpc-metadata-x-user", "bob",
			"grpc-metadata-baggage", "foo=bar,sandbox.id=feat-1", "grpc-metadata-grpc-metadata-x", "y")
		if _, err := call(ctx, client, k); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		mu.Lock()
		if got := held.Get("grpc-metadata-sandbox-id"); len(got) != 0 {
			t.Errorf("%s: the handler holds grpc-metadata-sandbox-id %q", k, got)
		}
		for key, want := range map[string]string{"grpc-metadata-x-user": "bob", "grpc-metadata-baggage": "foo=bar", "grpc-metadata-grpc-metadata-x": "y"} {
			if got := held.Get(key); len(got) != 1 || got[0] != want {
				t.Errorf("%s: the handler holds %s %q, want %q", k, key, got, want)
			}
		}
		mu.Unlock()
	}
	if got := log.Decisions(); len(got) != len(kinds) {
		t.Errorf("audit decisions %q, want one per call", got)
	}
}
