package breaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

var errDown = errors.New("connection refused")

// compactGroup returns a group with an IdleTimeout of a minute (keys are
// compacted after 15 s idle) on clk, with a rate limit of one call a
// second and a burst of 3, that opens after 2 failures for 10 s, and whose
// decisions an SDK meter records (so that keys hold attribute sets).
func compactGroup(clk *clocktest.Clock) *Group {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	return NewGroup(Settings{
		Budget:      Budget{Rate: 1, Burst: 3, MaxInFlight: 2},
		Failures:    2,
		OpenTimeout: 10 * time.Second,
		IdleTimeout: time.Minute,
	}, WithClock(clk.Now), WithMeterProvider(mp))
}

// decision is what one call of a script saw.
type decision struct {
	err   string
	retry time.Duration
	state State
}

func (g *Group) try(id string, outcome error) decision {
	done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id})
	if err != nil {
		d, _ := RetryAfter(err)
		var be *Error
		errors.As(err, &be)
		return decision{err: be.Err.Error(), retry: d, state: g.State(id)}
	}
	done(outcome)
	return decision{state: g.State(id)}
}

// script drives key id through bursts over the rate, failures that open
// the breaker, the open period, probes and recovery, and returns what each
// call saw.
func script(g *Group, clk *clocktest.Clock, id string) []decision {
	var out []decision
	step := func(outcome error) { out = append(out, g.try(id, outcome)) }
	for range 5 { // over the burst
		step(nil)
	}
	clk.Advance(1500 * time.Millisecond)
	step(errDown)
	step(nil) // a success between failures
	clk.Advance(2 * time.Second)
	step(errDown)
	step(errDown) // opens
	step(nil)     // refused: open
	clk.Advance(11 * time.Second)
	step(errDown) // a probe fails: open again
	clk.Advance(11 * time.Second)
	step(nil) // a probe succeeds: closed
	for range 4 {
		step(nil)
	}
	return out
}

// TestCompactedKeyActsFresh: a key the sweep compacted (its gobreaker
// after a failure and a success, its attribute sets dropped; its bucket
// refilled meanwhile)
// makes the same decisions, with the same retry-after hints, as a key the
// group never saw, through bursts, failures, an open period and probes.
func TestCompactedKeyActsFresh(t *testing.T) {
	clk := clocktest.New()
	g := compactGroup(clk)
	g.try("old", nil)
	g.try("old", errDown)
	g.try("old", nil) // gobreaker made, no failure counted now
	old := g.lookup("old")
	if old.slow == nil || old.opts.Load() == nil {
		t.Fatal("old holds no gobreaker or attribute sets before it idles: the test shows nothing")
	}
	clk.Advance(20 * time.Second)
	if n := g.Sweep(); n != 0 {
		t.Fatalf("Sweep evicted %d keys, want none (idle 20 s of 60)", n)
	}
	if old.slow != nil || old.opts.Load() != nil {
		t.Fatalf("old not compacted: slow %v, attributes %v", old.slow, old.opts.Load())
	}
	got := script(g, clk, "old")

	clk2 := clocktest.New()
	fresh := compactGroup(clk2)
	want := script(fresh, clk2, "new")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("compacted key decided\n%v\nfresh key decided\n%v", got, want)
	}
	if g.lookup("old") != old {
		t.Fatal("the compacted key was replaced, not kept")
	}
}

// TestNotCompacted: the sweep leaves alone every key whose state a fresh
// key would not have: a breaker open, half-open or with a failure counted,
// a call in flight; and a key not idle long enough.
func TestNotCompacted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(g *Group, clk *clocktest.Clock, id string)
		idle  time.Duration // 0: 20 s, longer than compaction waits for
	}{
		{"open", func(g *Group, clk *clocktest.Clock, id string) {
			g.try(id, errDown)
			g.try(id, errDown)
		}, 0},
		{"half-open", func(g *Group, clk *clocktest.Clock, id string) {
			g.try(id, errDown)
			g.try(id, errDown)
			clk.Advance(11 * time.Second)
			g.try(id, context.Canceled) // a probe that counts for nothing
			if s := g.lookup(id).cur.Load().st(); s != StateHalfOpen {
				t.Fatalf("%s: %v, want half-open", id, s)
			}
		}, 0},
		{"failure counted", func(g *Group, clk *clocktest.Clock, id string) {
			g.try(id, errDown)
		}, 0},
		{"call in flight", func(g *Group, clk *clocktest.Clock, id string) {
			g.try(id, errDown)
			g.try(id, nil)
			if _, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id}); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"not idle long enough", func(g *Group, clk *clocktest.Clock, id string) {
			g.try(id, errDown)
			g.try(id, nil)
		}, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New()
			g := compactGroup(clk)
			tc.setup(g, clk, "k")
			e := g.lookup("k")
			sl, opts, p := e.slow, e.opts.Load(), e.cur.Load()
			if sl == nil && p.st() == StateClosed && !e.is(dirty) {
				t.Fatal("nothing to compact: the test shows nothing")
			}
			clk.Advance(cmp.Or(tc.idle, 20*time.Second))
			g.Sweep()
			if g.lookup("k") != e || e.slow != sl || e.opts.Load() != opts || e.cur.Load() != p {
				t.Fatalf("key changed by the sweep: breaker %p -> %p", sl, e.slow)
			}
		})
	}
}

// TestCompactionKeepsTokens: compaction drops the gobreaker of a key whose
// bucket is not full, and the key still has only the tokens it had.
func TestCompactionKeepsTokens(t *testing.T) {
	clk := clocktest.New()
	g := compactGroup(clk)
	g.try("k", errDown)
	g.try("k", nil)
	e := g.lookup("k")
	e.lim.SetLimitAt(clk.Now(), 0.01) // 20 s refill less than a token
	g.try("k", nil)                   // the bucket's last token
	clk.Advance(20 * time.Second)
	g.Sweep()
	if g.lookup("k") != e || e.slow != nil {
		t.Fatalf("key not compacted: kept %v, breaker %p", g.lookup("k") == e, e.slow)
	}
	if d := g.try("k", nil); d.err != ErrThrottled.Error() {
		t.Fatalf("a call after compaction saw %+v, want %v: compaction refilled the bucket", d, ErrThrottled)
	}
}

// TestCompactionRace: calls that race the sweep's compaction of their key
// spend the key's own bucket: with the clock standing still, each key
// admits exactly its burst however the calls and the compaction interleave
// (a call that took a token from a bucket the sweep then dropped would let
// a fourth call through).
func TestCompactionRace(t *testing.T) {
	clk := clocktest.New()
	g := compactGroup(clk)
	const keys = 200
	id := func(i int) propagation.Sandbox { return propagation.Sandbox{ID: fmt.Sprintf("k-%d", i)} }
	for i := range keys {
		g.try(id(i).ID, nil)
	}
	clk.Advance(20 * time.Second) // idle, buckets full again
	var admitted [keys]atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				g.Sweep()
			}
		}
	})
	var callers sync.WaitGroup
	for range 4 {
		callers.Go(func() {
			for round := range 2 {
				for i := range keys {
					k := (i + round*keys/2) % keys
					if done, err := g.AllowSandbox(context.Background(), id(k)); err == nil {
						admitted[k].Add(1)
						done(nil)
					}
				}
			}
		})
	}
	callers.Wait()
	close(stop)
	wg.Wait()
	for i := range keys {
		if n := admitted[i].Load(); n != 3 {
			t.Errorf("key %d admitted %d calls, want its burst, 3", i, n)
		}
	}
}
