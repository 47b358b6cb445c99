package breaker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestEveryIDLengthRacesSweep: keys whose IDs are held in the entry (up to
// 15 bytes) and behind its pointer (16, 254, 255, 256 and 300 bytes),
// sharing long prefixes and only 256 hashes between them (so that lookups
// compare IDs along long probe runs), are called from four goroutines
// while the sweep evicts the idle half of them (shifting the others back
// in their tables) and compacts the other half. With the clock standing
// still each key admits exactly its burst (a call that spent a token of an
// entry being evicted, or found a second entry of its key, would admit
// more), and every refusal names its own key.
func TestEveryIDLengthRacesSweep(t *testing.T) {
	clk := clocktest.New()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	g := NewGroup(Settings{Budget: Budget{Rate: 1, Burst: 3}, IdleTimeout: time.Minute}, WithClock(clk.Now), WithMeterProvider(mp))
	g.hashMask = 0xff
	const per = 40
	var idle, busy []string
	for _, n := range []int{7, 14, 15, 16, 17, 254, 255, 256, 300} {
		for k := range per {
			idle = append(idle, strings.Repeat("i", n-6)+fmt.Sprintf("%06d", k))
			busy = append(busy, strings.Repeat("b", n-6)+fmt.Sprintf("%06d", k))
		}
	}
	for _, id := range idle {
		g.try(id, nil)
	}
	clk.Advance(50 * time.Second)
	for _, id := range busy {
		g.try(id, nil) // with the meter's attribute sets, for compaction to drop
	}
	// The idle keys are past IdleTimeout, the busy ones past the time
	// after which the sweep compacts them; every bucket is full again.
	clk.Advance(20 * time.Second)
	ids := append(idle, busy...)
	admitted := make([]atomic.Int32, len(ids))
	stopSweeping := sweeping(g)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for c := range 4 {
		wg.Go(func() {
			for round := range 2 {
				for i := range ids {
					k := (i + c*len(ids)/4 + round*len(ids)/2) % len(ids)
					// A copy of its own, as a request's header is.
					id := strings.Clone(ids[k])
					done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id})
					if err == nil {
						admitted[k].Add(1)
						done(nil)
						continue
					}
					var re *Error
					if !errors.As(err, &re) || !errors.Is(err, ErrThrottled) || re.ID != ids[k] {
						select {
						case errs <- fmt.Sprintf("call of %d-byte key %d: %v (ID %q)", len(ids[k]), k, err, re.ID):
						default:
						}
					}
				}
			}
		})
	}
	wg.Wait()
	stopSweeping()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for k, id := range ids {
		if n := admitted[k].Load(); n != 3 {
			t.Errorf("%d-byte key %q admitted %d calls, want its burst, 3", len(id), id[max(0, len(id)-10):], n)
		}
	}
	if n := g.Len(); n != len(ids) {
		t.Errorf("the group holds %d keys, want %d (every key was called last at this time)", n, len(ids))
	}
}
