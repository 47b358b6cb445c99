package main

import (
	"bytes"
	"context"
	"sync"
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

// TestKafkaRemoveWhileReading: sandboxctl removes a sandbox while its
// consumer and the baseline consumer are reading: what was stamped before
// the stamped end is the sandbox consumer's, even when written after the
// command ran; what was stamped from the end on belongs to no one (the
// sandbox has ended), and both readers account for it as an orphan.
func TestKafkaRemoveWhileReading(t *testing.T) {
	c, store := startEtcd(t)
	const margin = time.Second
	ctlMargin := func(now time.Time, args ...string) {
		t.Helper()
		var out bytes.Buffer
		if code := run(context.Background(), append([]string{"-store", store, "-margin", margin.String()}, args...),
			func(string) string { return "" }, func() time.Time { return now }, &out, &out); code != exitOK {
			t.Fatalf("sandboxctl %v: exit %d: %s", args, code, out.String())
		}
	}
	ctlMargin(time.Now().Add(-time.Minute), "create", "pr-42", "-actor", "alice", "-service", "orders=")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	follow := func() *routes.Table {
		src, err := etcdroutes.New(c, "/sandboxkit/routes/", etcdroutes.ProgressEvery(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		tbl := routes.New()
		wg.Add(1)
		go func() { defer wg.Done(); src.Sync(ctx, tbl) }()
		return tbl
	}
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w, err := kafkamw.NewWriter(kafkatest.Writer(t, addrs, topic))
	if err != nil {
		t.Fatal(err)
	}
	sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	write := func(value string, at time.Time) {
		t.Helper()
		if err := w.WriteMessages(sctx, kafka.Message{Value: []byte(value), Time: at}); err != nil {
			t.Fatal(err)
		}
	}

	type read struct{ reader, value string }
	reads := make(chan read, 16)
	group := kafkatest.UniqueName("orders")
	readers := map[string]*kafkamw.Reader{}
	for name, opts := range map[string][]kafkamw.ReaderOption{"baseline": nil, "sandbox": {kafkamw.AsSandbox("pr-42")}} {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), follow(), "orders", opts...)
		if err != nil {
			t.Fatal(err)
		}
		readers[name] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				mctx, m, err := r.FetchMessage(ctx)
				if err != nil {
					return
				}
				if s, ok := propagation.FromContext(mctx); string(m.Value) != "untagged" && (!ok || s.ID != "pr-42") {
					t.Errorf("%s read %s without the sandbox in its context", name, m.Value)
				}
				reads <- read{name, string(m.Value)}
			}
		}()
	}
	got := map[string]string{}
	next := func() read {
		t.Helper()
		select {
		case r := <-reads:
			return r
		case <-time.After(time.Minute):
			t.Fatalf("no message read within a minute; read so far: %v", got)
			return read{}
		}
	}

	write("while-active", time.Now())
	if r := next(); r != (read{"sandbox", "while-active"}) {
		t.Fatalf("before the removal: %+v", r)
	}
	removed := time.Now()
	ctlMargin(removed, "remove", "pr-42")
	end := removed.Add(margin).UTC().Truncate(time.Millisecond)
	want := map[string]string{"before-end": "sandbox", "untagged": "baseline"}
	write("before-end", end.Add(-time.Millisecond))
	write("at-end", end)
	write("after-end", end.Add(100*time.Millisecond))
	// Behind the orphans on the partition: once the baseline reader
	// returns it, it has decided them.
	if err := w.WriteMessages(context.Background(), kafka.Message{Value: []byte("untagged")}); err != nil {
		t.Fatal(err)
	}
	for range want {
		r := next()
		if prev, dup := got[r.value]; dup {
			t.Fatalf("%s read by %s and %s", r.value, prev, r.reader)
		}
		got[r.value] = r.reader
	}
	for v, owner := range want {
		if got[v] != owner {
			t.Errorf("%s read by %q, want %q (end %v)", v, got[v], owner, end)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for name, r := range readers {
		for r.Counts().Orphaned != 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := r.Counts().Orphaned; n != 2 {
			t.Errorf("the %s reader counted %d orphans, want 2 (at-end, after-end)", name, n)
		}
	}
	select {
	case r := <-reads:
		t.Fatalf("read once more: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
}
