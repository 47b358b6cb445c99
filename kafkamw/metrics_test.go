package kafkamw_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// collect returns the values of kafkamw's messages metric by outcome, for
// group.
func collect(t *testing.T, mr *sdkmetric.ManualReader, group string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := mr.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != kafkamw.MetricMessages {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok || !sum.IsMonotonic {
				t.Fatalf("%s is %T, want a monotonic Int64 sum", m.Name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				if g, _ := dp.Attributes.Value(attribute.Key(kafkamw.AttrGroup)); g.AsString() != group {
					continue
				}
				o, _ := dp.Attributes.Value(attribute.Key(kafkamw.AttrOutcome))
				out[o.AsString()] = dp.Value
			}
		}
	}
	return out
}

// TestMetrics: the reader's counts are an OpenTelemetry counter by
// outcome, orphaned messages on their own; Close stops reporting them.
func TestMetrics(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	if err := w.WriteMessages(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-99"}), kafka.Message{Value: []byte("orphan")}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("production")}); err != nil {
		t.Fatal(err)
	}
	mr := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(mr))
	defer mp.Shutdown(context.Background())
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("orders")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := r.FetchMessage(ctx)
	if err != nil || string(m.Value) != "production" {
		t.Fatalf("FetchMessage = %q, %v; want the production message, the orphan skipped", m.Value, err)
	}
	got := collect(t, mr, group)
	if got[kafkamw.OutcomeDelivered] != 1 || got[kafkamw.OutcomeOrphaned] != 1 || got[kafkamw.OutcomeSkipped] != 1 || got[kafkamw.OutcomeDeadLettered] != 0 {
		t.Errorf("metrics %v, want delivered 1, skipped 1 of which orphaned 1", got)
	}
	if len(got) != reflect.TypeFor[kafkamw.Counts]().NumField() {
		t.Errorf("%d outcomes reported, want one per count: %v", len(got), got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, mr, group); len(got) != 0 {
		t.Errorf("a closed reader still reports %v", got)
	}
}
