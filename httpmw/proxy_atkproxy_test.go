package httpmw_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
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
