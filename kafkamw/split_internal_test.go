package kafkamw

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestSplitTopicCreatedByItsReader: a sandbox's reader creates its topic
// after the baseline reader's client has learnt the cluster (forwarding
// another sandbox's message), so that the baseline's creation finds it
// there (kafka-go's client refreshes its cached view of the cluster after
// a creation that fails too). The copy reaches the sandbox's reader by
// the flush loop's linger, not on a skip-commit tick: the baseline's tick
// is an hour here, so a copy that waited for it never arrives. (The test
// asked for the copy within 500ms of wall clock, which a -race run on a
// loaded machine need not meet, and a tick of a second could meet too.)
func TestSplitTopicCreatedByItsReader(t *testing.T) {
	addrs, topic, table := sandboxesTopic(t, 3, 2) // one message of pr-0
	cfg := kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g"))
	base, err := NewReader(cfg, table, benchService, WithSplit(Split{}), WithSkipCommitInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		for {
			if _, _, err := base.FetchMessage(ctx); err != nil {
				return
			}
		}
	}()
	for base.Counts().Forwarded < 1 {
		if ctx.Err() != nil {
			t.Fatal("pr-0's message was not forwarded")
		}
		time.Sleep(5 * time.Millisecond)
	}

	sb, err := NewReader(cfg, table, benchService, AsSandbox("pr-1"), WithSplit(Split{}))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := sb.prepareSplit(ctx); err != nil { // creates pr-1's topic
		t.Fatal(err)
	}
	kw, closeWriter := kafkatest.NewWriter(addrs, topic)
	defer closeWriter()
	w := mustWriter(t, kw)
	if err := w.WriteMessages(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-1"}), kafka.Message{Value: []byte("for pr-1")}); err != nil {
		t.Fatal(err)
	}
	_, m, err := sb.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("pr-1's reader got nothing: %v (baseline counts %+v): its copy waited for a skip-commit tick", err, base.Counts())
	}
	if string(m.Value) != "for pr-1" {
		t.Fatalf("pr-1's reader got %q, want %q", m.Value, "for pr-1")
	}
}

// TestSplitFlushSpreadsOverTopicsAndPartitions: one flush carries the
// copies of several sandboxes from several source partitions. Each copy
// lands in its sandbox's topic, on its source partition modulo the
// topic's partition count (2 here, for 3 source partitions), and the
// copies of one source partition keep their order; none is lost or
// written twice.
func TestSplitFlushSpreadsOverTopicsAndPartitions(t *testing.T) {
	const size, n = 600, 3
	addrs, topic, table := sandboxesTopic(t, size, n)
	cfg := kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g"))
	base, err := NewReader(cfg, table, benchService, WithSplit(Split{Partitions: 2}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		for {
			if _, _, err := base.FetchMessage(ctx); err != nil {
				return
			}
		}
	}()
	for base.Counts().Forwarded < size/3 {
		if ctx.Err() != nil {
			t.Fatalf("forwarded %d of %d", base.Counts().Forwarded, size/3)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := base.Close(); err != nil {
		t.Fatal(err)
	}
	// The records array the forwarder keeps for its next write holds
	// none of the written copies' keys, values or headers.
	recs := base.forward.records
	if cap(recs) == 0 {
		t.Error("the forwarder kept no records array for its next write")
	}
	for i, r := range recs[:cap(recs)] {
		if r.Key != nil || r.Value != nil || r.Headers != nil {
			t.Fatalf("the kept records array still holds copy %d", i)
		}
	}
	total := 0
	for i := range n {
		id := fmt.Sprintf("pr-%d", i)
		name, err := SplitTopic(topic, cfg.GroupID, id)
		if err != nil {
			t.Fatal(err)
		}
		for p := range 2 {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: name, Partition: p, MaxWait: 50 * time.Millisecond})
			last := map[int]int64{} // by source partition
			// Up to the partition's end: base is closed, every copy is
			// written. (Reading until 500ms went by without a message
			// ended early, all copies uncounted, when the reader's
			// connection alone took that long on a loaded machine.)
			end, err := r.ReadLag(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("%s/%d: %v", name, p, err)
			}
			for range end {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					r.Close()
					t.Fatalf("%s/%d: %v", name, p, err)
				}
				total++
				var sp int
				var so int64
				for _, h := range m.Headers {
					if h.Key == HeaderSplitSource {
						if _, err := fmt.Sscanf(string(h.Value), "%d/%d", &sp, &so); err != nil {
							t.Fatal(err)
						}
					}
				}
				if sp%2 != p {
					t.Errorf("%s: copy of source partition %d on partition %d", name, sp, p)
				}
				if prev, ok := last[sp]; ok && so <= prev {
					t.Errorf("%s/%d: source offset %d after %d", name, p, so, prev)
				}
				last[sp] = so
				if got := string(m.Value); !strings.HasPrefix(got, "order ") {
					t.Errorf("%s: value %q", name, got)
				}
			}
			r.Close()
		}
	}
	if total != size/3 {
		t.Fatalf("%d copies in the sandbox topics, want %d", total, size/3)
	}
}

// TestSplitIdleCommitTakesNoForwarderLock: with no copy buffered, a
// commit of the split mode's baseline reader does not take the
// forwarder's mutex (the filter mode's commit path, BenchmarkSplitIdle);
// once a copy is buffered it holds its partition back again, and the
// flush that writes the copy lets it go.
func TestSplitIdleCommitTakesNoForwarderLock(t *testing.T) {
	plain, _ := syncedTable([]routes.Sandbox{{ID: benchSandbox}})
	r := bareReader(t, plain, benchService, WithSplit(Split{}))
	f := newForwarder(Split{}, kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"})
	r.forward = f
	later := []kafka.Message{{Topic: "t", Partition: 0, Offset: 7}}
	capped := func() []kafka.Message {
		done := make(chan []kafka.Message, 1)
		go func() { done <- f.capped(&r.ledger, later) }()
		select {
		case out := <-done:
			return out
		case <-time.After(10 * time.Second):
			t.Fatal("capped waited for the forwarder's mutex with nothing buffered")
			return nil
		}
	}

	f.mu.Lock() // a forward in progress elsewhere, say
	out := capped()
	f.mu.Unlock()
	if len(out) != 1 || out[0].Offset != 7 {
		t.Fatalf("nothing buffered: capped %+v, want offset 7 as given", out)
	}

	// A copy of offset 5 buffered: the commit stops short of it.
	f.names[sandboxTopic{"t", benchSandbox}] = "t.g.sandbox." + benchSandbox
	msg := kafka.Message{Topic: "t", Partition: 0, Offset: 5, Value: []byte("v")}
	if err := r.handOff(context.Background(), &msg, benchSandbox); err != nil {
		t.Fatal(err)
	}
	for _, m := range f.capped(&r.ledger, later) {
		if m.Offset >= 5 {
			t.Fatalf("copy of offset 5 buffered: capped commits offset %d", m.Offset)
		}
	}

	// Written (as flush leaves the buffer): nothing is held back again.
	f.mu.Lock()
	f.buf, f.src = f.buf[:0], f.src[:0]
	f.firsts()
	f.mu.Unlock()
	f.mu.Lock()
	out = capped()
	f.mu.Unlock()
	if len(out) != 1 || out[0].Offset != 7 {
		t.Fatalf("copy written: capped %+v, want offset 7 as given", out)
	}
}
