package httpmw_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// counted is a real test server that counts the requests it serves.
type counted struct {
	*httptest.Server
	hits atomic.Int32
}

// newUpstream starts a server named name that admits every sandbox
// (it stands behind the transport under test) and echoes what it saw.
func newUpstream(t testing.TB, name string) *counted {
	c := &counted{}
	h := must(httpmw.NewHandler(echo(name), httpmw.TrustAll()))
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func sandboxCtx(id, actor string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: actor})
}

func newTable(t testing.TB, sbs ...routes.Sandbox) *routes.Table {
	t.Helper()
	tab, err := routes.NewStatic(sbs)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestTransportInjects(t *testing.T) {
	plain := httptest.NewServer(echo("plain")) // no sandboxkit: shows the raw headers
	defer plain.Close()
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{})))

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: "alice smith", Origin: "github.com/acme/shop/pull/1"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, plain.URL+"/x", nil)
	req.Header.Set("Baggage", "tenant=acme,sandbox.id=stale")
	req.Header.Set("X-Keep", "1")
	before := req.Header.Clone()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeSeen(t, resp)
	if !slices.Equal(got.Header, []string{"pr-1"}) {
		t.Errorf("Sandbox-Id %q; want [pr-1]", got.Header)
	}
	wantBag := "sandbox.id=pr-1,sandbox.actor=alice%20smith,sandbox.origin=github.com/acme/shop/pull/1,tenant=acme"
	if !slices.Equal(got.Baggage, []string{wantBag}) {
		t.Errorf("baggage %q; want [%s]", got.Baggage, wantBag)
	}
	if !equalHeaders(req.Header, before) {
		t.Errorf("caller's request changed: %v, was %v", req.Header, before)
	}

	// The next hop reads back exactly the sandbox that was sent.
	up := newUpstream(t, "up")
	resp, err = c.Do(mustRequest(t, ctx, http.MethodGet, up.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSeen(t, resp); got.Sandbox != "pr-1" || got.Actor != "alice smith" {
		t.Errorf("next hop saw %q (%q); want pr-1 (alice smith)", got.Sandbox, got.Actor)
	}
}

func mustRequest(t testing.TB, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// spy passes requests on to a real transport and keeps the last one.
type spy struct {
	rt   http.RoundTripper
	last atomic.Pointer[http.Request]
}

func (s *spy) RoundTrip(r *http.Request) (*http.Response, error) {
	s.last.Store(r)
	return s.rt.RoundTrip(r)
}

func TestTransportWithoutSandbox(t *testing.T) {
	plain := httptest.NewServer(echo("plain"))
	defer plain.Close()
	base := &spy{rt: &http.Transport{}}
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: closedAddr(t)}}})
	alog, logger := newAuditLog()
	tr := must(httpmw.NewRoutingTransport(base, tab, "cart", httpmw.WithLogger(logger)))
	defer tr.CloseIdleConnections()

	req := mustRequest(t, context.Background(), http.MethodGet, plain.URL, nil)
	// Not ours to touch: no sandbox in the context. The next hop serves
	// it as pr-9, so it is sandbox traffic (routed and audited as such,
	// see TestTransportHeaderMarkersWithoutContext), but its headers are
	// the caller's.
	req.Header.Set("Sandbox-Id", "pr-9")
	resp, err := tr.RoundTrip(req) // not through http.Client, which copies requests with a timeout
	if err != nil {
		t.Fatal(err)
	}
	got := decodeSeen(t, resp)
	if base.last.Load() != req {
		t.Errorf("the base transport got a copy; want the caller's request itself")
	}
	if !slices.Equal(got.Header, []string{"pr-9"}) || got.Baggage != nil {
		t.Errorf("headers changed: Sandbox-Id %q, baggage %q", got.Header, got.Baggage)
	}
	if d := alog.Decisions(); !slices.Equal(d, []string{string(audit.Fallback)}) {
		t.Errorf("audit %v; want one fallback record for pr-9", d)
	}

	before := len(alog.Records())
	req = mustRequest(t, context.Background(), http.MethodGet, plain.URL, nil)
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	decodeSeen(t, resp)
	if base.last.Load() != req {
		t.Errorf("production request: the base transport got a copy; want the caller's request itself")
	}
	if recs := alog.Records()[before:]; len(recs) != 0 {
		t.Errorf("audit records %v for production traffic", recs)
	}
}

func TestTransportRoutes(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t,
		routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}},
		routes.Sandbox{ID: "pr-2", Services: map[string]routes.Route{"orders": {Upstream: sandbox.URL}}},
	)
	baseURL, _ := url.Parse(baseline.URL)
	sandboxURL, _ := url.Parse(sandbox.URL)

	for _, tc := range []struct {
		name string
		new  func(opts ...httpmw.RoutingTransportOption) (*httpmw.Transport, error)
	}{
		{"NewRoutingTransport", func(opts ...httpmw.RoutingTransportOption) (*httpmw.Transport, error) {
			return httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart", opts...)
		}},
		{"host:port", func(opts ...httpmw.RoutingTransportOption) (*httpmw.Transport, error) {
			return httpmw.NewHostRoutingTransport(&http.Transport{}, tab, map[string]string{baseURL.Host: "cart"}, opts...)
		}},
		{"host name", func(opts ...httpmw.RoutingTransportOption) (*httpmw.Transport, error) {
			return httpmw.NewHostRoutingTransport(&http.Transport{}, tab, map[string]string{baseURL.Hostname(): "cart"}, opts...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alog, logger := newAuditLog()
			c := newClient(t, must(tc.new(httpmw.WithLogger(logger))))
			for _, step := range []struct {
				ctx             context.Context
				server, sandbox string
				host, decision  string
			}{
				{sandboxCtx("pr-1", ""), "sandbox", "pr-1", sandboxURL.Host, string(audit.Routed)},
				{sandboxCtx("pr-2", ""), "baseline", "pr-2", baseURL.Host, string(audit.Fallback)},
				{context.Background(), "baseline", "", baseURL.Host, ""},
			} {
				before := len(alog.Records())
				req := mustRequest(t, step.ctx, http.MethodGet, baseline.URL+"/items?id=7&q=a%20b", nil)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got := decodeSeen(t, resp)
				if got.Server != step.server || got.Sandbox != step.sandbox || got.Path != "/items?id=7&q=a%20b" || got.Host != step.host {
					t.Errorf("sandbox %q landed on %s as %q with path %s, Host %s; want %s, %s, Host %s",
						step.sandbox, got.Server, got.Sandbox, got.Path, got.Host, step.server, step.sandbox, step.host)
				}
				if req.URL.Host != baseURL.Host || req.Host != baseURL.Host {
					t.Errorf("caller's request now goes to %s (Host %s)", req.URL.Host, req.Host)
				}
				recs := alog.Records()[before:]
				switch {
				case step.decision == "" && len(recs) != 0:
					t.Errorf("audit %v; want none", recs)
				case step.decision != "" && (len(recs) != 1 || recs[0][audit.KeyDecision] != step.decision || recs[0][audit.KeyTarget] != "cart" || recs[0][audit.KeyID] != step.sandbox):
					t.Errorf("audit %v; want one %s record for %s, target cart", recs, step.decision, step.sandbox)
				}
			}
		})
	}

	// A host the map does not know is not routed, and not audited.
	alog, logger := newAuditLog()
	c := newClient(t, must(httpmw.NewHostRoutingTransport(&http.Transport{}, tab,
		map[string]string{"cart.internal:80": "cart"}, httpmw.WithLogger(logger))))
	resp, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSeen(t, resp); got.Server != "baseline" || got.Sandbox != "pr-1" {
		t.Errorf("unknown host: landed on %s as %q; want baseline as pr-1", got.Server, got.Sandbox)
	}
	if recs := alog.Records(); len(recs) != 0 {
		t.Errorf("audit %v for a host without service", recs)
	}
}

func TestTransportExpiredSandboxGoesToBaseline(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	tab, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1", Expires: now.Add(time.Minute),
		Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}}},
		routes.WithClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart")))
	for _, want := range []string{"sandbox", "baseline"} {
		resp, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeSeen(t, resp); got.Server != want {
			t.Errorf("at %v: landed on %s; want %s", time.Unix(0, clock.Load()).UTC(), got.Server, want)
		}
		clock.Store(now.Add(time.Minute).UnixNano())
	}
}

func TestTransportSandboxUnavailable(t *testing.T) {
	baseline := newUpstream(t, "baseline")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: "http://" + closedAddr(t)}}})

	t.Run("error, not the baseline", func(t *testing.T) {
		alog, logger := newAuditLog()
		c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart", httpmw.WithLogger(logger))))
		hits := baseline.hits.Load()
		_, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL, nil))
		if !errors.Is(err, httpmw.ErrSandboxUnavailable) {
			t.Fatalf("err = %v; want ErrSandboxUnavailable", err)
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Errorf("err = %v; want the dial error wrapped", err)
		}
		if n := baseline.hits.Load() - hits; n != 0 {
			t.Errorf("the baseline served %d requests meant for the sandbox", n)
		}
		if d := alog.Decisions(); !slices.Equal(d, []string{string(audit.Routed)}) {
			t.Errorf("audit %v; want [routed]", d)
		}
		// Baseline traffic is not affected.
		resp, err := c.Do(mustRequest(t, context.Background(), http.MethodGet, baseline.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		decodeSeen(t, resp)
	})

	t.Run("fallback when allowed", func(t *testing.T) {
		alog, logger := newAuditLog()
		c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart",
			httpmw.WithFallbackOnUnavailable(), httpmw.WithLogger(logger))))
		resp, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodPost, baseline.URL+"/p?x=1", bytes.NewReader([]byte("payload"))))
		if err != nil {
			t.Fatal(err)
		}
		got := decodeSeen(t, resp)
		if got.Server != "baseline" || got.Sandbox != "pr-1" || got.Body != "payload" || got.Path != "/p?x=1" {
			t.Errorf("fell back to %s as %q with body %q, path %s; want baseline, pr-1, payload, /p?x=1", got.Server, got.Sandbox, got.Body, got.Path)
		}
		recs := alog.Records()
		if len(recs) != 2 || recs[0][audit.KeyDecision] != string(audit.Routed) || recs[1][audit.KeyDecision] != string(audit.Fallback) || !strings.Contains(recs[1][audit.KeyReason], "unavailable") {
			t.Errorf("audit %v; want routed, then fallback naming the unavailable upstream", recs)
		}

		// A body that cannot be replayed is not sent twice.
		hits := baseline.hits.Load()
		req := mustRequest(t, sandboxCtx("pr-1", ""), http.MethodPost, baseline.URL, io.NopCloser(strings.NewReader("once")))
		if req.GetBody != nil {
			t.Fatal("test needs a request without GetBody")
		}
		_, err = c.Do(req)
		if !errors.Is(err, httpmw.ErrSandboxUnavailable) || !strings.Contains(err.Error(), "replayed") {
			t.Errorf("err = %v; want ErrSandboxUnavailable naming the body", err)
		}
		if n := baseline.hits.Load() - hits; n != 0 {
			t.Errorf("baseline served %d requests", n)
		}
	})
}

// roundTripFunc is a base transport answering in memory, so that
// allocation counts measure the Transport alone.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTransportAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	resp := &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { return resp, nil })
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: "http://10.0.0.9:8080"}}})
	tr := must(httpmw.NewRoutingTransport(base, tab, "cart"))
	req := mustRequest(t, context.Background(), http.MethodGet, "http://cart.internal/items", nil)
	req.Header.Set("Baggage", "tenant=acme")
	bare := testing.AllocsPerRun(1000, func() { base.RoundTrip(req) })
	got := testing.AllocsPerRun(1000, func() { tr.RoundTrip(req) })
	if got != bare {
		t.Errorf("request without a sandbox: %v allocs through Transport, %v bare; want no extra", got, bare)
	}
}
