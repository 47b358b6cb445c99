package httpmw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"time"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

func ExampleNewHandler() {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, ok := propagation.FromContext(r.Context()); ok {
			fmt.Fprintf(w, "sandbox %s of %s", s.ID, s.Actor)
			return
		}
		fmt.Fprint(w, "production")
	})
	// Trust the loopback network only (in a cluster: the pod network).
	h, err := httpmw.NewHandler(api,
		httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")))
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	send := func(h http.Header) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header = h
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s\n", resp.StatusCode, body)
	}
	send(propagation.Default().HTTPHeader(propagation.Sandbox{ID: "pr-42", Actor: "alice"}))
	send(http.Header{})
	send(http.Header{"Sandbox-Id": {"PR 42"}})
	// Output:
	// 200 sandbox pr-42 of alice
	// 200 production
	// 400 bad sandbox markers: propagation: invalid sandbox ID: "PR 42" (want a DNS label: lower-case letters, digits and inner hyphens, at most 63)
}

func ExampleNewRoutingTransport() {
	serve := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s served %s (Sandbox-Id %q)", name, r.URL.RequestURI(), r.Header.Get("Sandbox-Id"))
		}))
	}
	cart, cartPR42 := serve("cart"), serve("cart of pr-42")
	defer cart.Close()
	defer cartPR42.Close()

	table, err := routes.NewStatic([]routes.Sandbox{{
		ID:       "pr-42",
		Services: map[string]routes.Route{"cart": {Upstream: cartPR42.URL}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	transport, err := httpmw.NewRoutingTransport(&http.Transport{}, table, "cart")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	get := func(ctx context.Context) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cart.URL+"/items?id=7", nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(string(body))
	}
	// In a handler wrapped by NewHandler, r.Context() carries the sandbox.
	get(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"}))
	get(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-7"}))
	get(context.Background())
	// Output:
	// cart of pr-42 served /items?id=7 (Sandbox-Id "pr-42")
	// cart served /items?id=7 (Sandbox-Id "pr-7")
	// cart served /items?id=7 (Sandbox-Id "")
}

func ExampleNewProxy() {
	serve := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s served %s", name, r.URL.Path)
		}))
	}
	// A service that does not import sandboxkit, and its pr-42 version.
	legacy, legacyPR42 := serve("legacy"), serve("legacy of pr-42")
	defer legacy.Close()
	defer legacyPR42.Close()

	table, err := routes.NewStatic([]routes.Sandbox{{
		ID:       "pr-42",
		Services: map[string]routes.Route{"legacy": {Upstream: legacyPR42.URL}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	baseline, _ := url.Parse(legacy.URL)
	upstreams := &http.Transport{}
	defer upstreams.CloseIdleConnections()
	proxy, err := httpmw.NewProxy(table, "legacy", baseline,
		httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")),
		httpmw.WithRoundTripper(upstreams))
	if err != nil {
		fmt.Println(err)
		return
	}
	// Other services call the proxy at the legacy service's address.
	front := httptest.NewServer(proxy)
	defer front.Close()
	client := front.Client()
	defer client.CloseIdleConnections()

	for _, id := range []string{"pr-42", ""} {
		req, _ := http.NewRequest(http.MethodGet, front.URL+"/orders", nil)
		if id != "" {
			req.Header.Set("Sandbox-Id", id)
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// legacy of pr-42 served /orders
	// legacy served /orders
}

func ExampleNewTransport() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Sandbox-Id %q", r.Header.Get("Sandbox-Id"))
	}))
	defer srv.Close()
	// Propagation only: the sandbox goes along, the request goes where it
	// was addressed.
	tr, err := httpmw.NewTransport(&http.Transport{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// Sandbox-Id "pr-42"
}

// A misconfiguration is an error from the constructor, never a silent
// default.
func ExampleErrConfig() {
	_, err := httpmw.NewHandler(http.NotFoundHandler(), httpmw.TrustAll(),
		httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))
	fmt.Println(errors.Is(err, httpmw.ErrConfig))
	fmt.Println(err)
	_, err = httpmw.NewRoutingTransport(nil, nil, "cart")
	fmt.Println(err)
	// Output:
	// true
	// httpmw: TrustAll conflicts with WithTrustedNetworks: TrustAll trusts every peer
	// httpmw: NewRoutingTransport: nil route table
}

func ExampleNewMiddleware() {
	sandboxed, err := httpmw.NewMiddleware(httpmw.TrustAll()) // behind an edge that already filters
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/whoami", sandboxed(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		fmt.Fprintf(w, "sandbox %q", s.ID)
	})))
	req := httptest.NewRequest(http.MethodGet, "/whoami", nil)
	req.Header.Set("Baggage", "sandbox.id=pr-42,tenant=acme")
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	fmt.Println(w.Body.String())
	// Output:
	// sandbox "pr-42"
}

// On the server side, a service protects itself from a runaway sandbox:
// over its budget, the sandbox gets 429 (or 503) with Retry-After, and the
// handler does not run; baseline traffic has no budget.
func ExampleWithBreaker() {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 2}},
		breaker.WithClock(func() time.Time { return now })) // a fixed clock keeps the output stable
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "served") })
	h, err := httpmw.NewHandler(api, httpmw.TrustAll(), httpmw.WithBreaker(g))
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	send := func(who string, h http.Header) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header = h
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%s: %d %q Retry-After=%q\n", who, resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	for range 3 {
		send("pr-7", http.Header{"Sandbox-Id": {"pr-7"}})
	}
	send("baseline", http.Header{})
	// Output:
	// pr-7: 200 "served" Retry-After=""
	// pr-7: 200 "served" Retry-After=""
	// pr-7: 429 "breaker: rate limit exceeded for sandbox \"pr-7\" (retry after 1s)\n" Retry-After="1"
	// baseline: 200 "served" Retry-After=""
}

// On the client side, a request over its sandbox's budget is not sent:
// the transport returns the refusal, with its retry-after hint.
func ExampleWithBreaker_transport() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 0.5, Burst: 1}},
		breaker.WithClock(func() time.Time { return now }))
	tr, err := httpmw.NewTransport(&http.Transport{}, httpmw.WithBreaker(g))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-7"})
	for range 2 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			d, _ := breaker.RetryAfter(err)
			fmt.Printf("refused: throttled=%v, retry after %v\n", errors.Is(err, breaker.ErrThrottled), d)
			continue
		}
		resp.Body.Close()
		fmt.Println(resp.Status)
	}
	// Output:
	// 200 OK
	// refused: throttled=true, retry after 2s
}
