package httpmw_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/compiletest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestConfigErrors: every misconfiguration is an error from the
// constructor, wrapping ErrConfig, prefixed with the package and naming
// the option or argument.
func TestConfigErrors(t *testing.T) {
	pfx := netip.MustParsePrefix
	tab := newTable(t)
	base := &url.URL{Scheme: "http", Host: "cart:80"}
	app := http.NotFoundHandler()
	other, err := propagation.NewCodec(propagation.WithHeader("X-Other-Sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	v1, err := propagation.NewVerifier(propagation.Key{ID: "a", Secret: []byte(strings.Repeat("a", 32))})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := propagation.NewVerifier(propagation.Key{ID: "b", Secret: []byte(strings.Repeat("b", 32))})
	if err != nil {
		t.Fatal(err)
	}
	g1 := breaker.NewGroup(breaker.Settings{})
	g2 := breaker.NewGroup(breaker.Settings{})
	handler := func(opts ...httpmw.HandlerOption) func() error {
		return func() error { _, err := httpmw.NewHandler(app, opts...); return err }
	}
	for _, tc := range []struct {
		name  string
		build func() error
		want  string // in the message, after "httpmw: "
	}{
		{"nil handler", func() error { _, err := httpmw.NewHandler(nil); return err }, "NewHandler: nil handler"},
		{"invalid prefix", handler(httpmw.WithTrustedNetworks(netip.Prefix{})), "WithTrustedNetworks: invalid prefix"},
		{"TrustAll and networks", handler(httpmw.TrustAll(), httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"))), "TrustAll conflicts with WithTrustedNetworks"},
		{"networks and TrustAll", handler(httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.TrustAll()), "TrustAll conflicts with WithTrustedNetworks"},
		{"TrustAll and hops", handler(httpmw.TrustAll(), httpmw.WithTrustedHops(1)), "TrustAll conflicts with WithTrustedHops"},
		{"hops without networks", handler(httpmw.WithTrustedHops(1)), "WithTrustedHops needs WithTrustedNetworks"},
		{"negative hops", handler(httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.WithTrustedHops(-1)), "WithTrustedHops: negative hop count"},
		{"two hop counts", handler(httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.WithTrustedHops(1), httpmw.WithTrustedHops(2)), "WithTrustedHops: two different hop counts"},
		{"nil verifier", handler(httpmw.WithVerifier(nil)), "WithVerifier: nil verifier"},
		{"two verifiers", handler(httpmw.WithVerifier(v1), httpmw.WithVerifier(v2)), "WithVerifier: two different verifiers"},
		{"nil codec", handler(httpmw.WithCodec(nil)), "WithCodec: nil codec"},
		{"two codecs", handler(httpmw.WithCodec(propagation.Default()), httpmw.WithCodec(other)), "WithCodec: two different codecs"},
		// The zero Codec reads no marker: a gate built on it would pass
		// every marker on, unjudged.
		{"zero codec", handler(httpmw.WithCodec(new(propagation.Codec))), "WithCodec: codec not made by propagation.NewCodec"},
		{"middleware zero codec", func() error {
			_, err := httpmw.NewMiddleware(httpmw.WithCodec(new(propagation.Codec)))
			return err
		}, "WithCodec: codec not made by propagation.NewCodec"},
		{"proxy zero codec", func() error {
			_, err := httpmw.NewProxy(tab, "cart", base, httpmw.WithCodec(new(propagation.Codec)))
			return err
		}, "WithCodec: codec not made by propagation.NewCodec"},
		{"transport zero codec", func() error {
			_, err := httpmw.NewTransport(nil, httpmw.WithCodec(new(propagation.Codec)))
			return err
		}, "WithCodec: codec not made by propagation.NewCodec"},
		{"routing transport zero codec", func() error {
			_, err := httpmw.NewRoutingTransport(nil, tab, "cart", httpmw.WithCodec(new(propagation.Codec)))
			return err
		}, "WithCodec: codec not made by propagation.NewCodec"},
		{"middleware", func() error {
			_, err := httpmw.NewMiddleware(httpmw.TrustAll(), httpmw.WithTrustedHops(2))
			return err
		}, "TrustAll conflicts with WithTrustedHops"},
		{"two breakers", handler(httpmw.WithBreaker(g1), httpmw.WithBreaker(g2)), "WithBreaker: two different groups"},
		{"transport two breakers", func() error {
			_, err := httpmw.NewTransport(nil, httpmw.WithBreaker(g1), httpmw.WithBreaker(nil), httpmw.WithBreaker(g2))
			return err
		}, "WithBreaker: two different groups"},
		{"proxy two breakers", func() error {
			_, err := httpmw.NewProxy(tab, "cart", base, httpmw.WithBreaker(g1), httpmw.WithBreaker(g2))
			return err
		}, "WithBreaker: two different groups"},
		{"transport nil codec", func() error { _, err := httpmw.NewTransport(nil, httpmw.WithCodec(nil)); return err }, "WithCodec: nil codec"},
		{"routing nil table", func() error { _, err := httpmw.NewRoutingTransport(nil, nil, "cart"); return err }, "NewRoutingTransport: nil route table"},
		{"routing no service", func() error { _, err := httpmw.NewRoutingTransport(nil, tab, ""); return err }, "NewRoutingTransport: empty service name"},
		{"routing bad service", func() error { _, err := httpmw.NewRoutingTransport(nil, tab, "cart "); return err }, `NewRoutingTransport: service "cart ": bad service name`},
		{"hosts nil table", func() error {
			_, err := httpmw.NewHostRoutingTransport(nil, nil, map[string]string{"cart": "cart"})
			return err
		}, "NewHostRoutingTransport: nil route table"},
		{"no hosts", func() error { _, err := httpmw.NewHostRoutingTransport(nil, tab, nil); return err }, "NewHostRoutingTransport: no hosts"},
		{"host without service", func() error {
			_, err := httpmw.NewHostRoutingTransport(nil, tab, map[string]string{"cart:80": ""})
			return err
		}, `NewHostRoutingTransport: host "cart:80": empty service name`},
		{"host with bad service", func() error {
			_, err := httpmw.NewHostRoutingTransport(nil, tab, map[string]string{"cart:80": "cart/v1"})
			return err
		}, `NewHostRoutingTransport: host "cart:80": service "cart/v1": bad service name`},
		{"proxy bad service", func() error { _, err := httpmw.NewProxy(tab, " cart", base); return err }, `NewProxy: service " cart": bad service name`},
		{"proxy nil table", func() error { _, err := httpmw.NewProxy(nil, "cart", base); return err }, "NewProxy: nil route table"},
		{"proxy no service", func() error { _, err := httpmw.NewProxy(tab, "", base); return err }, "NewProxy: empty service name"},
		{"proxy bad baseline", func() error { _, err := httpmw.NewProxy(tab, "cart", &url.URL{Path: "/x"}); return err }, "NewProxy: baseline"},
		{"proxy trust conflict", func() error {
			_, err := httpmw.NewProxy(tab, "cart", base, httpmw.TrustAll(), httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")))
			return err
		}, "TrustAll conflicts with WithTrustedNetworks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.build()
			if !errors.Is(err, httpmw.ErrConfig) {
				t.Fatalf("err = %v, want one wrapping ErrConfig", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "httpmw: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("err = %q, want \"httpmw: ...%s...\"", msg, tc.want)
			}
		})
	}
}

// TestNilOptionsSkipped: a nil option in the list is skipped by every
// constructor, the others still apply.
func TestNilOptionsSkipped(t *testing.T) {
	tab := newTable(t)
	next := &sandboxOf{}
	h, err := httpmw.NewHandler(next, nil, httpmw.TrustAll(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(&nopWriter{h: http.Header{}}, newRequest("203.0.113.7:1", "Sandbox-Id", "pr-1"))
	if next.id != "pr-1" {
		t.Errorf("handler: sandbox %q, want pr-1 (TrustAll after a nil option)", next.id)
	}
	mw, err := httpmw.NewMiddleware(nil, httpmw.TrustAll())
	if err != nil {
		t.Fatal(err)
	}
	next.id = ""
	mw(next).ServeHTTP(&nopWriter{h: http.Header{}}, newRequest("203.0.113.7:1", "Sandbox-Id", "pr-2"))
	if next.id != "pr-2" {
		t.Errorf("middleware: sandbox %q, want pr-2", next.id)
	}
	var nilOpt httpmw.Option
	if _, err := httpmw.NewTransport(nil, nil, nilOpt); err != nil {
		t.Errorf("transport: %v", err)
	}
	if _, err := httpmw.NewRoutingTransport(nil, tab, "cart", nil); err != nil {
		t.Errorf("routing transport: %v", err)
	}
	if _, err := httpmw.NewHostRoutingTransport(nil, tab, map[string]string{"cart": "cart"}, nil); err != nil {
		t.Errorf("host routing transport: %v", err)
	}
	p, err := httpmw.NewProxy(tab, "cart", &url.URL{Scheme: "http", Host: "cart:80"}, nil, httpmw.TrustAll(), nil)
	if err != nil {
		t.Errorf("proxy: %v", err)
	} else {
		p.CloseIdleConnections()
	}
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
	"net/http"
	"net/netip"
	"net/url"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

func f(h http.Handler, tab *routes.Table, u *url.URL, p netip.Prefix) {
`
	c := compiletest.New(t, "github.com/sandboxkit/sandboxkit/httpmw", "github.com/sandboxkit/sandboxkit/routes", "net/http", "net/netip", "net/url")
	for _, tc := range []struct {
		name, body, want string // want: "" compiles, else in the error
	}{
		{"control", `
	httpmw.NewHandler(h, httpmw.TrustAll(), httpmw.WithTrustedNetworks(p), httpmw.WithTrustedHops(1), httpmw.WithVerifier(nil),
		httpmw.WithCodec(nil), httpmw.WithLogger(nil), httpmw.WithBreaker(nil))
	httpmw.NewMiddleware(httpmw.TrustAll(), httpmw.WithLogger(nil))
	httpmw.NewTransport(nil, httpmw.WithCodec(nil), httpmw.WithLogger(nil), httpmw.WithBreaker(nil))
	httpmw.NewRoutingTransport(nil, tab, "cart", httpmw.WithFallbackOnUnavailable(), httpmw.WithLogger(nil))
	httpmw.NewHostRoutingTransport(nil, tab, nil, httpmw.WithFallbackOnUnavailable())
	httpmw.NewProxy(tab, "cart", u, httpmw.TrustAll(), httpmw.WithFallbackOnUnavailable(), httpmw.WithRoundTripper(nil), httpmw.WithBreaker(nil))
	var opts []httpmw.Option
	httpmw.NewHandler(h, opts[0])
	httpmw.NewTransport(nil, opts[0])
	httpmw.NewProxy(tab, "cart", u, opts[0])
	httpmw.NewRoutingTransport(nil, tab, "cart", opts[0])
	var touts []httpmw.TransportOption
	httpmw.NewRoutingTransport(nil, tab, "cart", touts[0])
	httpmw.NewHostRoutingTransport(nil, tab, nil, touts[0])
	var trusts []httpmw.TrustOption
	httpmw.NewHandler(h, trusts[0])
	httpmw.NewProxy(tab, "cart", u, trusts[0])`, ""},
		{"trust option to a transport", `httpmw.NewTransport(nil, httpmw.TrustAll())`, "does not implement httpmw.TransportOption"},
		{"trusted networks to a routing transport", `httpmw.NewRoutingTransport(nil, tab, "cart", httpmw.WithTrustedNetworks(p))`, "does not implement httpmw.RoutingTransportOption"},
		{"round tripper to a host routing transport", `httpmw.NewHostRoutingTransport(nil, tab, nil, httpmw.WithRoundTripper(nil))`, "does not implement httpmw.RoutingTransportOption"},
		{"verifier to a transport", `httpmw.NewTransport(nil, httpmw.WithVerifier(nil))`, "does not implement httpmw.TransportOption"},
		{"hops to a transport", `httpmw.NewTransport(nil, httpmw.WithTrustedHops(1))`, "does not implement httpmw.TransportOption"},
		{"fallback to a transport that does not route", `httpmw.NewTransport(nil, httpmw.WithFallbackOnUnavailable())`, "does not implement httpmw.TransportOption"},
		{"fallback to a handler", `httpmw.NewHandler(h, httpmw.WithFallbackOnUnavailable())`, "does not implement httpmw.HandlerOption"},
		{"round tripper to a handler", `httpmw.NewHandler(h, httpmw.WithRoundTripper(nil))`, "does not implement httpmw.HandlerOption"},
		{"round tripper to a transport", `httpmw.NewTransport(nil, httpmw.WithRoundTripper(nil))`, "does not implement httpmw.TransportOption"},
		{"a trust option is not an Option", `var _ httpmw.Option = httpmw.TrustAll()`, "does not implement httpmw.Option"},
		{"no public clock", `httpmw.NewHandler(h, httpmw.WithClock(nil))`, "undefined: httpmw.WithClock"},
		{"no route table option", `httpmw.NewTransport(nil, httpmw.WithRoutes(tab))`, "undefined: httpmw.WithRoutes"},
		{"no service option", `httpmw.NewTransport(nil, httpmw.WithService("cart"))`, "undefined: httpmw.WithService"},
		{"constructors return errors", `var _ http.Handler = httpmw.NewHandler(h)`, "single-value context"},
	} {
		err := c.Check(head + tc.body + "\n}\n")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want it to compile", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want a compile error with %q", tc.name, err, tc.want)
		}
	}
}

// TestBreakerSameGroupTwice: the same group given twice is one group, and
// a nil group adds nothing; only two different groups conflict.
func TestBreakerSameGroupTwice(t *testing.T) {
	g := breaker.NewGroup(breaker.Settings{})
	if _, err := httpmw.NewHandler(http.NotFoundHandler(), httpmw.WithBreaker(g), httpmw.WithBreaker(nil), httpmw.WithBreaker(g)); err != nil {
		t.Errorf("handler: %v", err)
	}
	if _, err := httpmw.NewTransport(nil, httpmw.WithBreaker(nil), httpmw.WithBreaker(g), httpmw.WithBreaker(g)); err != nil {
		t.Errorf("transport: %v", err)
	}
}

// TestMiddlewareNilHandler: the middleware cannot return an error for a
// nil handler, so it wraps http.NotFoundHandler, as documented.
func TestMiddlewareNilHandler(t *testing.T) {
	mw, err := httpmw.NewMiddleware(httpmw.TrustAll())
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	mw(nil).ServeHTTP(w, newRequest("10.1.2.3:1"))
	if w.Code != http.StatusNotFound {
		t.Errorf("status %d, want 404", w.Code)
	}
}

// TestHostRoutingCopiesHosts: the transport keeps its own copy of the
// host map; the caller's later changes do not reach it.
func TestHostRoutingCopiesHosts(t *testing.T) {
	var got string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.URL.Host
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
	})
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: "http://cart-pr-1:80"}}})
	hosts := map[string]string{"cart:80": "cart"}
	tr, err := httpmw.NewHostRoutingTransport(base, tab, hosts)
	if err != nil {
		t.Fatal(err)
	}
	hosts["cart:80"] = "orders"
	hosts["orders:80"] = "cart"
	for _, tc := range []struct{ url, want string }{
		{"http://cart:80/items", "cart-pr-1:80"},
		{"http://orders:80/items", "orders:80"},
	} {
		req := mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, tc.url, nil)
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s went to %s, want %s", tc.url, got, tc.want)
		}
	}
}
