package grpcmw_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/compiletest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestConfigErrors: every constructor refuses options that cannot work,
// with an error that wraps ErrConfig and names the option.
func TestConfigErrors(t *testing.T) {
	codecA, err := propagation.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	codecB, err := propagation.NewCodec(propagation.KeepForeignRoutingKeys())
	if err != nil {
		t.Fatal(err)
	}
	var verifiers []*propagation.Verifier
	for _, id := range []string{"a", "b"} {
		v, err := propagation.NewVerifier(propagation.Key{ID: id, Secret: []byte(strings.Repeat(id, 32))})
		if err != nil {
			t.Fatal(err)
		}
		verifiers = append(verifiers, v)
	}
	v1, v2 := verifiers[0], verifiers[1]
	g1 := breaker.NewGroup(breaker.Settings{})
	g2 := breaker.NewGroup(breaker.Settings{})
	l1, l2 := slog.New(slog.DiscardHandler), slog.New(slog.DiscardHandler)
	cc := dial(t, "127.0.0.1:1")
	table := routes.New()

	server := func(opts ...grpcmw.ServerOption) error {
		in, err := grpcmw.NewServerInterceptors(opts...)
		if (in == nil) == (err == nil) {
			t.Errorf("NewServerInterceptors returned (%v, %v)", in, err)
		}
		return err
	}
	client := func(opts ...grpcmw.ClientOption) error {
		out, err := grpcmw.NewClientInterceptors(opts...)
		if (out == nil) == (err == nil) {
			t.Errorf("NewClientInterceptors returned (%v, %v)", out, err)
		}
		return err
	}
	router := func(opts ...grpcmw.RouterOption) error {
		r, err := grpcmw.NewRouter(cc, table, "cart", append([]grpcmw.RouterOption{plaintext}, opts...)...)
		if r != nil {
			r.Close()
		}
		return err
	}

	for _, tc := range []struct {
		name string
		err  error
		opt  string // the option the message names; "" for no error
	}{
		{"server: TrustAll with WithTrustedNetworks", server(grpcmw.TrustAll(), grpcmw.WithTrustedNetworks(loopback)), "TrustAll"},
		{"server: WithTrustedNetworks then TrustAll", server(grpcmw.WithTrustedNetworks(loopback), grpcmw.TrustAll()), "TrustAll"},
		{"server: invalid prefix", server(grpcmw.WithTrustedNetworks(loopback, netip.Prefix{})), "WithTrustedNetworks"},
		{"server: nil codec", server(grpcmw.WithCodec(nil)), "WithCodec"},
		// A Codec not made by NewCodec reads no marker: the interceptors
		// built on it passed every sandbox-id, an untrusted peer's
		// unstripped and a trusted peer's unreadable one as production.
		{"server: zero codec", server(grpcmw.WithCodec(new(propagation.Codec)), grpcmw.WithTrustedNetworks(loopback)), "WithCodec"},
		{"client: zero codec", client(grpcmw.WithCodec(new(propagation.Codec))), "WithCodec"},
		{"router: zero codec", router(grpcmw.WithCodec(new(propagation.Codec))), "WithCodec"},
		{"server: two codecs", server(grpcmw.WithCodec(codecA), grpcmw.WithCodec(codecB)), "WithCodec"},
		{"server: nil verifier", server(grpcmw.WithVerifier(nil)), "WithVerifier"},
		{"server: two verifiers", server(grpcmw.WithVerifier(v1), grpcmw.WithVerifier(v2)), "WithVerifier"},
		{"server: the same verifier twice", server(grpcmw.WithVerifier(v1), grpcmw.WithVerifier(v1)), ""},
		{"server: nil breaker adds nothing", server(grpcmw.WithBreaker(nil)), ""},
		{"server: two breaker groups", server(grpcmw.WithBreaker(g1), grpcmw.WithBreaker(g2)), "WithBreaker"},
		{"server: two breaker groups around a nil one", server(grpcmw.WithBreaker(g1), grpcmw.WithBreaker(nil), grpcmw.WithBreaker(g2)), "WithBreaker"},
		{"server: the same breaker group twice", server(grpcmw.WithBreaker(g1), grpcmw.WithBreaker(nil), grpcmw.WithBreaker(g1)), ""},
		{"client: two breaker groups", client(grpcmw.WithBreaker(g1), grpcmw.WithBreaker(g2)), "WithBreaker"},
		{"router: two breaker groups", router(grpcmw.WithBreaker(g1), grpcmw.WithBreaker(g2)), "WithBreaker"},
		{"server: the last logger counts", server(grpcmw.WithLogger(l1), grpcmw.WithLogger(l2)), ""},
		{"server: the same codec twice", server(grpcmw.WithCodec(codecA), grpcmw.WithCodec(codecA)), ""},
		{"server: nil logger is silence", server(grpcmw.WithLogger(nil), grpcmw.TrustAll()), ""},
		{"client: two codecs", client(grpcmw.WithCodec(codecA), grpcmw.WithCodec(codecB)), "WithCodec"},
		{"client: nil codec", client(grpcmw.WithCodec(nil)), "WithCodec"},
		{"client: codec and breaker", client(grpcmw.WithCodec(codecA), grpcmw.WithBreaker(g1)), ""},
		{"router: two codecs", router(grpcmw.WithCodec(codecA), grpcmw.WithCodec(codecB)), "WithCodec"},
		{"router: nil codec", router(grpcmw.WithCodec(nil)), "WithCodec"},
		{"router: fallback and breaker", router(grpcmw.WithFallbackOnUnavailable(), grpcmw.WithBreaker(g1)), ""},
	} {
		switch {
		case tc.opt == "" && tc.err != nil:
			t.Errorf("%s: %v, want no error", tc.name, tc.err)
		case tc.opt == "":
		case !errors.Is(tc.err, grpcmw.ErrConfig):
			t.Errorf("%s: %v, want an ErrConfig error", tc.name, tc.err)
		case !strings.HasPrefix(tc.err.Error(), "grpcmw: "+tc.opt+": "):
			t.Errorf("%s: %q, want a message starting %q", tc.name, tc.err, "grpcmw: "+tc.opt+": ")
		}
	}
}

// TestNewRouterChecks: missing required arguments and dial options that
// grpc.NewClient refuses are ErrConfig errors, not panics.
func TestNewRouterChecks(t *testing.T) {
	table := routes.New()
	cc := dial(t, "127.0.0.1:1")
	for _, tc := range []struct {
		name string
		f    func() (*grpcmw.Router, error)
		msg  string
	}{
		{"nil baseline", func() (*grpcmw.Router, error) { return grpcmw.NewRouter(nil, table, "cart", plaintext) }, "baseline"},
		{"nil table", func() (*grpcmw.Router, error) { return grpcmw.NewRouter(cc, nil, "cart", plaintext) }, "route table"},
		{"no service", func() (*grpcmw.Router, error) { return grpcmw.NewRouter(cc, table, "", plaintext) }, "service"},
		{"bad service", func() (*grpcmw.Router, error) { return grpcmw.NewRouter(cc, table, "cart.v1.Cart/Get", plaintext) }, "bad service name"},
		{"no credentials", func() (*grpcmw.Router, error) { return grpcmw.NewRouter(cc, table, "cart") }, "credentials"},
	} {
		r, err := tc.f()
		if err == nil || r != nil || !errors.Is(err, grpcmw.ErrConfig) || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "grpcmw: ") {
			t.Errorf("%s: (%v, %v), want an ErrConfig error about %s", tc.name, r, err, tc.msg)
		}
	}
}

// TestNilOptionsSkipped: a nil option in the list changes nothing, in
// every constructor.
func TestNilOptionsSkipped(t *testing.T) {
	in, err := grpcmw.NewServerInterceptors(nil, grpcmw.WithTrustedNetworks(loopback), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := admitted(t, in, "127.0.0.1"); got != "feat-1" {
		t.Errorf("server with nil options: sandbox %q, want feat-1 (the trust option was lost)", got)
	}
	out, err := grpcmw.NewClientInterceptors(nil)
	if err != nil {
		t.Fatal(err)
	}
	var sent metadata.MD
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1"})
	err = out.Unary()(ctx, "/s/m", nil, nil, nil, func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		sent, _ = metadata.FromOutgoingContext(ctx)
		return nil
	})
	if err != nil || len(sent.Get("sandbox-id")) != 1 {
		t.Errorf("client with a nil option: err %v, sent %v; want the sandbox sent", err, sent)
	}
	r, err := grpcmw.NewRouter(nopConn{}, routes.New(), "cart", nil, plaintext, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// TestTrustedNetworksNormalised: an IPv4-mapped IPv6 prefix trusts the
// IPv4 peers it maps (peers are compared unmapped), and an unmasked prefix
// is its network.
func TestTrustedNetworksNormalised(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		peer   string
		want   string
	}{
		{"::ffff:127.0.0.0/104", "127.0.0.1", "feat-1"},
		{"::ffff:127.0.0.0/104", "10.0.0.1", ""},
		{"127.1.2.3/8", "127.0.0.1", "feat-1"},
		{"127.0.0.1/32", "::ffff:127.0.0.1", "feat-1"},
	} {
		in, err := grpcmw.NewServerInterceptors(grpcmw.WithTrustedNetworks(netip.MustParsePrefix(tc.prefix)))
		if err != nil {
			t.Fatal(err)
		}
		if got := admitted(t, in, tc.peer); got != tc.want {
			t.Errorf("prefix %s, peer %s: sandbox %q, want %q", tc.prefix, tc.peer, got, tc.want)
		}
	}
}

// admitted runs in's unary interceptor on a call from peer that carries
// sandbox feat-1 and returns the sandbox the handler saw.
func admitted(t *testing.T, in *grpcmw.ServerInterceptors, addr string) string {
	t.Helper()
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 4000))})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("sandbox-id", "feat-1"))
	var got string
	_, err := in.Unary()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(ctx context.Context, _ any) (any, error) {
		s, _ := propagation.FromContext(ctx)
		got = s.ID
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestOptionRoles: an option given to a constructor that cannot use it
// does not compile. Each snippet is type-checked against the package as
// built; the control snippet shows that the checker accepts what is right.
func TestOptionRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const head = `package snippet

import (
	"google.golang.org/grpc"

	"github.com/sandboxkit/sandboxkit/grpcmw"
)

var _ grpc.ClientConnInterface

func f(cc grpc.ClientConnInterface) {
`
	check := compiletest.New(t, "github.com/sandboxkit/sandboxkit/grpcmw", "google.golang.org/grpc").Check
	for _, tc := range []struct {
		name, body, want string // want: "" compiles, else in the error
	}{
		{"control", `
	grpcmw.NewServerInterceptors(grpcmw.TrustAll(), grpcmw.WithVerifier(nil), grpcmw.WithCodec(nil), grpcmw.WithLogger(nil), grpcmw.WithBreaker(nil))
	grpcmw.NewClientInterceptors(grpcmw.WithCodec(nil), grpcmw.WithLogger(nil), grpcmw.WithBreaker(nil))
	grpcmw.NewRouter(cc, nil, "cart", grpcmw.WithDialOptions(), grpcmw.WithFallbackOnUnavailable(), grpcmw.WithCodec(nil))
	var opts []grpcmw.Option
	grpcmw.NewServerInterceptors(opts[0])
	grpcmw.NewClientInterceptors(opts[0])`, ""},
		{"trust option to the client interceptors", `grpcmw.NewClientInterceptors(grpcmw.TrustAll())`, "does not implement grpcmw.ClientOption"},
		{"trusted networks to the router", `grpcmw.NewRouter(cc, nil, "cart", grpcmw.WithTrustedNetworks())`, "does not implement grpcmw.RouterOption"},
		{"verifier to the router", `grpcmw.NewRouter(cc, nil, "cart", grpcmw.WithVerifier(nil))`, "does not implement grpcmw.RouterOption"},
		{"dial options to the client interceptors", `grpcmw.NewClientInterceptors(grpcmw.WithDialOptions())`, "does not implement grpcmw.ClientOption"},
		{"fallback to the client interceptors", `grpcmw.NewClientInterceptors(grpcmw.WithFallbackOnUnavailable())`, "does not implement grpcmw.ClientOption"},
		{"dial options to the server", `grpcmw.NewServerInterceptors(grpcmw.WithDialOptions())`, "does not implement grpcmw.ServerOption"},
		{"fallback to the server", `grpcmw.NewServerInterceptors(grpcmw.WithFallbackOnUnavailable())`, "does not implement grpcmw.ServerOption"},
		{"a server option is not an Option", `var _ grpcmw.Option = grpcmw.TrustAll()`, "does not implement grpcmw.Option"},
		{"no public clock", `grpcmw.NewServerInterceptors(grpcmw.WithClock(nil))`, "undefined: grpcmw.WithClock"},
	} {
		err := check(head + tc.body + "\n}\n")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want it to compile", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want a compile error with %q", tc.name, err, tc.want)
		}
	}
}
