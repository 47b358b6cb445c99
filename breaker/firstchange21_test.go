package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestFirstChangeRace: many goroutines call a fresh key at once, every
// call failing, while it leaves its first phase (no phase object) for the
// open state. No failure is lost (once Failures of them were reported the
// breaker is open), the change is made and reported once, and calls held
// from the first phase that report successes late neither close the
// breaker nor count in its next phase. Each round uses a new key, so that
// every round races the first state change. Run with -race and -cpu 1,2.
func TestFirstChangeRace(t *testing.T) {
	const failures, workers = 3, 6
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	clk := clocktest.New()
	logs := &keeper{}
	g := NewGroup(Settings{Failures: failures, Probes: 1, OpenTimeout: time.Second, IdleTimeout: time.Hour},
		WithClock(clk.Now), WithLogger(slog.New(logs)))
	for r := range rounds {
		s := propagation.Sandbox{ID: fmt.Sprintf("r-%d", r)}
		var start, held sync.WaitGroup
		start.Add(1)
		var reported atomic.Int64
		late := make(chan func(error), workers)
		for w := range workers {
			held.Go(func() {
				start.Wait()
				if w%2 == 0 {
					// Admitted in the first phase, reports after the
					// breaker opened.
					if done, err := g.AllowSandbox(context.Background(), s); err == nil {
						late <- done
					}
					return
				}
				for {
					done, err := g.AllowSandbox(context.Background(), s)
					if err != nil {
						if !errors.Is(err, ErrOpen) {
							t.Errorf("refusal %v, want ErrOpen", err)
						}
						return
					}
					done(errBoom21)
					reported.Add(1)
				}
			})
		}
		start.Done()
		held.Wait()
		close(late)
		if st := g.State(s.ID); st != StateOpen {
			t.Fatalf("round %d: %d failures reported, state %v; want open", r, reported.Load(), st)
		}
		for done := range late {
			done(nil)
		}
		e := g.lookup(s.ID)
		e.mu.Lock()
		p, counts := e.cur.Load(), e.slow.cb.Counts()
		e.mu.Unlock()
		if p.st() != StateOpen || counts.Requests != 0 {
			t.Fatalf("round %d: after late successes of the first phase: state %v, gobreaker counts %+v; want open, none", r, p.st(), counts)
		}
	}
	opened := 0
	for _, rec := range logs.recs {
		rec.Attrs(func(a slog.Attr) bool {
			if strings.Contains(a.Value.String(), "closed -> open") {
				opened++
			}
			return true
		})
	}
	if opened != rounds {
		t.Fatalf("%d closed -> open records over %d rounds, want one a round", opened, rounds)
	}
}

// TestProbeRace: once an open breaker's time is up, many goroutines call
// at once; no more than Probes calls are admitted until one reports, and a
// probe's success closes it.
func TestProbeRace(t *testing.T) {
	const probes, workers = 2, 8
	clk := clocktest.New()
	g := NewGroup(Settings{Failures: 1, Probes: probes, OpenTimeout: time.Second}, WithClock(clk.Now))
	for r := range 200 {
		s := propagation.Sandbox{ID: fmt.Sprintf("p-%d", r)}
		done, err := g.AllowSandbox(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		done(errBoom21) // opens
		clk.Advance(time.Second)
		var wg sync.WaitGroup
		var admitted atomic.Int32
		dones := make(chan func(error), workers)
		for range workers {
			wg.Go(func() {
				if done, err := g.AllowSandbox(context.Background(), s); err == nil {
					admitted.Add(1)
					dones <- done
				}
			})
		}
		wg.Wait()
		close(dones)
		if n := admitted.Load(); n < 1 || n > probes {
			t.Fatalf("round %d: %d probes admitted, want 1..%d", r, n, probes)
		}
		for done := range dones {
			done(nil)
		}
		if st := g.State(s.ID); st != StateClosed {
			t.Fatalf("round %d: state %v after the probes succeeded, want closed", r, st)
		}
	}
}

var errBoom21 = errors.New("boom")
