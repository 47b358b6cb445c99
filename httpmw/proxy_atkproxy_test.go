package httpmw_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

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
