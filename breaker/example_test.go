package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// A group gives each sandbox a budget of its own; baseline traffic has none.
func ExampleNewGroup() {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	g := breaker.NewGroup(breaker.Settings{
		Name:   "payments",
		Budget: breaker.Budget{Rate: 2, Burst: 2, MaxInFlight: 10},
	}, breaker.WithClock(func() time.Time { return now })) // a fixed clock keeps the output stable

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	for i := range 3 {
		done, err := g.Allow(ctx)
		if err != nil {
			d, _ := breaker.RetryAfter(err)
			fmt.Printf("call %d: throttled=%v, retry after %v\n", i, errors.Is(err, breaker.ErrThrottled), d)
			continue
		}
		fmt.Printf("call %d: admitted\n", i)
		done(nil)
	}

	done, err := g.Allow(context.Background())
	fmt.Println("baseline:", err)
	done(nil)
	// Output:
	// call 0: admitted
	// call 1: admitted
	// call 2: throttled=true, retry after 500ms
	// baseline: <nil>
}

// Guarding HTTP calls: a sandbox whose calls keep failing is broken off
// alone, for the open timeout.
func ExampleGroup_Allow() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Sandbox-Id") == "pr-7" { // pr-7's build is broken
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer backend.Close()

	g := breaker.NewGroup(breaker.Settings{Failures: 3, OpenTimeout: time.Minute})
	get := func(ctx context.Context) string {
		done, err := g.Allow(ctx)
		if err != nil {
			d, _ := breaker.RetryAfter(err) // HTTP middleware sends it as Retry-After
			return fmt.Sprintf("refused (open: %v), retry after %v", errors.Is(err, breaker.ErrOpen), d.Round(time.Second))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, backend.URL, nil)
		if s, ok := propagation.FromContext(ctx); ok {
			req.Header.Set("Sandbox-Id", s.ID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done(err)
			return err.Error()
		}
		defer resp.Body.Close()
		done(breaker.HTTPStatus(resp.StatusCode))
		return resp.Status
	}

	broken := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-7"})
	for range 4 {
		fmt.Println("pr-7:", get(broken))
	}
	fmt.Println("pr-7 breaker:", g.State("pr-7"))
	fmt.Println("baseline:", get(context.Background()))
	http.DefaultClient.CloseIdleConnections()
	// Output:
	// pr-7: 500 Internal Server Error
	// pr-7: 500 Internal Server Error
	// pr-7: 500 Internal Server Error
	// pr-7: refused (open: true), retry after 1m0s
	// pr-7 breaker: open
	// baseline: 200 OK
}
