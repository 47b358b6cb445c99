package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// nopWriter is a ResponseWriter that keeps nothing, so that allocation
// counts measure the middleware alone.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// sandboxOf is a handler that records the sandbox of its requests.
type sandboxOf struct {
	id      string
	headers http.Header
}

func (s *sandboxOf) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	sb, _ := propagation.FromContext(r.Context())
	s.id, s.headers = sb.ID, r.Header
}

func newRequest(remote string, hdr ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://svc.internal/items?id=7", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func TestHandlerAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	bare := &sandboxOf{}
	mw := must(httpmw.NewHandler(bare, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8"))))
	w := &nopWriter{h: http.Header{}}

	// Production traffic, with the headers real traffic carries.
	prod := newRequest("10.1.2.3:5555",
		"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Baggage", "tenant=acme,region=eu-west-1", "Accept", "application/json")
	bareAllocs := testing.AllocsPerRun(1000, func() { bare.ServeHTTP(w, prod) })
	mwAllocs := testing.AllocsPerRun(1000, func() { mw.ServeHTTP(w, prod) })
	if mwAllocs != bareAllocs {
		t.Errorf("request without a sandbox: %v allocs through the middleware, %v bare; want no extra", mwAllocs, bareAllocs)
	}
	if bare.id != "" {
		t.Fatalf("production request got sandbox %q", bare.id)
	}

	// An admitted sandbox: the context and the request copy.
	sb := newRequest("10.1.2.3:5555", "Sandbox-Id", "pr-1", "Baggage", "sandbox.id=pr-1,sandbox.actor=alice,tenant=acme")
	sbAllocs := testing.AllocsPerRun(1000, func() { mw.ServeHTTP(w, sb) })
	if bare.id != "pr-1" {
		t.Fatalf("sandbox request reached the handler as %q", bare.id)
	}
	if extra := sbAllocs - bareAllocs; extra > 2 {
		t.Errorf("admitted sandbox request: %v extra allocs; want at most 2 (context and request copy)", extra)
	}
	t.Logf("allocs: bare %v, baseline %v, sandbox %v", bareAllocs, mwAllocs, sbAllocs)
}

func TestHandlerStripLeavesCallerRequestAlone(t *testing.T) {
	next := &sandboxOf{}
	h := must(httpmw.NewHandler(next, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8"))))
	r := newRequest("203.0.113.7:999", "Sandbox-Id", "pr-1", "Baggage", "a=1,sandbox.id=pr-1,b=2")
	before := r.Header.Clone()
	h.ServeHTTP(httptest.NewRecorder(), r)
	if next.id != "" || next.headers.Get("Sandbox-Id") != "" || next.headers.Get("Baggage") != "a=1,b=2" {
		t.Fatalf("handler saw sandbox %q, headers %v; want production traffic with baggage a=1,b=2", next.id, next.headers)
	}
	if !equalHeaders(r.Header, before) {
		t.Errorf("the incoming request's headers changed: %v, was %v", r.Header, before)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// Peers other than the loopback test client: the trust rules on the
// remote addresses a real server reports.
func TestHandlerPeers(t *testing.T) {
	pfx := netip.MustParsePrefix
	cases := []struct {
		name   string
		opts   []httpmw.HandlerOption
		remote string
		xff    string
		want   string
	}{
		{"IPv6 peer in a trusted network", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("2001:db8::/32"))}, "[2001:db8::1]:443", "", "pr-1"},
		{"IPv6 peer outside", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("2001:db8::/32"))}, "[2001:db9::1]:443", "", ""},
		{"IPv4-mapped prefix matches an IPv4 peer", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("::ffff:10.0.0.0/104"))}, "10.1.2.3:80", "", "pr-1"},
		{"zero hops ignore XFF", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.WithTrustedHops(0)}, "10.1.2.3:1", "203.0.113.7", "pr-1"},
		{"IPv4-mapped peer matches an IPv4 network", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"))}, "[::ffff:10.1.2.3]:80", "", "pr-1"},
		{"unix socket peer", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"))}, "@", "", ""},
		{"peer without port", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"))}, "10.1.2.3", "", "pr-1"},
		{"unmasked prefix", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.1.2.3/8"))}, "10.9.9.9:1", "", "pr-1"},
		{"networks add up", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.WithTrustedNetworks(pfx("192.168.0.0/16"))}, "192.168.1.1:1", "", "pr-1"},
		{"TrustAll", []httpmw.HandlerOption{httpmw.TrustAll()}, "203.0.113.7:1", "", "pr-1"},
		{"IPv6 XFF client in brackets", []httpmw.HandlerOption{httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"), pfx("2001:db8::/32")), httpmw.WithTrustedHops(1)}, "10.1.2.3:1", "[2001:db8::5]:8080", "pr-1"},
		{"nil option is ignored", []httpmw.HandlerOption{nil, httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"))}, "10.1.2.3:1", "", "pr-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := &sandboxOf{}
			r := newRequest(tc.remote, "Sandbox-Id", "pr-1")
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			w := httptest.NewRecorder()
			must(httpmw.NewHandler(next, tc.opts...)).ServeHTTP(w, r)
			if w.Code != http.StatusOK || next.id != tc.want {
				t.Errorf("status %d, sandbox %q; want 200 and %q", w.Code, next.id, tc.want)
			}
		})
	}
}

func TestHandlerCustomCodec(t *testing.T) {
	codec, err := propagation.NewCodec(propagation.WithHeader("X-Env"), propagation.WithSignadot())
	if err != nil {
		t.Fatal(err)
	}
	next := &sandboxOf{}
	h := must(httpmw.NewHandler(next, httpmw.WithCodec(codec), httpmw.TrustAll()))
	for _, r := range []*http.Request{
		newRequest("10.0.0.1:1", "X-Env", "pr-1"),
		newRequest("10.0.0.1:1", "Baggage", "sd-routing-key=pr-1"),
	} {
		next.id = ""
		h.ServeHTTP(httptest.NewRecorder(), r)
		if next.id != "pr-1" {
			t.Errorf("request %v: sandbox %q; want pr-1", r.Header, next.id)
		}
	}
	// The default header is not a marker for this codec.
	next.id = ""
	h.ServeHTTP(httptest.NewRecorder(), newRequest("10.0.0.1:1", "Sandbox-Id", "pr-1"))
	if next.id != "" {
		t.Errorf("Sandbox-Id read by a codec using X-Env")
	}
}

func TestMiddleware(t *testing.T) {
	mw := must(httpmw.NewMiddleware(httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8"))))
	a, b := &sandboxOf{}, &sandboxOf{}
	ha, hb := mw(a), mw(b)
	ha.ServeHTTP(httptest.NewRecorder(), newRequest("10.0.0.1:1", "Sandbox-Id", "pr-1"))
	hb.ServeHTTP(httptest.NewRecorder(), newRequest("203.0.113.1:1", "Sandbox-Id", "pr-2"))
	if a.id != "pr-1" || b.id != "" {
		t.Errorf("sandboxes %q, %q; want pr-1 (trusted) and none (untrusted)", a.id, b.id)
	}
	w := httptest.NewRecorder()
	mw(nil).ServeHTTP(w, newRequest("10.0.0.1:1"))
	if w.Code != http.StatusNotFound {
		t.Errorf("nil handler answered %d; want 404", w.Code)
	}
}

// The admitted sandbox is an attribute of the server span that otelhttp
// starts around the middleware; other requests' spans do not have it.
func TestHandlerSpanAttribute(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	h := otelhttp.NewHandler(
		must(httpmw.NewHandler(echo("svc"), httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))),
		"svc", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(otelprop.TraceContext{}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := newClient(t, srv.Client().Transport)

	for _, hdr := range []string{"", "pr-1"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if hdr != "" {
			req.Header.Set("Baggage", "sandbox.id=pr-1,sandbox.actor=alice")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		decodeSeen(t, resp)
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans; want 2", len(spans))
	}
	attrs := func(i int) map[attribute.Key]string {
		m := map[attribute.Key]string{}
		for _, kv := range spans[i].Attributes() {
			m[kv.Key] = kv.Value.String()
		}
		return m
	}
	if _, ok := attrs(0)[audit.KeyID]; ok {
		t.Errorf("baseline span has sandbox.id: %v", attrs(0))
	}
	if a := attrs(1); a[audit.KeyID] != "pr-1" || a[audit.KeyActor] != "alice" {
		t.Errorf("sandbox span attributes %v; want sandbox.id=pr-1, sandbox.actor=alice", a)
	}
}

// TestStripBehindOTelHandler: otelhttp in front of the middleware, with our
// propagator among its propagators, extracts an untrusted peer's markers
// into the context before the middleware runs. Stripping must take them out
// of the context and its baggage too, or the handler runs in the sandbox
// and an otelhttp client sends the markers on.
func TestStripBehindOTelHandler(t *testing.T) {
	var got propagation.Sandbox
	var gotOK bool
	out := http.Header{}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotOK = propagation.FromContext(r.Context())
		otelprop.Baggage{}.Inject(r.Context(), otelprop.HeaderCarrier(out))
	})
	props := otelprop.NewCompositeTextMapPropagator(otelprop.Baggage{}, propagation.NewPropagator(nil))
	h := otelhttp.NewHandler(must(httpmw.NewHandler(inner, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))),
		"svc", otelhttp.WithPropagators(props))
	h.ServeHTTP(httptest.NewRecorder(), newRequest("192.0.2.1:4000", "Baggage", "foo=bar,sandbox.id=feat-1"))
	if gotOK {
		t.Fatalf("handler ran in sandbox %+v chosen by an untrusted peer", got)
	}
	if b := out.Get("Baggage"); b != "foo=bar" {
		t.Fatalf("baggage an otel client would send on: %q, want foo=bar", b)
	}
}
