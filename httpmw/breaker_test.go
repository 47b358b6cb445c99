package httpmw_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
)

// tally counts the requests a handler served, by sandbox ("" for
// baseline).
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *tally) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[id]++
}

func (c *tally) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// closeTracker is a request body that records that it was closed.
type closeTracker struct {
	io.Reader
	closed atomic.Bool
}

func (b *closeTracker) Close() error { b.closed.Store(true); return nil }

// expiringCtx is a context whose deadline passes when expire is called
// (Err is then context.DeadlineExceeded), so that a test can let it pass
// while a request is in flight, however slowly the machine got it there.
type expiringCtx struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func newExpiringCtx(parent context.Context) *expiringCtx {
	return &expiringCtx{Context: parent, done: make(chan struct{})}
}

func (c *expiringCtx) expire()               { c.once.Do(func() { close(c.done) }) }
func (c *expiringCtx) Done() <-chan struct{} { return c.done }

func (c *expiringCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// lastRecord returns the last audit record, failing when there is none.
func lastRecord(t *testing.T, a *auditLog) map[string]string {
	t.Helper()
	recs := a.Records()
	if len(recs) == 0 {
		t.Fatal("no audit record")
	}
	return recs[len(recs)-1]
}

func TestTransportBreaker(t *testing.T) {
	var served tally
	started := make(chan struct{}, 1)
	up := httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Sandbox-Id")
		served.add(id)
		switch id {
		case "pr-bad":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "pr-4xx":
			http.NotFound(w, r)
		case "pr-slow":
			started <- struct{}{}
			<-r.Context().Done()
		default:
			io.WriteString(w, "ok")
		}
	}), httpmw.TrustAll())))
	t.Cleanup(up.Close)

	clk := clocktest.New()
	audits, logger := newAuditLog()
	g := breaker.NewGroup(breaker.Settings{
		Budget:      breaker.Budget{Rate: 1, Burst: 1},
		Failures:    2,
		OpenTimeout: time.Minute,
	}, breaker.WithClock(clk.Now))
	// A transport that does not route names the host it sends to.
	upHost := mustURL(t, up.URL).Host
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{}, httpmw.WithBreaker(g), httpmw.WithLogger(logger))))
	do := func(ctx context.Context, url string) (*http.Response, error) {
		resp, err := c.Do(mustRequest(t, ctx, http.MethodGet, url, nil))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}

	t.Run("throttled before sending", func(t *testing.T) {
		if resp, err := do(sandboxCtx("pr-1", "alice"), up.URL); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("first request: %v, %v", resp, err)
		}
		body := &closeTracker{Reader: strings.NewReader("payload")}
		_, err := c.Do(mustRequest(t, sandboxCtx("pr-1", "alice"), http.MethodPost, up.URL, body))
		if !errors.Is(err, breaker.ErrThrottled) || !strings.Contains(err.Error(), "httpmw: request to "+upHost+" refused") {
			t.Fatalf("second request: err = %v; want a refusal wrapping breaker.ErrThrottled", err)
		}
		if d, ok := breaker.RetryAfter(err); !ok || d != time.Second {
			t.Errorf("RetryAfter = %v, %v; want 1s (rate 1/s, bucket empty)", d, ok)
		}
		if n := served.get("pr-1"); n != 1 {
			t.Errorf("upstream served pr-1 %d times; want 1 (the refused request is not sent)", n)
		}
		if !body.closed.Load() {
			t.Error("the refused request's body was not closed")
		}
		rec := lastRecord(t, audits)
		if rec[audit.KeyDecision] != string(audit.Throttled) || rec[audit.KeyID] != "pr-1" || rec[audit.KeyActor] != "alice" ||
			rec[audit.KeyTarget] != upHost || !strings.Contains(rec[audit.KeyReason], "rate limit exceeded") || rec["level"] != "WARN" {
			t.Errorf("audit record %v; want a throttled warning for pr-1/alice naming the rate limit", rec)
		}
	})

	t.Run("baseline untouched", func(t *testing.T) {
		keys := g.Len()
		for i := range 20 {
			if resp, err := do(context.Background(), up.URL); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("baseline request %d: %v, %v", i, resp, err)
			}
		}
		if g.Len() != keys {
			t.Errorf("group holds %d keys after baseline traffic, %d before; baseline must not touch it", g.Len(), keys)
		}
	})

	t.Run("5xx opens the breaker", func(t *testing.T) {
		for i := range 2 {
			clk.Advance(time.Second) // a token
			resp, err := do(sandboxCtx("pr-bad", ""), up.URL)
			if err != nil || resp.StatusCode != http.StatusInternalServerError {
				t.Fatalf("request %d: %v, %v; want the upstream's 500", i, resp, err)
			}
		}
		clk.Advance(time.Second)
		_, err := do(sandboxCtx("pr-bad", ""), up.URL)
		if !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("third request: err = %v; want ErrOpen", err)
		}
		if d, _ := breaker.RetryAfter(err); d != 59*time.Second {
			t.Errorf("RetryAfter = %v; want 59s (opened 1s ago for 1m)", d)
		}
		if n := served.get("pr-bad"); n != 2 {
			t.Errorf("upstream served pr-bad %d times; want 2", n)
		}
	})

	t.Run("4xx is not a failure", func(t *testing.T) {
		for i := range 4 {
			clk.Advance(time.Second)
			if resp, err := do(sandboxCtx("pr-4xx", ""), up.URL); err != nil || resp.StatusCode != http.StatusNotFound {
				t.Fatalf("request %d: %v, %v; want the upstream's 404", i, resp, err)
			}
		}
		if s := g.State("pr-4xx"); s != breaker.StateClosed {
			t.Errorf("breaker %v after 404s; want closed", s)
		}
	})

	t.Run("connection errors are failures", func(t *testing.T) {
		down := "http://" + closedAddr(t)
		for i := range 2 {
			clk.Advance(time.Second)
			if _, err := do(sandboxCtx("pr-down", ""), down); err == nil || errors.Is(err, breaker.ErrOpen) {
				t.Fatalf("request %d: err = %v; want a connection error", i, err)
			}
		}
		clk.Advance(time.Second)
		if _, err := do(sandboxCtx("pr-down", ""), down); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("third request: err = %v; want ErrOpen", err)
		}
	})

	t.Run("cancellation is not a failure, a deadline is", func(t *testing.T) {
		g := breaker.NewGroup(breaker.Settings{Failures: 1})
		c := newClient(t, must(httpmw.NewTransport(&http.Transport{}, httpmw.WithBreaker(g))))
		ctx, cancel := context.WithCancel(sandboxCtx("pr-slow", ""))
		go func() { <-started; cancel() }()
		if _, err := c.Do(mustRequest(t, ctx, http.MethodGet, up.URL, nil)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v; want context.Canceled", err)
		}
		if s := g.State("pr-slow"); s != breaker.StateClosed {
			t.Fatalf("breaker %v after a cancelled request; want closed (Failures is 1)", s)
		}
		// The deadline passes once the upstream serves the request, not
		// after 50ms of real time: on a loaded machine those could pass
		// before the request was sent, and the upstream never started.
		dl := newExpiringCtx(sandboxCtx("pr-slow", ""))
		go func() { <-started; dl.expire() }()
		if _, err := c.Do(mustRequest(t, dl, http.MethodGet, up.URL, nil)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v; want context.DeadlineExceeded", err)
		}
		if s := g.State("pr-slow"); s != breaker.StateOpen {
			t.Errorf("breaker %v after a timed-out request; want open", s)
		}
	})
}

// breakerServer serves app behind the handler middleware with WithBreaker,
// trusting every peer. Every request sends its sandbox ID to served once
// the middleware is done with it.
func breakerServer(t *testing.T, app http.Handler, opts ...httpmw.HandlerOption) (*httptest.Server, chan string) {
	t.Helper()
	served := make(chan string, 16)
	mw := must(httpmw.NewHandler(app, append([]httpmw.HandlerOption{httpmw.TrustAll()}, opts...)...))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Sandbox-Id")
		defer func() { served <- id }()
		mw.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, served
}

type reply struct {
	status int
	header http.Header
	body   string
	err    error
}

// send makes a GET request as sandbox id (none when empty) with actor
// alice.
func send(ctx context.Context, c *http.Client, url, id string) reply {
	return sendMethod(ctx, c, http.MethodGet, url, id)
}

func sendMethod(ctx context.Context, c *http.Client, method, url, id string) reply {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return reply{err: err}
	}
	if id != "" {
		req.Header.Set("Sandbox-Id", id)
		req.Header.Set("Baggage", "sandbox.id="+id+",sandbox.actor=alice")
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

func TestHandlerBreaker(t *testing.T) {
	var calls tally
	started, release := make(chan struct{}, 1), make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.add(r.Header.Get("Sandbox-Id"))
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/block":
			started <- struct{}{}
			<-release
		case "/abort":
			panic(http.ErrAbortHandler) // net/http closes the connection quietly
		case "/wait":
			started <- struct{}{}
			<-r.Context().Done()
		}
	})
	clk := clocktest.New()
	audits, logger := newAuditLog()
	g := breaker.NewGroup(breaker.Settings{
		Budget:      breaker.Budget{Rate: 0.5, Burst: 1, MaxInFlight: 1},
		Failures:    2,
		OpenTimeout: 30 * time.Second,
	}, breaker.WithClock(clk.Now))
	srv, served := breakerServer(t, app, httpmw.WithBreaker(g), httpmw.WithLogger(logger))
	c := newClient(t, &http.Transport{})
	bg := context.Background()
	wantRefusal := func(t *testing.T, r reply, status int, retry, text string) {
		t.Helper()
		if r.err != nil || r.status != status || r.header.Get("Retry-After") != retry ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || !strings.Contains(r.body, text) ||
			!strings.Contains(r.body, "(retry after "+retry+"s)") { // the header's hint, not another
			t.Fatalf("got %d, Retry-After %q, %q, body %q, err %v; want %d, Retry-After %q, text/plain naming %q and the same hint",
				r.status, r.header.Get("Retry-After"), r.header.Get("Content-Type"), r.body, r.err, status, retry, text)
		}
	}

	t.Run("over the rate: 429", func(t *testing.T) {
		if r := send(bg, c, srv.URL+"/", "pr-1"); r.status != http.StatusOK {
			t.Fatalf("first request: %+v", r)
		}
		wantRefusal(t, send(bg, c, srv.URL+"/", "pr-1"), http.StatusTooManyRequests, "2", `rate limit exceeded for sandbox "pr-1"`)
		// 1.7s to the next token: the header rounds up to 2, and the body
		// says 2s as well, not 1.7s.
		clk.Advance(300 * time.Millisecond)
		wantRefusal(t, send(bg, c, srv.URL+"/", "pr-1"), http.StatusTooManyRequests, "2", `rate limit exceeded for sandbox "pr-1"`)
		if n := calls.get("pr-1"); n != 1 {
			t.Errorf("handler ran %d times for pr-1; want 1", n)
		}
		rec := lastRecord(t, audits)
		if rec[audit.KeyDecision] != string(audit.Throttled) || rec[audit.KeyID] != "pr-1" || rec[audit.KeyActor] != "alice" ||
			rec[audit.KeyPeer] == "" || !strings.Contains(rec[audit.KeyReason], "rate limit exceeded") {
			t.Errorf("audit record %v; want throttled pr-1/alice with peer and reason", rec)
		}
	})

	t.Run("too many in flight: 503", func(t *testing.T) {
		first := make(chan reply)
		go func() { first <- send(bg, c, srv.URL+"/block", "pr-2") }()
		<-started
		clk.Advance(2 * time.Second) // a token: the cap refuses, not the rate
		wantRefusal(t, send(bg, c, srv.URL+"/", "pr-2"), http.StatusServiceUnavailable, "1", "too many calls in flight")
		close(release)
		if r := <-first; r.status != http.StatusOK {
			t.Fatalf("blocked request: %+v", r)
		}
		<-served
	})

	t.Run("5xx opens the breaker: 503", func(t *testing.T) {
		for range 2 {
			clk.Advance(2 * time.Second)
			if r := send(bg, c, srv.URL+"/fail", "pr-3"); r.status != http.StatusInternalServerError {
				t.Fatalf("failing request: %+v", r)
			}
		}
		clk.Advance(2 * time.Second)
		wantRefusal(t, send(bg, c, srv.URL+"/", "pr-3"), http.StatusServiceUnavailable, "28", "circuit breaker is open")
		if n := calls.get("pr-3"); n != 2 {
			t.Errorf("handler ran %d times for pr-3; want 2", n)
		}
	})

	t.Run("a panic is a failure", func(t *testing.T) {
		for range 2 {
			clk.Advance(2 * time.Second)
			// POST: the client does not retry it on a new connection.
			if r := sendMethod(bg, c, http.MethodPost, srv.URL+"/abort", "pr-4"); r.err == nil {
				t.Fatalf("aborted request: %+v; want a broken connection", r)
			}
		}
		clk.Advance(2 * time.Second)
		wantRefusal(t, send(bg, c, srv.URL+"/", "pr-4"), http.StatusServiceUnavailable, "28", "circuit breaker is open")
	})

	t.Run("a client going away is not a failure", func(t *testing.T) {
		for drain := len(served); drain > 0; drain-- {
			<-served
		}
		for range 2 {
			clk.Advance(2 * time.Second)
			ctx, cancel := context.WithCancel(bg)
			go func() { <-started; cancel() }()
			if r := send(ctx, c, srv.URL+"/wait", "pr-5"); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("cancelled request: %+v", r)
			}
			<-served // the middleware has reported the outcome
		}
		clk.Advance(2 * time.Second)
		if r := send(bg, c, srv.URL+"/", "pr-5"); r.status != http.StatusOK {
			t.Fatalf("after two cancelled requests: %+v; want 200 (breaker closed)", r)
		}
	})

	t.Run("baseline untouched", func(t *testing.T) {
		keys := g.Len()
		for range 10 {
			if r := send(bg, c, srv.URL+"/fail", ""); r.status != http.StatusInternalServerError {
				t.Fatalf("baseline request: %+v", r)
			}
		}
		if g.Len() != keys {
			t.Errorf("group holds %d keys after baseline traffic, %d before", g.Len(), keys)
		}
	})

	t.Run("baseline budget", func(t *testing.T) {
		g := breaker.NewGroup(breaker.Settings{Baseline: &breaker.Budget{Rate: 0.5, Burst: 1}}, breaker.WithClock(clk.Now))
		srv, _ := breakerServer(t, app, httpmw.WithBreaker(g))
		if r := send(bg, c, srv.URL+"/", ""); r.status != http.StatusOK {
			t.Fatalf("first baseline request: %+v", r)
		}
		wantRefusal(t, send(bg, c, srv.URL+"/", ""), http.StatusTooManyRequests, "2", "rate limit exceeded for baseline traffic")
	})
}

func TestProxyBreaker(t *testing.T) {
	up := newUpstream(t, "baseline")
	clk := clocktest.New()

	t.Run("one token per request, refused requests not proxied", func(t *testing.T) {
		g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 2}}, breaker.WithClock(clk.Now))
		p := newProxyServer(t, newTable(t), up.URL, httpmw.TrustAll(), httpmw.WithBreaker(g))
		c := newClient(t, &http.Transport{})
		hits := up.hits.Load()
		var got []int
		for range 3 {
			got = append(got, send(context.Background(), c, p.URL+"/items", "pr-1").status)
		}
		if got[0] != 200 || got[1] != 200 || got[2] != http.StatusTooManyRequests || up.hits.Load()-hits != 2 {
			t.Errorf("statuses %v, upstream hits %d; want 200 200 429 and 2 hits (burst 2)", got, up.hits.Load()-hits)
		}
	})

	t.Run("the proxy's 502 is a failure", func(t *testing.T) {
		g := breaker.NewGroup(breaker.Settings{Failures: 2, OpenTimeout: 10 * time.Second}, breaker.WithClock(clk.Now))
		p := newProxyServer(t, newTable(t), closedURL(t), httpmw.TrustAll(), httpmw.WithBreaker(g))
		c := newClient(t, &http.Transport{})
		var got []int
		for range 3 {
			got = append(got, send(context.Background(), c, p.URL+"/items", "pr-1").status)
		}
		r := send(context.Background(), c, p.URL+"/items", "pr-1")
		if got[0] != http.StatusBadGateway || got[1] != http.StatusBadGateway || got[2] != http.StatusServiceUnavailable ||
			r.header.Get("Retry-After") != "10" {
			t.Errorf("statuses %v, then Retry-After %q; want 502 502 503 and 10", got, r.header.Get("Retry-After"))
		}
	})
}

// TestBreakerBaselineAllocs: with a breaker, traffic without a sandbox still
// costs no allocation in the middleware, on either side.
func TestBreakerBaselineAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1e9, MaxInFlight: 100}})
	bare := &sandboxOf{}
	mw := must(httpmw.NewHandler(bare, httpmw.TrustAll(), httpmw.WithBreaker(g)))
	w := &nopWriter{h: http.Header{}}
	prod := newRequest("10.1.2.3:5555", "Baggage", "tenant=acme")
	if b, m := testing.AllocsPerRun(1000, func() { bare.ServeHTTP(w, prod) }), testing.AllocsPerRun(1000, func() { mw.ServeHTTP(w, prod) }); m != b {
		t.Errorf("handler, no sandbox: %v allocs with the breaker, %v bare", m, b)
	}

	resp := &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { return resp, nil })
	tr := must(httpmw.NewTransport(base, httpmw.WithBreaker(g)))
	req := mustRequest(t, context.Background(), http.MethodGet, "http://cart.internal/items", nil)
	if b, m := testing.AllocsPerRun(1000, func() { base.RoundTrip(req) }), testing.AllocsPerRun(1000, func() { tr.RoundTrip(req) }); m != b {
		t.Errorf("transport, no sandbox: %v allocs with the breaker, %v bare", m, b)
	}
	if g.Len() != 0 {
		t.Errorf("group holds %d keys", g.Len())
	}

	// For the record: what an admitted sandbox request costs with the
	// breaker (the group itself adds nothing on a warm key).
	sb := newRequest("10.1.2.3:5555", "Sandbox-Id", "pr-1")
	plain := must(httpmw.NewHandler(bare, httpmw.TrustAll()))
	t.Logf("handler, sandbox: %v allocs with the breaker, %v without",
		testing.AllocsPerRun(1000, func() { mw.ServeHTTP(w, sb) }), testing.AllocsPerRun(1000, func() { plain.ServeHTTP(w, sb) }))
}
