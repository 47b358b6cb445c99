package httpmw_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// A service that forwards its incoming headers (a gateway, a BFF) copies
// a Connection header naming our markers as hop-by-hop. Every proxy on the
// way (a mesh sidecar, nginx, httputil.ReverseProxy) removes the headers
// it names, so the next service would see a production request: the
// sandbox's request would write production data. The transport must not
// send its markers as hop-by-hop headers.
func TestTransportMarkersNotHopByHop(t *testing.T) {
	up := newUpstream(t, "orders")
	sidecar := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(mustURL(t, up.URL)) },
		Transport: &http.Transport{},
	})
	defer sidecar.Close()
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{})))
	for _, conn := range []string{"Sandbox-Id", "baggage", "keep-alive, Sandbox-Id , Baggage", "BAGGAGE,sandbox-id"} {
		req := mustRequest(t, sandboxCtx("pr-1", "alice"), http.MethodGet, sidecar.URL+"/orders", nil)
		req.Header.Set("Connection", conn)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeSeen(t, resp); got.Sandbox != "pr-1" {
			t.Errorf("Connection: %s: the service behind the sidecar served the request as %q; want sandbox pr-1", conn, got.Sandbox)
		}
		if v := req.Header.Get("Connection"); v != conn {
			t.Errorf("the caller's request was modified: Connection %q", v)
		}
	}
}

// Host names are case-insensitive and "cart." is "cart": a request that
// reaches the baseline cart under any of those spellings, or at the
// scheme's port named in the map, is a request to cart. Matching the host
// text exactly sent a sandbox's request for the service it overrides to
// the production baseline.
func TestHostRoutingHostSpellings(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	// Every name below resolves to the baseline server, as DNS would.
	addr := baseline.Listener.Addr().String()
	var d net.Dialer
	base := &http.Transport{DialContext: func(ctx context.Context, network, to string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(to); strings.EqualFold(strings.TrimSuffix(h, "."), "cart.shop") {
			to = addr
		}
		return d.DialContext(ctx, network, to)
	}}
	defer base.CloseIdleConnections()
	for _, tc := range []struct {
		key, url string
	}{
		{"cart.shop", "http://CART.shop/items"},
		{"cart.shop", "http://cart.shop./items"},
		{"cart.shop", "http://Cart.Shop.:80/items"},
		{"Cart.Shop", "http://cart.shop/items"},
		{"cart.shop.", "http://cart.shop/items"},
		{"cart.shop:80", "http://cart.shop/items"},
		{"cart.shop:443", "https://cart.shop/items"},
		{"CART.shop:80", "http://cart.shop:80/items"},
	} {
		c := newClient(t, must(httpmw.NewHostRoutingTransport(base, tab, map[string]string{tc.key: "cart"})))
		req := mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, tc.url, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("hosts {%q}, %s: %v", tc.key, tc.url, err)
			continue
		}
		if got := decodeSeen(t, resp); got.Server != "sandbox" {
			t.Errorf("hosts {%q}, %s: sandbox pr-1 served by %s; want its own cart", tc.key, tc.url, got.Server)
		}
	}
	// Two spellings of one host naming different services is a
	// misconfiguration, not a coin toss.
	if _, err := httpmw.NewHostRoutingTransport(nil, tab, map[string]string{"cart.shop": "cart", "CART.shop.": "orders"}); !errors.Is(err, httpmw.ErrConfig) {
		t.Errorf("two spellings of one host for two services: %v; want ErrConfig", err)
	}
}

// A request built without the handler's context (http.NewRequest, a
// context.Background() job) whose headers carry a sandbox's markers, set
// by the caller or copied from the incoming request, goes out as that
// sandbox: the next hop admits it. The routing transport must then route
// it as that sandbox, not send it to the production upstream of a service
// the sandbox overrides; and markers it cannot read are not sent on.
func TestTransportHeaderMarkersWithoutContext(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	alog, logger := newAuditLog()
	c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart", httpmw.WithLogger(logger))))
	for _, h := range []http.Header{
		{"Sandbox-Id": {"pr-1"}},
		{"Baggage": {"tenant=acme,sandbox.id=pr-1"}},
	} {
		req := mustRequest(t, context.Background(), http.MethodGet, baseline.URL+"/items", nil)
		req.Header = h.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" {
			t.Errorf("header %v: served by %s as %q; want pr-1's own cart", h, got.Server, got.Sandbox)
		}
	}
	// The caller's markers go out as they were: a test client's ticket
	// stays with them.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Header.Get("Baggage")))
	}))
	defer plain.Close()
	tc := newClient(t, must(httpmw.NewTransport(&http.Transport{})))
	req := mustRequest(t, context.Background(), http.MethodGet, plain.URL, nil)
	req.Header = propagation.Default().HTTPHeader(propagation.Sandbox{ID: "pr-1"})
	propagation.Default().InjectTicket("t.sig", otelprop.HeaderCarrier(req.Header))
	resp, err := tc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "sandbox.ticket=t.sig") {
		t.Errorf("baggage sent %q; want the caller's ticket kept", b)
	}

	if d := alog.Decisions(); !slices.Contains(d, string(audit.Routed)) {
		t.Errorf("audit %v; want the routing recorded", d)
	}

	hb, hs := baseline.hits.Load(), sandbox.hits.Load()
	req = mustRequest(t, context.Background(), http.MethodGet, baseline.URL+"/items", nil)
	req.Header = http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=pr-2"}}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("conflicting markers on the request: status %d; want an error, nothing sent", resp.StatusCode)
	} else if !errors.Is(err, propagation.ErrConflict) {
		t.Errorf("conflicting markers: %v; want an error wrapping propagation.ErrConflict", err)
	}
	if baseline.hits.Load() != hb || sandbox.hits.Load() != hs {
		t.Error("a request with unreadable markers was sent")
	}
}

// Behind a shared ingress the URL names the ingress and the Host header
// the service (virtual hosting): a request with Host cart.shop is a
// request to cart, wherever it is sent. Looking at the URL host alone sent
// a sandbox's request for cart to the production cart behind the ingress.
func TestHostRoutingVirtualHost(t *testing.T) {
	ingress, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	addr := ingress.Listener.Addr().String()
	var d net.Dialer
	base := &http.Transport{DialContext: func(ctx context.Context, network, to string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(to); h == "ingress.shop" {
			to = addr
		}
		return d.DialContext(ctx, network, to)
	}}
	defer base.CloseIdleConnections()
	c := newClient(t, must(httpmw.NewHostRoutingTransport(base, tab, map[string]string{"cart.shop": "cart"})))
	for _, host := range []string{"cart.shop", "Cart.Shop:80"} {
		req := mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, "http://ingress.shop/items", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Host != host {
			t.Errorf("Host %s through the ingress: served by %s with Host %s; want pr-1's own cart, Host kept", host, got.Server, got.Host)
		}
	}
}

// A sandbox request whose headers already hold another sandbox's markers
// under a spelling the transport did not overwrite (a lower-case map key
// set from gRPC metadata, Sandbox_Id, a header named sandbox.id, a
// Jaeger-style uberctx- header) sent both sandboxes on: our next hop
// refused it, and a hop that reads the last value (a CGI hop for
// Sandbox_Id, OpenTelemetry JS for duplicate baggage) served it as the
// other sandbox. The transport sends the context's sandbox alone.
func TestTransportReplacesStaleMarkers(t *testing.T) {
	var mu sync.Mutex
	var raw http.Header
	next := must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		io.WriteString(w, s.ID)
	}), httpmw.TrustAll()))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		raw = r.Header.Clone()
		mu.Unlock()
		next.ServeHTTP(w, r)
	}))
	defer up.Close()
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{})))
	for _, h := range []http.Header{
		{"baggage": {"sandbox.id=pr-2"}},
		{"sandbox-id": {"pr-2"}},
		{"SANDBOX-ID": {"pr-2"}, "Baggage": {"tenant=acme"}},
		{"Sandbox_Id": {"pr-2"}},
		{"sandbox_id": {"pr-2"}},
		{"Sandbox.Id": {"pr-2"}},
		{"sandbox.id": {"pr-2"}},
		{"uberctx-sandbox.id": {"pr-2"}},
		{"Ot-Baggage-Sandbox.id": {"pr-2"}},
		// grpc-gateway's forms, which a gateway passes on to its gRPC
		// hop as sandbox-id and sandbox.id.
		{"Grpc-Metadata-Sandbox-Id": {"pr-2"}},
		{"grpc-metadata-sandbox-id": {"pr-2"}},
		{"Grpc-Metadata-Sandbox.id": {"pr-2"}},
	} {
		req := mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, up.URL, nil)
		req.Header = h.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		got := raw
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || string(b) != "pr-1" {
			t.Errorf("header %v: the next hop answered %d %q; want pr-1 served", h, resp.StatusCode, b)
		}
		for k, vs := range got {
			for _, v := range vs {
				if strings.Contains(v, "pr-2") {
					t.Errorf("header %v: %s: %s reached the next hop with the request of pr-1", h, k, v)
				}
			}
		}
		if !reflect.DeepEqual(req.Header, h) {
			t.Errorf("the caller's header changed: %v", req.Header)
		}
	}
}

// The proxy fronts services that cannot import the library: CGI-style
// ones (PHP, WSGI, Rack) among them, which read Sandbox_Id as Sandbox-Id.
// A trusted client's Sandbox_Id naming another sandbox rode along with the
// admitted one to the upstream the admitted one picked.
func TestProxySendsTheAdmittedSandboxAlone(t *testing.T) {
	var mu sync.Mutex
	var got http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
	}))
	defer up.Close()
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: up.URL}}})
	proxy := newProxyServer(t, tab, closedURL(t), httpmw.TrustAll())
	for _, hs := range [][]string{
		{"Sandbox-Id: pr-1", "Sandbox_Id: pr-2"},
		{"Baggage: sandbox.id=pr-1", "sandbox_id: pr-2"},
	} {
		if r := sendRaw(t, proxy, hs); r.status != http.StatusOK {
			t.Errorf("%q: status %d %s", hs, r.status, r.body)
			continue
		}
		mu.Lock()
		for k, vs := range got {
			if slices.Contains(vs, "pr-2") {
				t.Errorf("%q: the upstream of pr-1 got %s: pr-2", hs, k)
			}
		}
		mu.Unlock()
	}
}
