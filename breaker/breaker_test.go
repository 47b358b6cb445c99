package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
)

var errBoom = errors.New("connection refused")

// TestStateMachine walks one breaker through every transition on the fake
// clock: closed -> open after the configured failures, refusals with the
// exact remaining open time, half-open with one probe, closed again; and a
// failed probe that reopens it for a fresh open period.
func TestStateMachine(t *testing.T) {
	clk := clocktest.New()
	var log auditLog
	g := breaker.NewGroup(breaker.Settings{Name: "payments", Failures: 3, OpenTimeout: 10 * time.Second},
		breaker.WithClock(clk.Now), breaker.WithLogger(log.logger()))
	ctx := sandboxCtx("pr-1")
	state := func(want breaker.State) {
		t.Helper()
		if got := g.State("pr-1"); got != want {
			t.Fatalf("state = %v, want %v", got, want)
		}
	}

	// Two failures, a success (resets the count), two failures: closed.
	for _, outcome := range []error{errBoom, errBoom, nil, errBoom, errBoom} {
		if err := call(g, ctx, outcome); err != nil {
			t.Fatalf("closed breaker refused: %v", err)
		}
	}
	state(breaker.StateClosed)
	// The third consecutive failure opens it.
	if err := call(g, ctx, errBoom); err != nil {
		t.Fatal(err)
	}
	state(breaker.StateOpen)
	wantRefusal(t, call(g, ctx, nil), breaker.ErrOpen, 10*time.Second)
	clk.Advance(9 * time.Second)
	wantRefusal(t, call(g, ctx, nil), breaker.ErrOpen, time.Second)
	state(breaker.StateOpen)

	// Open period over: one probe at a time.
	clk.Advance(time.Second)
	state(breaker.StateHalfOpen)
	probe, err := g.Allow(ctx)
	if err != nil {
		t.Fatalf("probe refused: %v", err)
	}
	wantRefusal(t, call(g, ctx, nil), breaker.ErrOpen, breaker.BusyRetryAfter)
	state(breaker.StateHalfOpen)
	probe(nil)
	state(breaker.StateClosed)
	if err := call(g, ctx, nil); err != nil {
		t.Fatalf("closed again, but refused: %v", err)
	}

	// Open again; a failed probe reopens it for a whole new period.
	for range 3 {
		call(g, ctx, errBoom)
	}
	state(breaker.StateOpen)
	clk.Advance(10 * time.Second)
	if err := call(g, ctx, errBoom); err != nil {
		t.Fatalf("probe refused: %v", err)
	}
	state(breaker.StateOpen)
	wantRefusal(t, call(g, ctx, nil), breaker.ErrOpen, 10*time.Second)
	clk.Advance(10 * time.Second)
	if err := call(g, ctx, nil); err != nil {
		t.Fatalf("probe refused: %v", err)
	}
	state(breaker.StateClosed)

	// One audit record per change, in order.
	want := []string{
		"circuit breaker closed -> open: 3 consecutive failures",
		"circuit breaker open -> half-open: open timeout over, probing",
		"circuit breaker half-open -> closed: 1 probes in a row succeeded",
		"circuit breaker closed -> open: 3 consecutive failures",
		"circuit breaker open -> half-open: open timeout over, probing",
		"circuit breaker half-open -> open: a probe failed",
		"circuit breaker open -> half-open: open timeout over, probing",
		"circuit breaker half-open -> closed: 1 probes in a row succeeded",
	}
	if got := log.reasons(t); !slices.Equal(got, want) {
		t.Fatalf("audit reasons:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range log.records(t) {
		wantDecision := string(audit.Throttled)
		if reason := r[audit.KeyReason]; strings.HasSuffix(strings.Split(reason, ":")[0], "-> closed") {
			wantDecision = string(audit.Admitted)
		}
		if r[audit.KeyDecision] != wantDecision || r[audit.KeyID] != "pr-1" || r[audit.KeyActor] != "pr-1-owner" || r[audit.KeyTarget] != "payments" {
			t.Errorf("audit record %v", r)
		}
	}
}

// TestCancellationNotCounted shows that the caller's own cancellation is
// neither a failure nor a success, in the closed and the half-open state,
// while a deadline (the dependency was too slow) is a failure.
func TestCancellationNotCounted(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Failures: 2, OpenTimeout: time.Second}, breaker.WithClock(clk.Now))
	ctx := sandboxCtx("pr-2")
	canceled := fmt.Errorf("calling cart: %w", context.Canceled)

	for range 50 {
		if err := call(g, ctx, context.Canceled); err != nil {
			t.Fatal(err)
		}
		call(g, ctx, canceled)
	}
	if s := g.State("pr-2"); s != breaker.StateClosed {
		t.Fatalf("after 100 cancellations: %v, want closed", s)
	}
	// Failure, cancellation, failure: the cancellation does not break the
	// run of failures as a success would.
	call(g, ctx, errBoom)
	call(g, ctx, canceled)
	call(g, ctx, context.DeadlineExceeded)
	if s := g.State("pr-2"); s != breaker.StateOpen {
		t.Fatalf("after failure, cancellation, deadline: %v, want open", s)
	}

	// A cancelled probe frees its slot and leaves the breaker half-open.
	clk.Advance(time.Second)
	if err := call(g, ctx, canceled); err != nil {
		t.Fatalf("probe refused: %v", err)
	}
	if s := g.State("pr-2"); s != breaker.StateHalfOpen {
		t.Fatalf("after a cancelled probe: %v, want half-open", s)
	}
	if err := call(g, ctx, nil); err != nil {
		t.Fatalf("second probe refused: %v", err)
	}
	if s := g.State("pr-2"); s != breaker.StateClosed {
		t.Fatalf("after a good probe: %v, want closed", s)
	}
}

// TestStaleOutcomes shows that a call admitted before the breaker changed
// state cannot move it: a success of a call started while closed does not
// close a half-open breaker, a late failure does not reopen a closed one.
func TestStaleOutcomes(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Failures: 1, OpenTimeout: time.Second}, breaker.WithClock(clk.Now))
	ctx := sandboxCtx("pr-3")

	slow, err := g.Allow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	call(g, ctx, errBoom) // opens
	clk.Advance(time.Second)
	if s := g.State("pr-3"); s != breaker.StateHalfOpen {
		t.Fatalf("state %v, want half-open", s)
	}
	probe, err := g.Allow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slow(nil) // started while closed
	if s := g.State("pr-3"); s != breaker.StateHalfOpen {
		t.Fatalf("a stale success moved the breaker to %v", s)
	}
	late, err := g.Allow(ctx)
	if err == nil {
		late(nil)
		t.Fatal("second probe admitted while the first is in flight")
	}
	probe(nil)
	if s := g.State("pr-3"); s != breaker.StateClosed {
		t.Fatalf("state %v after the probe succeeded, want closed", s)
	}

	// A call admitted in the closed state that fails after the breaker
	// reopened and closed again is ignored too.
	early, _ := g.Allow(ctx)
	call(g, ctx, errBoom) // opens
	clk.Advance(time.Second)
	call(g, ctx, nil) // probe closes
	early(errBoom)
	if s := g.State("pr-3"); s != breaker.StateClosed {
		t.Fatalf("a stale failure moved the breaker to %v", s)
	}
}

// TestProbes: with Probes 2, two probes go through at once and both must
// succeed to close the breaker.
func TestProbes(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Failures: 1, OpenTimeout: time.Minute, Probes: 2}, breaker.WithClock(clk.Now))
	ctx := sandboxCtx("pr-4")
	call(g, ctx, errBoom)
	clk.Advance(time.Minute)
	p1, err1 := g.Allow(ctx)
	p2, err2 := g.Allow(ctx)
	if err1 != nil || err2 != nil {
		t.Fatalf("probes refused: %v, %v", err1, err2)
	}
	wantRefusal(t, call(g, ctx, nil), breaker.ErrOpen, breaker.BusyRetryAfter)
	p1(nil)
	if s := g.State("pr-4"); s != breaker.StateHalfOpen {
		t.Fatalf("after one good probe of two: %v", s)
	}
	p2(nil)
	if s := g.State("pr-4"); s != breaker.StateClosed {
		t.Fatalf("after two good probes: %v", s)
	}
}

// TestIsFailure: with a classifier that only counts server errors, client
// errors are successes that reset the run of failures.
func TestIsFailure(t *testing.T) {
	g := breaker.NewGroup(breaker.Settings{
		Failures:  2,
		IsFailure: func(err error) bool { return errors.Is(err, breaker.ErrServerStatus) },
	}, breaker.WithClock(clocktest.New().Now))
	ctx := sandboxCtx("pr-5")
	for _, code := range []int{503, 404, 500, 200, 502, 400, 418} {
		call(g, ctx, breaker.HTTPStatus(code))
	}
	call(g, ctx, errBoom) // not a server status: a success here
	if s := g.State("pr-5"); s != breaker.StateClosed {
		t.Fatalf("state %v, want closed: no two server errors in a row", s)
	}
	call(g, ctx, breaker.HTTPStatus(500))
	call(g, ctx, breaker.HTTPStatus(599))
	if s := g.State("pr-5"); s != breaker.StateOpen {
		t.Fatalf("state %v, want open after two 5xx in a row", s)
	}
}

// TestDefaults: the zero Settings limit nothing but trip after
// DefaultFailures and stay open DefaultOpenTimeout.
func TestDefaults(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: -1, Burst: -5, MaxInFlight: -1}}, breaker.WithClock(clk.Now))
	ctx := sandboxCtx("pr-6")
	var held []func(error)
	for range 1000 {
		done, err := g.Allow(ctx)
		if err != nil {
			t.Fatalf("zero budget refused a call: %v", err)
		}
		held = append(held, done)
	}
	for _, done := range held {
		done(nil)
	}
	for range breaker.DefaultFailures - 1 {
		call(g, ctx, errBoom)
	}
	if s := g.State("pr-6"); s != breaker.StateClosed {
		t.Fatalf("opened before DefaultFailures: %v", s)
	}
	call(g, ctx, errBoom)
	wantRefusal(t, call(g, ctx, nil), breaker.ErrOpen, breaker.DefaultOpenTimeout)
}

func TestErrors(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Baseline: &breaker.Budget{Rate: 4, Burst: 1}}, breaker.WithClock(clk.Now))
	call(g, context.Background(), nil)
	err := call(g, context.Background(), nil)
	wantRefusal(t, err, breaker.ErrThrottled, 250*time.Millisecond)
	if want := "breaker: rate limit exceeded for baseline traffic (retry after 250ms)"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	wrapped := fmt.Errorf("calling cart: %w", err)
	if d, ok := breaker.RetryAfter(wrapped); !ok || d != 250*time.Millisecond {
		t.Errorf("RetryAfter(wrapped) = %v, %v", d, ok)
	}
	var be *breaker.Error
	if !errors.As(wrapped, &be) || be.ID != "" {
		t.Errorf("errors.As: %+v", be)
	}
	if _, ok := breaker.RetryAfter(errBoom); ok {
		t.Error("RetryAfter of a foreign error reported a hint")
	}
	if _, ok := breaker.RetryAfter(nil); ok {
		t.Error("RetryAfter(nil) reported a hint")
	}
	for code, want := range map[int]bool{100: false, 200: false, 429: false, 499: false, 500: true, 503: true, 599: true, 600: false} {
		err := breaker.HTTPStatus(code)
		if got := errors.Is(err, breaker.ErrServerStatus); got != want || (err != nil) != want {
			t.Errorf("HTTPStatus(%d) = %v", code, err)
		}
	}
	sb := &breaker.Error{Err: breaker.ErrOpen, ID: "pr-7", RetryAfter: time.Second}
	if want := `breaker: circuit breaker is open for sandbox "pr-7" (retry after 1s)`; sb.Error() != want {
		t.Errorf("message %q, want %q", sb, want)
	}
}
