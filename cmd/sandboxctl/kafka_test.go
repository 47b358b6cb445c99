package main

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// TestKafkaReadersAgree: the window sandboxctl stamps in etcd decides,
// for a baseline and a sandbox Kafka reader each following etcd with its
// own table, which of them consumes each message of the sandbox: the one
// stamped a millisecond before the route starts goes to the baseline, the
// one stamped at its start to the sandbox, and the same at its end.
func TestKafkaReadersAgree(t *testing.T) {
	c, store := startEtcd(t)

	// The commands ran a while ago, so that the windows are in the past
	// and the readers decide at once.
	created := time.Now().Add(-2 * time.Minute)
	removed := created.Add(time.Minute)
	mustCtl(t, store, created, "create", "pr-42", "-actor", "alice", "-service", "orders=")
	mustCtl(t, store, removed, "remove", "pr-42", "-service", "orders")
	start, end := created.Add(5*time.Second).UTC().Truncate(time.Millisecond), removed.Add(5*time.Second).UTC().Truncate(time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow := func() *routes.Table {
		src, err := etcdroutes.New(c, "/sandboxkit/routes/", etcdroutes.ProgressEvery(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		tbl := routes.New()
		done := make(chan struct{})
		go func() { defer close(done); src.Sync(ctx, tbl) }()
		t.Cleanup(func() { cancel(); <-done })
		return tbl
	}
	baseTable, sbTable := follow(), follow()

	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w, err := kafkamw.NewWriter(kafkatest.Writer(t, addrs, topic))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // message value -> the reader that owns it
	var msgs []kafka.Message
	for _, m := range []struct {
		at    time.Time
		value string
		owner string
	}{
		{start.Add(-time.Millisecond), "before", "baseline"},
		{start, "at-start", "sandbox"},
		{end.Add(-time.Millisecond), "before-end", "sandbox"},
		{end, "at-end", "baseline"},
	} {
		msgs = append(msgs, kafka.Message{Value: []byte(m.value), Time: m.at})
		want[m.value] = m.owner
	}
	sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	if err := w.WriteMessages(sctx, msgs...); err != nil {
		t.Fatal(err)
	}

	group := kafkatest.UniqueName("orders")
	base, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), baseTable, "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	sb, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), sbTable, "orders", kafkamw.AsSandbox("pr-42"))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	got := map[string]string{}
	for name, r := range map[string]*kafkamw.Reader{"baseline": base, "sandbox": sb} {
		for range 2 {
			fctx, fcancel := context.WithTimeout(ctx, time.Minute)
			mctx, m, err := r.FetchMessage(fctx)
			fcancel()
			if err != nil {
				t.Fatalf("%s reader: %v (table Err %v)", name, err, map[string]*routes.Table{"baseline": baseTable, "sandbox": sbTable}[name].Err())
			}
			if s, ok := propagation.FromContext(mctx); !ok || s.ID != "pr-42" {
				t.Errorf("%s processed %s without the sandbox in its context", name, m.Value)
			}
			if prev, dup := got[string(m.Value)]; dup {
				t.Errorf("%s processed by %s and %s", m.Value, prev, name)
			}
			got[string(m.Value)] = name
		}
	}
	for v, owner := range want {
		if got[v] != owner {
			t.Errorf("message %s processed by %q, want %q (window [%v, %v))", v, got[v], owner, start, end)
		}
	}
}
