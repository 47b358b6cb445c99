package httpmw_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newProxyServer(t testing.TB, table *routes.Table, baseline string, opts ...httpmw.ProxyOption) *httptest.Server {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p, err := httpmw.NewProxy(table, "cart", mustURL(t, baseline), append([]httpmw.ProxyOption{httpmw.WithRoundTripper(tr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

func TestProxy(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t,
		routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}},
		routes.Sandbox{ID: "pr-2", Services: map[string]routes.Route{"orders": {Upstream: sandbox.URL}}},
	)
	codec := propagation.Default()
	loopback := httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))
	alog, logger := newAuditLog()
	trusted := newProxyServer(t, tab, baseline.URL, loopback, httpmw.WithLogger(logger))
	untrusted := newProxyServer(t, tab, baseline.URL, httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))
	c := newClient(t, &http.Transport{})

	cases := []struct {
		name       string
		proxy      *httptest.Server
		header     http.Header
		status     int
		server, id string
		audit      []string
	}{
		{"sandbox that overrides the service", trusted, codec.HTTPHeader(propagation.Sandbox{ID: "pr-1", Actor: "alice"}), 200, "sandbox", "pr-1", []string{string(audit.Admitted), string(audit.Routed)}},
		{"sandbox that does not", trusted, codec.HTTPHeader(propagation.Sandbox{ID: "pr-2"}), 200, "baseline", "pr-2", []string{string(audit.Admitted), string(audit.Fallback)}},
		{"production traffic", trusted, http.Header{}, 200, "baseline", "", nil},
		{"baggage only", trusted, http.Header{"Baggage": {"tenant=acme,sandbox.id=pr-1"}}, 200, "sandbox", "pr-1", []string{string(audit.Admitted), string(audit.Routed)}},
		{"untrusted peer", untrusted, codec.HTTPHeader(propagation.Sandbox{ID: "pr-1"}), 200, "baseline", "", nil},
		{"unreadable markers", trusted, http.Header{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=pr-2"}}, 400, "", "", []string{string(audit.Rejected)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(alog.Records())
			hb, hs := baseline.hits.Load(), sandbox.hits.Load()
			req := mustRequest(t, context.Background(), http.MethodGet, tc.proxy.URL+"/items?id=7", nil)
			req.Header = tc.header.Clone()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status != 200 {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status || !strings.Contains(string(body), "conflicting") {
					t.Errorf("status %d %q; want %d naming the conflict", resp.StatusCode, body, tc.status)
				}
				if baseline.hits.Load() != hb || sandbox.hits.Load() != hs {
					t.Errorf("a rejected request reached an upstream")
				}
			} else {
				got := decodeSeen(t, resp)
				if got.Server != tc.server || got.Sandbox != tc.id || got.Path != "/items?id=7" {
					t.Errorf("landed on %s as %q, path %s; want %s as %q, /items?id=7", got.Server, got.Sandbox, got.Path, tc.server, tc.id)
				}
				if tc.id == "" && (got.Header != nil || slices.ContainsFunc(got.Baggage, func(b string) bool { return strings.Contains(b, "sandbox.") })) {
					t.Errorf("production request reached the upstream with markers %q %q", got.Header, got.Baggage)
				}
			}
			if tc.proxy == trusted {
				if d := decisionsSince(alog, before); !slices.Equal(d, tc.audit) {
					t.Errorf("audit %v; want %v", d, tc.audit)
				}
			}
		})
	}
}

func decisionsSince(a *auditLog, n int) []string {
	d := a.Decisions()[n:]
	if len(d) == 0 {
		return nil
	}
	return d
}

func TestProxyForwardedFor(t *testing.T) {
	// The upstream sits behind the proxy and trusts exactly one hop: the
	// client address the proxy appends decides, not what the client sent.
	var xff []string
	up := httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		xff = r.Header.Values("X-Forwarded-For")
		s, _ := propagation.FromContext(r.Context())
		fmt.Fprint(w, s.ID)
	}), httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")), httpmw.WithTrustedHops(1))))
	defer up.Close()
	proxy := newProxyServer(t, newTable(t), up.URL, httpmw.TrustAll())
	c := newClient(t, &http.Transport{})
	req := mustRequest(t, context.Background(), http.MethodGet, proxy.URL, nil)
	req.Header.Set("Sandbox-Id", "pr-1")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(xff) != 1 || !strings.HasPrefix(xff[0], "203.0.113.9, 127.0.0.1") {
		t.Errorf("upstream saw X-Forwarded-For %q; want the client's entry and the proxy's peer appended", xff)
	}
	if string(body) != "pr-1" {
		t.Errorf("upstream saw sandbox %q; want pr-1 (client 127.0.0.1 appended by the proxy is trusted)", body)
	}
}

func TestProxySandboxUnavailable(t *testing.T) {
	baseline := newUpstream(t, "baseline")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: closedAddr(t)}}})
	loopback := httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"))
	c := newClient(t, &http.Transport{})
	hdr := propagation.Default().HTTPHeader(propagation.Sandbox{ID: "pr-1"})

	strict := newProxyServer(t, tab, baseline.URL, loopback)
	req := mustRequest(t, context.Background(), http.MethodGet, strict.URL, nil)
	req.Header = hdr.Clone()
	hits := baseline.hits.Load()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "pr-1") || baseline.hits.Load() != hits {
		t.Errorf("status %d %q, baseline hits +%d; want 503 naming pr-1 and no baseline request", resp.StatusCode, body, baseline.hits.Load()-hits)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	lenient := newProxyServer(t, tab, baseline.URL, loopback, httpmw.WithFallbackOnUnavailable())
	req = mustRequest(t, context.Background(), http.MethodPost, lenient.URL+"/order", strings.NewReader("one cart"))
	req.Header = hdr.Clone()
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSeen(t, resp); got.Server != "baseline" || got.Sandbox != "pr-1" || got.Body != "one cart" {
		t.Errorf("fell back to %s as %q with body %q; want baseline, pr-1, the whole body", got.Server, got.Sandbox, got.Body)
	}
}

// The proxy streams: the client reads the first part of the response
// before the upstream has written the second.
func TestProxyStreams(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "first %s\n", r.Header.Get("Sandbox-Id"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		fmt.Fprintln(w, "second")
	}))
	defer up.Close()
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: up.URL}}})
	proxy := newProxyServer(t, tab, closedURL(t), httpmw.TrustAll())
	c := newClient(t, &http.Transport{})
	req := mustRequest(t, context.Background(), http.MethodGet, proxy.URL, nil)
	req.Header.Set("Sandbox-Id", "pr-1")
	resp, err := c.Do(req)
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	close(release)
	if err != nil || first != "first pr-1\n" {
		t.Errorf("first line %q, %v; want %q before the upstream finished", first, err, "first pr-1\n")
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" {
		t.Errorf("rest %q; want second", rest)
	}
}

func closedURL(t testing.TB) string { return "http://" + closedAddr(t.(*testing.T)) }

// Upgrades are tunnelled to the upstream the sandbox chose.
func TestProxyUpgrade(t *testing.T) {
	upgrader := func(name string) *httptest.Server {
		return httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "echo" {
				http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
				return
			}
			s, _ := propagation.FromContext(r.Context())
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n%s %s\n", name, s.ID)
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo " + line)
			brw.Flush()
		}), httpmw.TrustAll())))
	}
	baseline, sandbox := upgrader("baseline"), upgrader("sandbox")
	defer baseline.Close()
	defer sandbox.Close()
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	proxy := newProxyServer(t, tab, baseline.URL, httpmw.TrustAll())

	for _, tc := range []struct{ id, want string }{{"pr-1", "sandbox pr-1"}, {"", "baseline "}} {
		conn, err := net.Dial("tcp", proxy.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		hdr := ""
		if tc.id != "" {
			hdr = "Sandbox-Id: " + tc.id + "\r\n"
		}
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: cart\r\nConnection: Upgrade\r\nUpgrade: echo\r\n%s\r\n", hdr)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		hello, _ := br.ReadString('\n')
		fmt.Fprintf(conn, "ping\n")
		echoed, _ := br.ReadString('\n')
		conn.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols || hello != tc.want+"\n" || echoed != "echo ping\n" {
			t.Errorf("sandbox %q: status %d, hello %q, echo %q; want 101, %q, echo ping", tc.id, resp.StatusCode, hello, echoed, tc.want)
		}
	}
}

// h2c on both sides of the proxy: a prior-knowledge HTTP/2 client, and an
// HTTP/2-only upstream reached with WithRoundTripper.
func TestProxyH2C(t *testing.T) {
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	h1h2c := h2c
	h1h2c.SetHTTP1(true)

	up := httptest.NewUnstartedServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		fmt.Fprintf(w, "%s %s", r.Proto, s.ID)
	}), httpmw.TrustAll())))
	up.Config.Protocols = &h2c
	up.Start()
	defer up.Close()

	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: up.URL}}})
	upTransport := &http.Transport{Protocols: &h2c}
	defer upTransport.CloseIdleConnections()
	p, err := httpmw.NewProxy(tab, "cart", mustURL(t, closedURL(t)), httpmw.TrustAll(), httpmw.WithRoundTripper(upTransport))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewUnstartedServer(p)
	proxy.Config.Protocols = &h1h2c
	proxy.Start()
	defer proxy.Close()

	c := newClient(t, &http.Transport{Protocols: &h2c})
	req := mustRequest(t, context.Background(), http.MethodGet, proxy.URL, nil)
	req.Header.Set("Sandbox-Id", "pr-1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || string(body) != "HTTP/2.0 pr-1" {
		t.Errorf("client got %s %q; want HTTP/2.0 both ways and sandbox pr-1", resp.Proto, body)
	}
}

func TestNewProxyErrors(t *testing.T) {
	tab := newTable(t)
	for _, tc := range []struct {
		name     string
		table    *routes.Table
		service  string
		baseline *url.URL
	}{
		{"nil baseline", tab, "cart", nil},
		{"relative baseline", tab, "cart", &url.URL{Path: "/x"}},
		{"grpc scheme", tab, "cart", &url.URL{Scheme: "grpc", Host: "x:1"}},
		{"table without service", tab, "", &url.URL{Scheme: "http", Host: "x:1"}},
		{"nil table", nil, "cart", &url.URL{Scheme: "http", Host: "x:1"}},
	} {
		if p, err := httpmw.NewProxy(tc.table, tc.service, tc.baseline); !errors.Is(err, httpmw.ErrConfig) || p != nil {
			t.Errorf("%s: got %v, %v; want an error wrapping ErrConfig", tc.name, p, err)
		}
	}
	if _, err := httpmw.NewProxy(tab, "cart", &url.URL{Scheme: "http", Host: "x:1"}); err != nil {
		t.Errorf("proxy with an empty table: %v", err)
	}
}

// TestNewProxyTransport: the proxy's own transport keeps enough idle
// connections to an upstream that 16 concurrent clients, round after
// round, reuse the connections of the first round instead of dialling
// (http.DefaultTransport keeps 2 per host and dials again each round).
func TestNewProxyTransport(t *testing.T) {
	tr := httpmw.NewProxyTransport()
	if tr.MaxIdleConnsPerHost != httpmw.ProxyMaxIdleConnsPerHost || tr.ResponseHeaderTimeout != httpmw.ProxyResponseHeaderTimeout ||
		tr.TLSHandshakeTimeout != httpmw.ProxyTLSHandshakeTimeout || tr.IdleConnTimeout != httpmw.ProxyIdleConnTimeout || tr.Proxy != nil {
		t.Fatalf("NewProxyTransport settings: %+v", tr)
	}

	const clients, rounds = 16, 5
	var (
		mu       sync.Mutex
		conns    int
		inFlight int                   // requests of the round the upstream holds
		together = make(chan struct{}) // closed when the round's all are in flight
	)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A round's requests are all in flight together, each on a
		// connection of its own: none can take another's, so none of the
		// first round's dials is still under way when the next begins (a
		// sleep here let one finish early, and a late dial's connection
		// made a 17th). Ten seconds bound only a proxy that never has 16.
		mu.Lock()
		if inFlight++; inFlight == clients {
			close(together)
		}
		all := together
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Errorf("the upstream never had the round's %d requests in flight together", clients)
		}
		io.WriteString(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	up.Start()
	defer up.Close()
	p, err := httpmw.NewProxy(newTable(t), "svc", mustURL(t, up.URL), httpmw.TrustAll())
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseIdleConnections()
	proxy := httptest.NewServer(p)
	defer proxy.Close()
	c := newClient(t, &http.Transport{MaxIdleConnsPerHost: 64})

	for range rounds {
		mu.Lock()
		inFlight, together = 0, make(chan struct{})
		mu.Unlock()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				resp, err := c.Get(proxy.URL)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	if conns > clients {
		t.Errorf("the proxy opened %d connections to the upstream for %d rounds of %d concurrent requests, want at most %d",
			conns, rounds, clients, clients)
	}
}
