package routes_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// docServer serves a route document over real HTTP and records the
// conditional headers of each request. Its behaviour is switched by mode.
type docServer struct {
	*httptest.Server

	mu       sync.Mutex
	body     string
	etag     string // sent and honoured when set
	modified string // Last-Modified, sent and honoured when set
	mode     string // "", "hang", "slow body", "always 304"
	requests []http.Header
	answers  []int
}

func newDocServer(t *testing.T, body string) *docServer {
	s := &docServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *docServer) set(f func(s *docServer)) { s.mu.Lock(); defer s.mu.Unlock(); f(s) }

func (s *docServer) log() (reqs []http.Header, answers []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.requests...), append([]int(nil), s.answers...)
}

func (s *docServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	body, etag, modified, mode := s.body, s.etag, s.modified, s.mode
	s.requests = append(s.requests, r.Header.Clone())
	answer := func(code int) { s.answers = append(s.answers, code) }
	switch {
	case mode == "hang" || mode == "slow body":
		answer(http.StatusOK)
	case mode == "always 304",
		etag != "" && r.Header.Get("If-None-Match") == etag,
		etag == "" && modified != "" && r.Header.Get("If-Modified-Since") == modified:
		answer(http.StatusNotModified)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	default:
		answer(http.StatusOK)
	}
	s.mu.Unlock()
	switch mode {
	case "hang": // accept the request, never answer
		<-r.Context().Done()
		return
	case "slow body": // headers at once, then a byte now and then
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, `{"sandboxes":[`)
		w.(http.Flusher).Flush()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				fmt.Fprint(w, " ")
				w.(http.Flusher).Flush()
			}
		}
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if modified != "" {
		w.Header().Set("Last-Modified", modified)
	}
	fmt.Fprint(w, body)
}

// syncUntilErr runs Sync on tbl until Err satisfies done, then stops it.
func syncUntilErr(t *testing.T, tbl *routes.Table, src routes.Source, done func(error) bool, opts ...routes.SyncOption) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- tbl.Sync(ctx, src, opts...) }()
	waitFor(t, "Err to report the failure", func() bool { return done(tbl.Err()) })
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
}

// TestHTTPStalledServer: a server that accepts the request and never
// answers, or sends its body a byte at a time, is a failure that Err
// reports, with the last good load; the last good table stays and
// SyncedAt does not move. The source is HTTP(url, nil): the default client.
func TestHTTPStalledServer(t *testing.T) {
	for _, mode := range []string{"hang", "slow body"} {
		t.Run(mode, func(t *testing.T) {
			srv := newDocServer(t, doc("pr-1", "h:1"))
			src := routes.HTTP(srv.URL, nil)
			tbl := routes.New()
			if err := tbl.Load(context.Background(), src); err != nil {
				t.Fatal(err)
			}
			good := tbl.SyncedAt()
			srv.set(func(s *docServer) { s.mode = mode; s.body = doc("pr-2", "h:2") })

			syncUntilErr(t, tbl, src, func(err error) bool { return err != nil },
				routes.Every(time.Millisecond), routes.FetchTimeout(50*time.Millisecond))
			err := tbl.Err() // stopping Sync mid-fetch must not replace it
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Err = %v, want a deadline", err)
			}
			if want := "last good load: " + good.UTC().Format(time.RFC3339Nano); !strings.Contains(err.Error(), want) {
				t.Fatalf("Err = %v, want it to name the %s", err, want)
			}
			if !tbl.SyncedAt().Equal(good) {
				t.Fatalf("SyncedAt moved to %v while the server stalled", tbl.SyncedAt())
			}
			if _, ok := tbl.Lookup("pr-1", "cart"); !ok {
				t.Fatal("last good table lost")
			}
		})
	}
}

// TestHTTP304WithoutValidator: a 304 to a request that named no document
// is not a sync.
func TestHTTP304WithoutValidator(t *testing.T) {
	srv := newDocServer(t, doc("pr-1", "h:1"))
	srv.set(func(s *docServer) { s.mode = "always 304" })
	tbl := routes.New()
	err := tbl.Load(context.Background(), routes.HTTP(srv.URL, nil))
	if err == nil || !strings.Contains(err.Error(), "304 Not Modified to a request without a validator") {
		t.Fatalf("Load = %v, want the 304 refused", err)
	}
	if !tbl.SyncedAt().IsZero() || tbl.Err() == nil {
		t.Fatalf("SyncedAt = %v, Err = %v after a refused 304", tbl.SyncedAt(), tbl.Err())
	}

	// A server that gave no validator with its 200 cannot answer 304 next.
	srv.set(func(s *docServer) { s.mode = "" })
	src := routes.HTTP(srv.URL, nil)
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	srv.set(func(s *docServer) { s.mode = "always 304" })
	if err := tbl.Load(context.Background(), src); err == nil {
		t.Fatal("a 304 after a 200 without ETag or Last-Modified was accepted")
	}
	reqs, _ := srv.log()
	if last := reqs[len(reqs)-1]; last.Get("If-None-Match") != "" || last.Get("If-Modified-Since") != "" {
		t.Fatalf("validators sent without any received: %v", last)
	}
}

// TestHTTPConditional: the ETag and the Last-Modified of the last document
// go back to the server, a 304 to them is a sync of that document, and a
// new document replaces it.
func TestHTTPConditional(t *testing.T) {
	for _, tt := range []struct {
		name, header, want string
		set                func(s *docServer, v string)
	}{
		{"ETag", "If-None-Match", `"v1"`, func(s *docServer, v string) { s.etag = `"` + v + `"` }},
		{"Last-Modified", "If-Modified-Since", "Fri, 27 Nov 2026 09:00:00 GMT", func(s *docServer, v string) {
			s.modified = map[string]string{"v1": "Fri, 27 Nov 2026 09:00:00 GMT", "v2": "Fri, 27 Nov 2026 10:00:00 GMT"}[v]
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			srv := newDocServer(t, doc("pr-1", "h:1"))
			srv.set(func(s *docServer) { tt.set(s, "v1") })
			clk := clocktest.New()
			tbl := routes.New(routes.WithClock(clk.Now))
			src := routes.HTTP(srv.URL, nil)
			if err := tbl.Load(ctx, src); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
			changed := tbl.Changed()
			if err := tbl.Load(ctx, src); err != nil {
				t.Fatalf("Load answered by 304: %v", err)
			}
			if !tbl.SyncedAt().Equal(clk.Now()) {
				t.Fatalf("a 304 to our validator did not sync: SyncedAt = %v", tbl.SyncedAt())
			}
			select {
			case <-changed:
				t.Fatal("a 304 changed the table")
			default:
			}
			srv.set(func(s *docServer) { s.body = doc("pr-1", "h:2"); tt.set(s, "v2") })
			if err := tbl.Load(ctx, src); err != nil {
				t.Fatal(err)
			}
			if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:2" {
				t.Fatalf("after a new document: %q", up)
			}
			reqs, answers := srv.log()
			if fmt.Sprint(answers) != "[200 304 200]" {
				t.Fatalf("answers %v, want [200 304 200]", answers)
			}
			if reqs[0].Get(tt.header) != "" || reqs[1].Get(tt.header) != tt.want || reqs[2].Get(tt.header) != tt.want {
				t.Fatalf("%s sent: %q, %q, %q", tt.header, reqs[0].Get(tt.header), reqs[1].Get(tt.header), reqs[2].Get(tt.header))
			}
		})
	}
}

// TestSharedSource: two tables on one HTTP source. The source's 304 means
// its last document, which the second table may not hold: each table gets
// the document, none takes "unchanged" for content it lacks.
func TestSharedSource(t *testing.T) {
	ctx := context.Background()
	srv := newDocServer(t, doc("pr-1", "h:1"))
	srv.set(func(s *docServer) { s.etag = `"v1"` })
	src := routes.HTTP(srv.URL, nil)
	a, b := routes.New(), routes.New()
	for _, tbl := range []*routes.Table{a, b} {
		if err := tbl.Load(ctx, src); err != nil {
			t.Fatal(err)
		}
		if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:1" {
			t.Fatalf("table loaded %q", up)
		}
	}
	srv.set(func(s *docServer) { s.body, s.etag = doc("pr-1", "h:2"), `"v2"` })
	if err := a.Load(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := b.Load(ctx, src); err != nil { // the server answers 304
		t.Fatal(err)
	}
	if up, _ := b.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("second table kept %q after a 304 to the new ETag", up)
	}
	// A change by hand is not what the source holds either.
	b.Update(nil)
	if err := b.Load(ctx, src); err != nil {
		t.Fatal(err)
	}
	if up, _ := b.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("after a change by hand, a 304 left %q", up)
	}
	if _, answers := srv.log(); fmt.Sprint(answers) != "[200 304 200 304 304]" {
		t.Fatalf("answers %v", answers)
	}
}

// TestErrSaysSince: Err of a failing source says since when it fails and
// when it last answered.
func TestErrSaysSince(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	src := &flaky{sbs: []routes.Sandbox{{ID: "pr-1"}}}
	format := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

	src.fail.Store(true)
	tbl.Load(ctx, src)
	if want := "(source failing since " + format(clk.Now()) + "; last good load: none yet)"; !strings.HasSuffix(tbl.Err().Error(), want) {
		t.Fatalf("Err = %v, want %s", tbl.Err(), want)
	}
	src.fail.Store(false)
	clk.Advance(time.Minute)
	good := clk.Now()
	if err := tbl.Load(ctx, src); err != nil || tbl.Err() != nil {
		t.Fatalf("Load = %v, Err = %v", err, tbl.Err())
	}
	src.fail.Store(true)
	clk.Advance(time.Minute)
	since := clk.Now()
	tbl.Load(ctx, src)
	clk.Advance(time.Minute)
	err := tbl.Load(ctx, src)
	want := "source down (source failing since " + format(since) + "; last good load: " + format(good) + ")"
	if err == nil || err.Error() != want || tbl.Err().Error() != want || !errors.Is(err, errSourceDown) {
		t.Fatalf("Load = %v, Err = %v; want %s", err, tbl.Err(), want)
	}
}

// TestSyncOptions: options out of range are errors, not defaults.
func TestSyncOptions(t *testing.T) {
	src := &flaky{}
	for _, opt := range []routes.SyncOption{routes.Every(0), routes.FetchTimeout(-1), routes.Jitter(1), routes.Jitter(-0.1)} {
		if err := routes.New().Sync(context.Background(), src, opt); !errors.Is(err, routes.ErrSyncOption) {
			t.Errorf("Sync = %v, want ErrSyncOption", err)
		}
	}
	if src.calls.Load() != 0 {
		t.Error("Sync fetched with a bad option")
	}
}
