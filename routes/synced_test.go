package routes_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// flaky is a source the test switches between answering and failing.
type flaky struct {
	fail  atomic.Bool
	calls atomic.Int32
	sbs   []routes.Sandbox
}

var errSourceDown = errors.New("source down")

func (f *flaky) Fetch(context.Context) ([]routes.Sandbox, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return nil, errSourceDown
	}
	return f.sbs, nil
}

// TestSyncedAtNeverAheadOfSource: a table with a source is synced only up
// to the start of its last good load: zero before the first, and stuck
// there while the source fails or is only touched by hand.
func TestSyncedAtNeverAheadOfSource(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	src := &flaky{sbs: []routes.Sandbox{{ID: "pr-1"}}}

	if err := tbl.Update([]routes.Sandbox{{ID: "seed"}}); err != nil {
		t.Fatal(err)
	}
	if !tbl.SyncedAt().Equal(clk.Now()) {
		t.Fatalf("filled by hand, the table is its own source: SyncedAt = %v, want now", tbl.SyncedAt())
	}
	src.fail.Store(true)
	if err := tbl.Load(ctx, src); !errors.Is(err, errSourceDown) {
		t.Fatalf("Load = %v", err)
	}
	if got := tbl.SyncedAt(); !got.IsZero() {
		t.Fatalf("never loaded from its source: SyncedAt = %v, want zero", got)
	}
	clk.Advance(time.Minute)
	if got := tbl.SyncedAt(); !got.IsZero() {
		t.Fatalf("never loaded, a minute on: SyncedAt = %v, want zero", got)
	}

	src.fail.Store(false)
	good := clk.Now()
	if err := tbl.Load(ctx, src); err != nil {
		t.Fatal(err)
	}
	if got := tbl.SyncedAt(); !got.Equal(good) {
		t.Fatalf("after a good load SyncedAt = %v, want %v", got, good)
	}

	// Failing since: behind for every moment after the good load.
	src.fail.Store(true)
	clk.Advance(time.Minute)
	if err := tbl.Load(ctx, src); err == nil {
		t.Fatal("Load of a failing source succeeded")
	}
	clk.Advance(time.Minute)
	if got := tbl.SyncedAt(); !got.Equal(good) {
		t.Fatalf("source failing: SyncedAt = %v, want the last good load %v", got, good)
	}
	// A change by hand proves nothing about the source.
	if err := tbl.Update([]routes.Sandbox{{ID: "pr-2"}}); err != nil {
		t.Fatal(err)
	}
	if got := tbl.SyncedAt(); !got.Equal(good) {
		t.Fatalf("after Update by hand: SyncedAt = %v, want %v", got, good)
	}
}

// TestSyncedAtAfterSyncReturns: once Sync has returned, SyncedAt still
// reports the last good load, not now, when the last fetch failed.
func TestSyncedAtAfterSyncReturns(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	src := &flaky{sbs: []routes.Sandbox{{ID: "pr-1"}}}
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	good := clk.Now()
	clk.Advance(time.Minute)
	src.fail.Store(true)

	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- tbl.Sync(ctx, src, routes.Every(time.Hour), routes.OnError(func(error) { once.Do(func() { close(failed) }) }))
	}()
	<-failed
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
	clk.Advance(time.Minute)
	if got := tbl.SyncedAt(); !got.Equal(good) {
		t.Fatalf("after Sync returned on a failure: SyncedAt = %v, want %v", got, good)
	}
}

// TestNotModifiedBeforeFirstLoad: a source that says "unchanged" to a table
// that never loaded it does not make the empty table synced.
func TestNotModifiedBeforeFirstLoad(t *testing.T) {
	tbl := routes.New()
	src := routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) { return nil, routes.ErrNotModified })
	err := tbl.Load(context.Background(), src)
	if err == nil || !errors.Is(tbl.Err(), routes.ErrNotModified) {
		t.Fatalf("Load = %v, Err = %v; want an error", err, tbl.Err())
	}
	if got := tbl.SyncedAt(); !got.IsZero() {
		t.Fatalf("SyncedAt = %v, want zero", got)
	}
}

// wait runs WaitSynced in a goroutine and returns its result channel.
func wait(ctx context.Context, tbl *routes.Table, at time.Time) <-chan error {
	done := make(chan error, 1)
	go func() { done <- tbl.WaitSynced(ctx, at) }()
	return done
}

func waitResult(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second): // a failure guard, not a timing
		t.Fatal("WaitSynced did not return")
		return nil
	}
}

func TestWaitSynced(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	src := &flaky{sbs: []routes.Sandbox{{ID: "pr-1"}}}
	t0 := clk.Now()

	// A table neither filled nor given a source waits for either: a
	// reader started beside "go table.Sync(...)" must not race it.
	fresh := routes.New(routes.WithClock(clk.Now))
	waitFill := wait(context.Background(), fresh, t0)
	fresh2 := routes.New(routes.WithClock(clk.Now))
	waitLoad := wait(context.Background(), fresh2, t0)
	select {
	case err := <-waitFill:
		t.Fatalf("WaitSynced on a fresh table returned %v", err)
	default:
	}
	if err := fresh.Update(nil); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, waitFill); err != nil {
		t.Fatalf("WaitSynced after a fill by hand: %v", err)
	}
	if err := fresh2.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, waitLoad); err != nil {
		t.Fatalf("WaitSynced after the first load: %v", err)
	}

	// A table filled by hand is synced up to now.
	if err := tbl.Update(nil); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tbl.WaitSynced(cancelled, t0); err != nil {
		t.Fatalf("hand-filled table, at = now: %v", err)
	}
	if err := tbl.WaitSynced(cancelled, t0.Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Fatalf("hand-filled table, at in the future, ctx done: %v", err)
	}

	// With a source: wait until a load that started at or after at.
	src.fail.Store(true)
	if err := tbl.Load(context.Background(), src); err == nil {
		t.Fatal("Load of a failing source succeeded")
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	at := t0.Add(time.Minute)
	done := wait(ctx, tbl, at)
	early := wait(ctx, tbl, t0)
	src.fail.Store(false)
	if err := tbl.Load(context.Background(), src); err != nil { // synced up to t0
		t.Fatal(err)
	}
	if err := waitResult(t, early); err != nil {
		t.Fatalf("waiter for t0 after a load at t0: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitSynced(t0+1m) returned %v after a load at t0", err)
	default:
	}
	clk.Advance(time.Minute)
	src.fail.Store(true)
	if err := tbl.Load(context.Background(), src); err == nil { // a failure wakes no one
		t.Fatal("Load of a failing source succeeded")
	}
	select {
	case err := <-done:
		t.Fatalf("WaitSynced returned %v after a failed load", err)
	default:
	}
	src.fail.Store(false)
	if err := tbl.Load(context.Background(), src); err != nil { // synced up to at exactly
		t.Fatal(err)
	}
	if err := waitResult(t, done); err != nil {
		t.Fatalf("WaitSynced = %v after a load at %v", err, at)
	}
	if got := tbl.SyncedAt(); got.Before(at) {
		t.Fatalf("WaitSynced returned with SyncedAt %v before %v", got, at)
	}

	// Ends with ctx: cancellation and deadline, as ctx's own error.
	ctx2, cancel2 := context.WithCancel(context.Background())
	done = wait(ctx2, tbl, at.Add(time.Hour))
	cancel2()
	if err := waitResult(t, done); err != context.Canceled {
		t.Fatalf("WaitSynced after cancel = %v, want context.Canceled", err)
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel3()
	if err := tbl.WaitSynced(ctx3, at.Add(time.Hour)); err != context.DeadlineExceeded {
		t.Fatalf("WaitSynced past the deadline = %v, want context.DeadlineExceeded", err)
	}
}

// TestWaitSyncedManyWaiters: waiters for staggered times return in the
// order the table's loads reach them, each only once SyncedAt has reached
// its time.
func TestWaitSyncedManyWaiters(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	src := &flaky{sbs: []routes.Sandbox{{ID: "pr-1"}}}
	src.fail.Store(true)
	tbl.Load(context.Background(), src) // give the table its source
	src.fail.Store(false)
	t0 := clk.Now()
	const n = 50
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Second)
		wg.Go(func() {
			if err := tbl.WaitSynced(ctx, at); err != nil {
				errs <- fmt.Errorf("waiter %d: %w", i, err)
				return
			}
			if got := tbl.SyncedAt(); got.Before(at) {
				errs <- fmt.Errorf("waiter %d returned at SyncedAt %v, before %v", i, got, at)
			}
		})
	}
	for range n {
		if err := tbl.Load(context.Background(), src); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCanceledLoadIsNotAFailure: a Load its caller cancels leaves Err and
// SyncedAt alone; one that runs past its deadline is the source's failure.
func TestCanceledLoadIsNotAFailure(t *testing.T) {
	tbl := routes.New()
	src := routes.SourceFunc(func(ctx context.Context) ([]routes.Sandbox, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tbl.Load(ctx, src); !errors.Is(err, context.Canceled) || tbl.Err() != nil {
		t.Fatalf("Load = %v, Err = %v; want context.Canceled and no Err", err, tbl.Err())
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := tbl.Load(ctx, src); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(tbl.Err(), context.DeadlineExceeded) {
		t.Fatalf("Load = %v, Err = %v; want the deadline in both", err, tbl.Err())
	}
}

// TestMarkSynced: a source that pushes its changes moves SyncedAt only
// with MarkSynced, never back, and MarkFailed keeps content and SyncedAt
// while Err says since when the source fails.
func TestMarkSynced(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	t0 := clk.Now()
	if err := tbl.MarkFailed(t0, errSourceDown); !errors.Is(err, errSourceDown) {
		t.Fatalf("MarkFailed = %v", err)
	}
	if got := tbl.SyncedAt(); !got.IsZero() {
		t.Fatalf("failed before any proof: SyncedAt = %v, want zero", got)
	}
	if err := tbl.Put(routes.Sandbox{ID: "pr-1"}); err != nil {
		t.Fatal(err)
	}
	if got := tbl.SyncedAt(); !got.IsZero() {
		t.Fatalf("a pushed change proves nothing: SyncedAt = %v, want zero", got)
	}
	done := wait(context.Background(), tbl, t0)
	tbl.MarkSynced(t0)
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if !tbl.SyncedAt().Equal(t0) || tbl.Err() != nil {
		t.Fatalf("after MarkSynced: SyncedAt = %v, Err = %v", tbl.SyncedAt(), tbl.Err())
	}
	clk.Advance(time.Minute)
	tbl.MarkSynced(t0.Add(-time.Second))
	if !tbl.SyncedAt().Equal(t0) {
		t.Fatalf("MarkSynced moved SyncedAt back to %v", tbl.SyncedAt())
	}
	err := tbl.MarkFailed(clk.Now(), errSourceDown)
	if !errors.Is(tbl.Err(), errSourceDown) || err.Error() != tbl.Err().Error() {
		t.Fatalf("Err = %v, MarkFailed returned %v", tbl.Err(), err)
	}
	if _, ok := tbl.Sandbox("pr-1"); !ok || !tbl.SyncedAt().Equal(t0) {
		t.Fatalf("a failure must keep content and SyncedAt: %v", tbl.SyncedAt())
	}
	tbl.MarkSynced(clk.Now())
	if !tbl.SyncedAt().Equal(clk.Now()) || tbl.Err() != nil {
		t.Fatalf("after recovery: SyncedAt = %v, Err = %v", tbl.SyncedAt(), tbl.Err())
	}
}

// TestMarkSyncedStaleProof: a proof that started before a failure and
// completes after it (an etcd source runs them concurrently) moves
// SyncedAt but does not clear Err; only a proof that started after the
// failure does.
func TestMarkSyncedStaleProof(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	t0 := clk.Now()
	tbl.MarkSynced(t0)
	t1 := t0.Add(time.Second) // a proof starts
	t2 := t0.Add(2 * time.Second)
	tbl.MarkFailed(t2, errSourceDown) // a later attempt fails
	tbl.MarkSynced(t1)                // the earlier proof completes
	if !tbl.SyncedAt().Equal(t1) {
		t.Fatalf("SyncedAt = %v, want %v", tbl.SyncedAt(), t1)
	}
	if !errors.Is(tbl.Err(), errSourceDown) {
		t.Fatalf("a proof older than the failure cleared Err: %v", tbl.Err())
	}
	tbl.MarkSynced(t2.Add(time.Second))
	if tbl.Err() != nil {
		t.Fatalf("a proof newer than the failure left Err = %v", tbl.Err())
	}
}
