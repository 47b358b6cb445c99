package httpmw_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// A route's upstream "http://host:port?" (or with an empty fragment, or
// "/?") passes routes.ValidateUpstream: it is host:port and nothing
// more. The transport took everything after "://" as the host, dialled
// "host:port?", failed, and answered the sandbox's requests 503 (or, with
// WithFallbackOnUnavailable, sent them to the baseline): the sandbox's
// version, up and running, was never reached.
func TestRoutedUpstreamWithEmptyQueryOrFragmentIsReached(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	for _, suffix := range []string{"?", "#", "/?", "/#"} {
		up := sandbox.URL + suffix
		if err := routes.ValidateUpstream(up); err != nil {
			t.Fatalf("%q: the route table refuses it (%v); the test needs one it accepts", up, err)
		}
		tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: up}}})
		t.Run("transport "+suffix, func(t *testing.T) {
			tr := must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart", httpmw.WithFallbackOnUnavailable()))
			c := newClient(t, tr)
			resp, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL+"/items?id=7", nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" || got.Path != "/items?id=7" {
				t.Errorf("upstream %q: landed on %s as %q at %s; want the sandbox as pr-1 at /items?id=7", up, got.Server, got.Sandbox, got.Path)
			}
		})
		t.Run("proxy "+suffix, func(t *testing.T) {
			proxy := newProxyServer(t, tab, baseline.URL, httpmw.TrustAll(), httpmw.WithFallbackOnUnavailable())
			req := mustRequest(t, t.Context(), http.MethodGet, proxy.URL+"/items?id=7", nil)
			req.Header.Set("Sandbox-Id", "pr-1")
			resp, err := newClient(t, &http.Transport{}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" || got.Path != "/items?id=7" {
				t.Errorf("upstream %q: landed on %s as %q at %s; want the sandbox as pr-1 at /items?id=7", up, got.Server, got.Sandbox, got.Path)
			}
		})
	}
}

// NewProxy accepted a baseline with user info (http://svc:secret@host)
// and dropped it: httputil's SetURL copies scheme, host, path and query,
// never the user, so the baseline got no credentials and the operator no
// error. A setting the proxy cannot honour is a misconfiguration.
func TestNewProxyRefusesBaselineUserInfo(t *testing.T) {
	tab := newTable(t)
	for _, u := range []*url.URL{
		{Scheme: "http", Host: "x:1", User: url.UserPassword("svc", "s3cret")},
		{Scheme: "https", Host: "x:1", User: url.User("svc")},
	} {
		p, err := httpmw.NewProxy(tab, "cart", u)
		if !errors.Is(err, httpmw.ErrConfig) || p != nil {
			t.Errorf("baseline with user info: got %v, %v; want an error wrapping ErrConfig", p, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// A ticket is a bearer credential: whoever holds it enters the sandbox
// from any network until it expires. A client that sets it on its
// request (propagation.Codec.InjectTicket) and follows a redirect to
// another host handed it to that host: http.Client copies every header
// but Authorization and cookies to the next hop, and the transport sent
// the markers "as the caller wrote them". Like Authorization, the ticket
// now goes only to the first request's host and its subdomains.
func TestTransportKeepsTicketFromRedirectToAnotherHost(t *testing.T) {
	type hit struct{ ticket, sandbox string }
	hits := make(chan hit, 4)
	var firstURL string
	third := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/back" {
			// Back to the first host: the ticket went through a
			// third party's hands once and does not come back.
			http.Redirect(w, r, firstURL+"/home", http.StatusTemporaryRedirect)
			return
		}
		m, err := propagation.Default().Read(otelprop.HeaderCarrier(r.Header))
		if err != nil {
			t.Errorf("third party: markers unreadable: %v", err)
		}
		hits <- hit{m.Ticket, m.Sandbox.ID}
	}))
	defer third.Close()
	// Another host for the client: localhost, not 127.0.0.1.
	thirdURL := strings.Replace(third.URL, "127.0.0.1", "localhost", 1)
	var sameHost string
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, thirdURL+"/landed", http.StatusTemporaryRedirect)
		case "/home":
			http.Redirect(w, r, sameHost+"/landed", http.StatusTemporaryRedirect)
		case "/round":
			http.Redirect(w, r, thirdURL+"/back", http.StatusTemporaryRedirect)
		}
	}))
	defer first.Close()
	sameHost = third.URL // 127.0.0.1, the first request's host, another port
	firstURL = first.URL
	signer := must(propagation.NewSigner(propagation.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}))
	tk := must(signer.Sign(propagation.Sandbox{ID: "pr-1", Actor: "alice"}, time.Hour))
	codec := propagation.Default()
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{})))
	for _, tc := range []struct {
		path       string
		wantTicket bool
	}{
		{"/away", false},
		{"/home", true},
		{"/round", false},
	} {
		req := mustRequest(t, t.Context(), http.MethodGet, first.URL+tc.path, nil)
		req.Header = codec.HTTPHeader(propagation.Sandbox{ID: "pr-1", Actor: "alice"})
		codec.InjectTicket(tk, otelprop.HeaderCarrier(req.Header))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h := <-hits
		if (h.ticket != "") != tc.wantTicket {
			t.Errorf("redirect %s: the next host got ticket %q; want one: %v", tc.path, h.ticket, tc.wantTicket)
		}
		if h.sandbox != "pr-1" {
			t.Errorf("redirect %s: the next host got sandbox %q; want pr-1 (the tag travels)", tc.path, h.sandbox)
		}
		if got := req.Header.Get("Baggage"); !strings.Contains(got, "sandbox.ticket=") {
			t.Errorf("the caller's header changed: %q", got)
		}
	}
}

// A nil pointer in an http.RoundTripper (var tr *http.Transport left
// unset) is not a nil RoundTripper: NewProxy took it, and every request
// then panicked in http.(*Transport).RoundTrip ("transport is nil"), the
// connection dropped without an answer. So did a transport built on one.
// A transport that cannot work is a misconfiguration, named when the
// proxy or transport is built.
func TestNilPointerRoundTripperIsAConfigError(t *testing.T) {
	var tr *http.Transport
	tab := newTable(t)
	if p, err := httpmw.NewProxy(tab, "cart", &url.URL{Scheme: "http", Host: "x:1"}, httpmw.WithRoundTripper(tr)); !errors.Is(err, httpmw.ErrConfig) || p != nil {
		t.Errorf("NewProxy with a nil *http.Transport: got %v, %v; want an error wrapping ErrConfig", p, err)
	}
	if rt, err := httpmw.NewTransport(tr); !errors.Is(err, httpmw.ErrConfig) || rt != nil {
		t.Errorf("NewTransport on a nil *http.Transport: got %v, %v; want an error wrapping ErrConfig", rt, err)
	}
	if rt, err := httpmw.NewRoutingTransport(tr, tab, "cart"); !errors.Is(err, httpmw.ErrConfig) || rt != nil {
		t.Errorf("NewRoutingTransport on a nil *http.Transport: got %v, %v; want an error wrapping ErrConfig", rt, err)
	}
	if rt, err := httpmw.NewHostRoutingTransport(tr, tab, map[string]string{"cart": "cart"}); !errors.Is(err, httpmw.ErrConfig) || rt != nil {
		t.Errorf("NewHostRoutingTransport on a nil *http.Transport: got %v, %v; want an error wrapping ErrConfig", rt, err)
	}
	// An untyped nil keeps the documented default.
	if _, err := httpmw.NewProxy(tab, "cart", &url.URL{Scheme: "http", Host: "x:1"}, httpmw.WithRoundTripper(nil)); err != nil {
		t.Errorf("WithRoundTripper(nil): %v; want the default transport", err)
	}
	if _, err := httpmw.NewTransport(nil); err != nil {
		t.Errorf("NewTransport(nil): %v; want http.DefaultTransport", err)
	}
}

// Markers in a chunked request's trailers are read by no gate (it judges
// headers, before the body). The proxy must not hand them to the
// upstream, from a trusted client or any other: httputil.ReverseProxy
// clones the trailer map before the body is read, so the upstream gets
// the announced names without values. This guards that, in case a Go
// release starts forwarding request trailers.
func TestProxyDoesNotForwardMarkersInRequestTrailers(t *testing.T) {
	trailers := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		trailers <- r.Trailer.Clone()
	}))
	defer up.Close()
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: closedURL(t)}}})
	for _, trust := range []httpmw.ProxyOption{nil, httpmw.TrustAll()} {
		proxy := newProxyServer(t, tab, up.URL, trust)
		conn, err := net.Dial("tcp", proxy.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Sandbox-Id, Baggage\r\nConnection: close\r\n\r\n"+
			"3\r\nabc\r\n0\r\nSandbox-Id: pr-1\r\nBaggage: sandbox.id=pr-1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("trusted %v: status %d; want the baseline's 200 (the trailers are not markers)", trust != nil, resp.StatusCode)
		}
		for k, v := range <-trailers {
			if len(v) > 0 {
				t.Errorf("trusted %v: the upstream got trailer %s: %q", trust != nil, k, v)
			}
		}
	}
}

// underscoreMarkers are marker headers spelt with '_' for '-', which CGI,
// WSGI, Rack and PHP services read as the markers themselves
// (HTTP_SANDBOX_ID) and the codec does not read at all.
var underscoreMarkers = []string{"Sandbox_Id", "sandbox_id", "Grpc_Metadata_Sandbox_Id", "Uberctx_sandbox.id", "Ot-Baggage_sandbox.id"}

// The proxy fronts services that cannot import the library, CGI-style
// ones among them. A trusted client's Sandbox_Id: pr-1, alone, was no
// marker to the proxy's gate (it reads none in that spelling) and went to
// the baseline upstream as it was, unaudited, where a CGI service read it
// as Sandbox-Id and served pr-1 on the baseline of a service pr-1
// overrides. A marker the proxy cannot read, from a trusted source, is
// answered 400 like every other; an untrusted client's is stripped.
func TestProxyRefusesUnderscoreMarkerFromTrustedClient(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	alog, logger := newAuditLog()
	trusted := newProxyServer(t, tab, baseline.URL, httpmw.TrustAll(), httpmw.WithLogger(logger))
	for _, k := range underscoreMarkers {
		before := len(alog.Records())
		hb, hs := baseline.hits.Load(), sandbox.hits.Load()
		r := sendRaw(t, trusted, []string{k + ": pr-1"})
		if r.status != http.StatusBadRequest || !strings.Contains(strings.ToLower(r.body), strings.ToLower(k)) { // the server canonicalises Sandbox_Id as Sandbox_id
			t.Errorf("trusted %s: status %d %q; want 400 naming the header", k, r.status, r.body)
		}
		if baseline.hits.Load() != hb || sandbox.hits.Load() != hs {
			t.Errorf("trusted %s: the request reached an upstream", k)
		}
		if d := decisionsSince(alog, before); !slices.Equal(d, []string{string(audit.Rejected)}) {
			t.Errorf("trusted %s: audit %v; want one rejected record", k, d)
		}
	}
	// Beside a marker the proxy reads, the underscore spelling is dropped
	// and the admitted sandbox alone goes on (see
	// TestProxySendsTheAdmittedSandboxAlone); from an untrusted client it
	// is stripped.
	untrusted := newProxyServer(t, tab, baseline.URL)
	for _, k := range underscoreMarkers {
		r := sendRaw(t, untrusted, []string{k + ": pr-1"})
		if r.status != http.StatusOK || strings.Contains(r.body, "pr-1") {
			t.Errorf("untrusted %s: status %d %s; want 200 from the baseline without the marker", k, r.status, r.body)
		}
	}
}

// A caller's request without the sandbox in its context but with
// Sandbox_Id: pr-1 on it (copied from an incoming request) goes out as
// pr-1 to a CGI-style next hop. The transport read no marker in it and
// sent it, unrouted, unbudgeted and unaudited, to the baseline of a
// service pr-1 overrides, while a header it cannot read under another
// name (Sandbox.id) is refused. Now both are refused, nothing sent.
func TestTransportRefusesUnderscoreMarkerWithoutContext(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart")))
	for _, k := range underscoreMarkers {
		for _, with := range []http.Header{{}, {"Sandbox-Id": {"pr-1"}}} {
			hb, hs := baseline.hits.Load(), sandbox.hits.Load()
			req := mustRequest(t, t.Context(), http.MethodGet, baseline.URL+"/items", nil)
			req.Header = with.Clone()
			req.Header[k] = []string{"pr-2"}
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Errorf("%v: status %d; want an error, nothing sent", req.Header, resp.StatusCode)
			} else if !errors.Is(err, propagation.ErrMalformed) || !strings.Contains(err.Error(), k) {
				t.Errorf("%v: %v; want an error wrapping propagation.ErrMalformed naming %s", req.Header, err, k)
			}
			if baseline.hits.Load() != hb || sandbox.hits.Load() != hs {
				t.Errorf("%v: the request was sent", req.Header)
			}
		}
	}
	// With the sandbox in the context, the context's sandbox replaces it
	// (TestTransportReplacesStaleMarkers).
	req := mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL+"/items", nil)
	req.Header["Sandbox_Id"] = []string{"pr-2"}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" {
		t.Errorf("context sandbox with a stale Sandbox_Id: served by %s as %q; want pr-1's cart", got.Server, got.Sandbox)
	}
}
