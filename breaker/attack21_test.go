package breaker

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestEntryHasIDLengthOfLongID: an ID of 255 bytes, the value idLen takes
// for an ID held outside the entry (longID), is compared as a long ID, not
// sliced out of the 15-byte idBuf. AllowSandbox takes IDs that were never
// validated, so a second call of such a key must not panic.
func TestEntryHasIDLengthOfLongID(t *testing.T) {
	for _, n := range []int{0, 15, 16, 254, 255, 256} {
		id := strings.Repeat("x", n)
		e := &entry{}
		e.setID(strings.Clone(id))
		other := strings.Repeat("y", n)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("entry of a %d-byte ID: hasID panics: %v", n, r)
				}
			}()
			if !e.hasID(id) {
				t.Errorf("entry of a %d-byte ID does not match it", n)
			}
			if n > 0 && e.hasID(other) {
				t.Errorf("entry of a %d-byte ID matches another ID of that length", n)
			}
		}()
	}

	g := NewGroup(Settings{Budget: Budget{MaxInFlight: 1}})
	s := propagation.Sandbox{ID: strings.Repeat("\xff", 255)}
	for i := range 2 {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("call %d of a 255-byte key panics: %v", i, r)
				}
			}()
			done, err := g.AllowSandbox(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			done(nil)
		}()
	}
	if n := g.Len(); n != 1 {
		t.Fatalf("group holds %d keys after two calls of one, want 1", n)
	}
}

// collected reports whether an object given to watch is collected within
// a bounded number of collections (cleanups run on their own goroutine).
func collected(ch <-chan struct{}) bool {
	for range 50 {
		runtime.GC()
		select {
		case <-ch:
			return true
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// evictedAndCollected lets key id of g idle past its IdleTimeout (a
// minute in these tests), sweeps, and reports whether its entry, evicted,
// is then collected.
func evictedAndCollected(t *testing.T, g *Group, clk *clocktest.Clock, id string) bool {
	t.Helper()
	gone := make(chan struct{})
	runtime.AddCleanup(g.lookup(id), func(ch chan struct{}) { close(ch) }, gone)
	clk.Advance(2 * time.Minute)
	if n := g.Sweep(); n != 1 {
		t.Fatalf("Sweep evicted %d keys, want 1", n)
	}
	return collected(gone)
}

// TestRefusalKeepsNoEntry: a refusal handed to the caller does not keep
// the refused key's entry (its breaker, bucket, attribute sets) alive
// after the key is evicted, however long the caller keeps the error; only
// its ID. IDs held in the entry (up to 15 bytes) and beyond.
func TestRefusalKeepsNoEntry(t *testing.T) {
	for _, id := range []string{"pr-1", "123456789012345", "1234567890123456"} {
		t.Run(id, func(t *testing.T) {
			clk := clocktest.New()
			g := NewGroup(Settings{Budget: Budget{MaxInFlight: 1}, IdleTimeout: time.Minute}, WithClock(clk.Now))
			ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id})
			done, err := g.Allow(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, refusal := g.Allow(ctx)
			if !errors.Is(refusal, ErrTooManyInFlight) {
				t.Fatalf("second call: %v, want ErrTooManyInFlight", refusal)
			}
			done(nil)
			done = nil
			if !evictedAndCollected(t, g, clk, id) {
				t.Errorf("the evicted entry is kept alive while the caller keeps its refusal %q", refusal)
			}
			var re *Error
			if !errors.As(refusal, &re) || re.ID != id {
				t.Fatalf("refusal %v: ID %q, want %q", refusal, re.ID, id)
			}
			runtime.KeepAlive(g)
		})
	}
}

// keeper is a slog.Handler that keeps every record as it came.
type keeper struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (k *keeper) Enabled(context.Context, slog.Level) bool { return true }
func (k *keeper) Handle(_ context.Context, r slog.Record) error {
	k.mu.Lock()
	k.recs = append(k.recs, r.Clone())
	k.mu.Unlock()
	return nil
}
func (k *keeper) WithAttrs([]slog.Attr) slog.Handler { return k }
func (k *keeper) WithGroup(string) slog.Handler      { return k }

// TestReportsKeepNoEntry: what the group hands to a meter (attribute sets
// of every outcome) and to a logger (audit records of state changes), both
// of which keep them, does not keep an evicted key's entry alive.
func TestReportsKeepNoEntry(t *testing.T) {
	for _, id := range []string{"pr-1", "123456789012345", "1234567890123456"} {
		t.Run(id, func(t *testing.T) {
			clk := clocktest.New()
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { mp.Shutdown(context.Background()) })
			logs := &keeper{}
			g := NewGroup(Settings{
				Budget: Budget{Rate: 1, Burst: 1, MaxInFlight: 1}, Failures: 1,
				OpenTimeout: time.Second, IdleTimeout: time.Minute,
			}, WithClock(clk.Now), WithMeterProvider(mp), WithLogger(slog.New(logs)))
			s := propagation.Sandbox{ID: id, Actor: "a", Origin: "o"}
			ctx := context.Background()
			done, err := g.AllowSandbox(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			done(errors.New("boom")) // opens
			if _, err := g.AllowSandbox(ctx, s); !errors.Is(err, ErrOpen) {
				t.Fatalf("after a failure: %v, want ErrOpen", err)
			}
			clk.Advance(2 * time.Second)
			done, err = g.AllowSandbox(ctx, s) // the probe
			if err != nil {
				t.Fatal(err)
			}
			done(nil) // closes
			if _, err := g.AllowSandbox(ctx, s); !errors.Is(err, ErrThrottled) {
				t.Fatalf("after the probe: %v, want ErrThrottled", err)
			}
			done = nil
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			if len(logs.recs) < 3 {
				t.Fatalf("%d audit records, want the breaker's three state changes", len(logs.recs))
			}
			if !evictedAndCollected(t, g, clk, id) {
				t.Errorf("the evicted entry is kept alive by the meter's attribute sets or the audit records")
			}
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			runtime.KeepAlive(logs)
			runtime.KeepAlive(g)
		})
	}
}

// TestOverrideKeepsNoEntry: the ID handed to Settings.Override, a function
// of the caller's that may keep it (a cache of budgets by ID, a log), does
// not keep the key's entry alive after the key is evicted.
func TestOverrideKeepsNoEntry(t *testing.T) {
	for _, id := range []string{"pr-1", "123456789012345", "1234567890123456"} {
		t.Run(id, func(t *testing.T) {
			clk := clocktest.New()
			var seen []string
			g := NewGroup(Settings{IdleTimeout: time.Minute, Override: func(id string) (Budget, bool) {
				seen = append(seen, id)
				return Budget{MaxInFlight: 2}, true
			}}, WithClock(clk.Now))
			done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id})
			if err != nil {
				t.Fatal(err)
			}
			done(nil)
			done = nil
			if !evictedAndCollected(t, g, clk, id) {
				t.Errorf("the evicted entry is kept alive by the ID Override kept")
			}
			if len(seen) == 0 || seen[0] != id {
				t.Fatalf("Override saw %q, want %q", seen, id)
			}
			runtime.KeepAlive(g)
		})
	}
}

// TestEvictionRacesLastOutcome: a call in flight longer than IdleTimeout
// fails, and the sweep runs while its done is recording the failure
// (paused here in IsFailure, which done calls). The key must not be
// evicted before its outcome is counted: else the failure opens the
// breaker of an entry no longer in the group (the next call gets a fresh,
// closed one: the sandbox's traffic fails open) and the open-breakers
// gauge stays up for good.
func TestEvictionRacesLastOutcome(t *testing.T) {
	clk := clocktest.New()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	inClassify, resume := make(chan struct{}), make(chan struct{})
	g := NewGroup(Settings{
		Failures: 1, OpenTimeout: time.Hour, IdleTimeout: time.Minute,
		IsFailure: func(error) bool {
			close(inClassify)
			<-resume
			return true
		},
	}, WithClock(clk.Now), WithMeterProvider(mp))
	s := propagation.Sandbox{ID: "pr-long"}
	done, err := g.AllowSandbox(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // the call outlives IdleTimeout
	finished := make(chan struct{})
	go func() {
		done(errBoom21)
		close(finished)
	}()
	<-inClassify
	evicted := g.Sweep()
	close(resume)
	<-finished
	if evicted != 0 {
		t.Errorf("the sweep evicted the key while its failing call was being recorded")
	}
	if _, err := g.AllowSandbox(context.Background(), s); !errors.Is(err, ErrOpen) {
		t.Errorf("after a failure with Failures 1: %v, want ErrOpen (the failure was lost)", err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	open := int64(-1)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == MetricOpen {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					open = dp.Value
				}
			}
		}
	}
	if n, st := g.Len(), g.State(s.ID); open != 1 || n != 1 || st != StateOpen {
		t.Errorf("open-breakers gauge %d, %d keys, state %v; want 1, 1 key, open", open, n, st)
	}
}

// TestPanickingIsFailureFreesSlot: when the caller's IsFailure panics
// inside done, the panic goes on, and the call no longer holds its slot of
// MaxInFlight.
func TestPanickingIsFailureFreesSlot(t *testing.T) {
	g := NewGroup(Settings{Budget: Budget{MaxInFlight: 1}, IsFailure: func(error) bool { panic("classifier") }})
	s := propagation.Sandbox{ID: "pr-panic"}
	done, err := g.AllowSandbox(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != "classifier" {
				t.Fatalf("recovered %v, want the classifier's panic", r)
			}
		}()
		done(errBoom21)
	}()
	done, err = g.AllowSandbox(context.Background(), s)
	if err != nil {
		t.Fatalf("after a done whose IsFailure panicked: %v, want the slot free", err)
	}
	done(nil)
}

// TestCollidingIDsOfEveryLength: with every key's hash the same, keys whose
// IDs share prefixes, differ only past the 15 bytes an entry holds, end in
// NUL bytes, are not UTF-8, or are 0, 15, 16, 254, 255 and 256 bytes long
// each keep a budget of their own.
func TestCollidingIDsOfEveryLength(t *testing.T) {
	g := NewGroup(Settings{Budget: Budget{Rate: 1, Burst: 1}, Baseline: &Budget{Rate: 1, Burst: 1}})
	g.hashMask = 0
	var ids []string
	for _, n := range []int{0, 1, 14, 15, 16, 17, 254, 255, 256} {
		ids = append(ids, strings.Repeat("a", n))
		if n > 0 {
			ids = append(ids, strings.Repeat("a", n-1)+"b", strings.Repeat("a", n-1)+"\x00", strings.Repeat("\xff", n))
		}
	}
	seen := map[string]bool{}
	var uniq []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	for _, id := range uniq {
		done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id})
		if err != nil {
			t.Fatalf("first call of %q (%d bytes): %v", id, len(id), err)
		}
		done(nil)
	}
	if n := g.Len(); n != len(uniq) {
		t.Fatalf("group holds %d keys, want %d", n, len(uniq))
	}
	for _, id := range uniq {
		if _, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id}); !errors.Is(err, ErrThrottled) {
			t.Fatalf("second call of %q (%d bytes): %v, want ErrThrottled", id, len(id), err)
		}
		var re *Error
		_, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id})
		if !errors.As(err, &re) || re.ID != id {
			t.Fatalf("refusal of %q names %q", id, re.ID)
		}
	}
}

// TestLongCallsTrip: a sandbox whose calls each outlive IdleTimeout, one
// after another with a sweep in between, and all fail, still opens its
// breaker after Failures of them: a key whose last call just reported a
// failure counted is not idle, whenever that call started.
func TestLongCallsTrip(t *testing.T) {
	clk := clocktest.New()
	g := NewGroup(Settings{Failures: 2, OpenTimeout: time.Hour, IdleTimeout: time.Minute}, WithClock(clk.Now))
	s := propagation.Sandbox{ID: "pr-stream"}
	for i := range 2 {
		done, err := g.AllowSandbox(context.Background(), s)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		clk.Advance(2 * time.Minute) // the call outlives IdleTimeout
		done(errBoom21)
		clk.Advance(time.Second)
		g.Sweep()
	}
	if _, err := g.AllowSandbox(context.Background(), s); !errors.Is(err, ErrOpen) {
		t.Fatalf("after two long calls failed with Failures 2: %v, want ErrOpen (a failure was evicted with its key)", err)
	}
}

// TestPauseDoesNotRefill: a sandbox that spends its burst, then pauses
// longer than IdleTimeout but less than its bucket takes to refill, gets
// back only the tokens the pause earned: eviction must not hand it a fresh,
// full bucket (throttling that a pause undoes fails open).
func TestPauseDoesNotRefill(t *testing.T) {
	clk := clocktest.New()
	g := NewGroup(Settings{Budget: Budget{Rate: 1.0 / 60, Burst: 5}, IdleTimeout: time.Minute}, WithClock(clk.Now))
	s := propagation.Sandbox{ID: "pr-slow"}
	admitted := func() int {
		n := 0
		for range 10 {
			done, err := g.AllowSandbox(context.Background(), s)
			if err != nil {
				if !errors.Is(err, ErrThrottled) {
					t.Fatalf("refusal %v, want ErrThrottled", err)
				}
				return n
			}
			done(nil)
			n++
		}
		return n
	}
	if n := admitted(); n != 5 {
		t.Fatalf("first burst: %d admitted, want 5", n)
	}
	clk.Advance(2*time.Minute + time.Second) // two tokens back
	g.Sweep()
	if n := admitted(); n != 2 {
		t.Fatalf("after a pause that earned 2 tokens: %d admitted, want 2", n)
	}
	clk.Advance(10 * time.Minute) // full again
	if n := g.Sweep(); n != 1 {
		t.Fatalf("Sweep evicted %d keys once the bucket refilled, want 1", n)
	}
}
