package breaker_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
)

// TestMetrics reads the group's metrics with the SDK's manual reader: the
// decisions by sandbox and outcome, and the number of breakers not closed
// as one opens, probes, closes, and as an open one is evicted.
func TestMetrics(t *testing.T) {
	clk := clocktest.New()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	g := breaker.NewGroup(breaker.Settings{
		Name:        "cart",
		Budget:      breaker.Budget{Rate: 1, Burst: 3, MaxInFlight: 2},
		Baseline:    &breaker.Budget{},
		Failures:    1,
		OpenTimeout: time.Minute,
		IdleTimeout: time.Minute,
	}, breaker.WithClock(clk.Now), breaker.WithMeterProvider(mp))

	collect := func() (decisions map[[2]string]int64, open int64) {
		t.Helper()
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		decisions = map[[2]string]int64{}
		open = -1
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				sum, ok := m.Data.(metricdata.Sum[int64])
				if !ok {
					t.Fatalf("%s: %T, want an int64 sum", m.Name, m.Data)
				}
				for _, dp := range sum.DataPoints {
					if name, _ := dp.Attributes.Value(breaker.AttrName); name.AsString() != "cart" {
						t.Errorf("%s: breaker.name %q, want cart", m.Name, name.AsString())
					}
					switch m.Name {
					case breaker.MetricDecisions:
						if !sum.IsMonotonic {
							t.Errorf("%s is not monotonic", m.Name)
						}
						id, _ := dp.Attributes.Value(attribute.Key(breaker.AttrID))
						oc, _ := dp.Attributes.Value(attribute.Key(breaker.AttrOutcome))
						decisions[[2]string{id.AsString(), oc.AsString()}] = dp.Value
					case breaker.MetricOpen:
						if sum.IsMonotonic {
							t.Errorf("%s is monotonic", m.Name)
						}
						open = dp.Value
					default:
						t.Errorf("unexpected metric %s", m.Name)
					}
				}
			}
		}
		return decisions, open
	}

	a := sandboxCtx("pr-a")
	held, _ := g.Allow(a)
	call(g, a, nil)
	call(g, sandboxCtx("pr-b"), nil)
	held2, _ := g.Allow(a)             // third token
	call(g, a, nil)                    // too many in flight
	held2(nil)                         //
	call(g, a, nil)                    // throttled
	call(g, context.Background(), nil) // baseline
	clk.Advance(time.Second)           // one token
	call(g, a, errBoom)                // opens
	call(g, a, nil)                    // open
	held(nil)                          // stale
	decisions, open := collect()
	want := map[[2]string]int64{
		{"pr-a", "admitted"}:           4,
		{"pr-a", "too_many_in_flight"}: 1,
		{"pr-a", "throttled"}:          1,
		{"pr-a", "open"}:               1,
		{"pr-b", "admitted"}:           1,
		{"", "admitted"}:               1,
	}
	if len(decisions) != len(want) {
		t.Errorf("decisions %v, want %v", decisions, want)
	}
	for k, v := range want {
		if decisions[k] != v {
			t.Errorf("decisions[%v] = %d, want %d", k, decisions[k], v)
		}
	}
	if open != 1 {
		t.Fatalf("open breakers %d, want 1", open)
	}

	clk.Advance(time.Minute)
	call(g, a, nil) // probe: half-open, then closed
	if _, open := collect(); open != 0 {
		t.Fatalf("open breakers %d after the breaker closed, want 0", open)
	}

	// An open breaker that is evicted (after its open period and idle
	// time) is no longer counted.
	call(g, sandboxCtx("pr-c"), errBoom)
	if _, open := collect(); open != 1 {
		t.Fatalf("open breakers %d, want 1", open)
	}
	clk.Advance(2 * time.Minute)
	g.Sweep()
	if n := g.Len(); n != 0 {
		t.Fatalf("%d keys left after Sweep, want 0", n)
	}
	if _, open := collect(); open != 0 {
		t.Fatalf("open breakers %d after eviction, want 0", open)
	}
}
