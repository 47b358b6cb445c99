package kafkamw_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestSplitTopicNamesCollide: SplitTopic("t", "b.c", id) and
// SplitTopic("t.b", "c", id) are the same name, "t.b.c.sandbox.<id>":
// two services' baselines (topics and groups with dots, as "shop.orders"
// and "billing.orders" are) forward into one sandbox topic, and each
// sandbox reader got the other service's messages, and skipped its own of
// the same coordinates as second copies. Each now gets its own only
// (HeaderSplitTopic).
func TestSplitTopicNamesCollide(t *testing.T) {
	addrs := kafkatest.Start(t)
	t1 := kafkatest.UniqueName("t")
	t2 := t1 + ".b"
	for _, tp := range []string{t1, t2} {
		if err := kafkatest.CreateTopic(context.Background(), addrs, tp, 1); err != nil {
			t.Fatal(err)
		}
	}
	g1, g2 := "b.c", "c"
	n1, _ := kafkamw.SplitTopic(t1, g1, sbA.ID)
	n2, _ := kafkamw.SplitTopic(t2, g2, sbA.ID)
	if n1 != n2 {
		t.Fatalf("%s and %s differ: the case is not exercised", n1, n2)
	}
	table, err := routes.NewStatic([]routes.Sandbox{{ID: sbA.ID, Actor: sbA.Actor, Services: map[string]routes.Route{service: {Upstream: "x:1", ActiveFrom: time.Now().Add(-time.Hour)}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := propagation.ContextWithSandbox(context.Background(), sbA)
	for _, tp := range []string{t1, t2} {
		w := newWriter(t, kafkatest.Writer(t, addrs, tp))
		if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("from " + tp)}); err != nil {
			t.Fatal(err)
		}
	}
	split := kafkamw.WithSplit(kafkamw.Split{})
	mk := func(tp, g string, opts ...kafkamw.ReaderOption) *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, tp, g), table, service, append(opts, split, kafkamw.WithSkipCommitInterval(20*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	b1 := startConsumer(t, "baseline 1", mk(t1, g1), 1)
	b2 := startConsumer(t, "baseline 2", mk(t2, g2), 1)
	waitFor(t, 20*time.Second, "both copies", func() bool { return ends(t, addrs, n1) == 2 })
	b1.stop()
	b2.stop()
	a2 := startConsumer(t, "sandbox 2", mk(t2, g2, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "sandbox 2 to decide its topic", func() bool { return a2.seen() >= 1 })
	time.Sleep(500 * time.Millisecond) // a second message would show now
	var got []string
	for _, p := range a2.stop() {
		got = append(got, p.value)
	}
	if len(got) != 1 || got[0] != "from "+t2 {
		t.Errorf("the sandbox reader of %s (group %s) processed %q, want its own message alone, not %s's", t2, g2, got, t1)
	}
}
