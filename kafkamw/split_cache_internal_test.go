package kafkamw

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestSplitTopicCreatedByItsReader: a sandbox's reader creates its topic
// after the baseline reader's client has learnt the cluster (forwarding
// another sandbox's message), so that the baseline's creation finds it
// there (kafka-go's client refreshes its cached view of the cluster after
// a creation that fails too). The copy reaches the sandbox's reader within
// a few forwardLingers, not on the next skip-commit tick (a second here).
func TestSplitTopicCreatedByItsReader(t *testing.T) {
	addrs, topic, table := sandboxesTopic(t, 3, 2) // one message of pr-0
	cfg := kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g"))
	base, err := NewReader(cfg, table, benchService, WithSplit(Split{}))
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
	start := time.Now()
	fctx, fcancel := context.WithTimeout(ctx, 3*time.Second)
	defer fcancel()
	_, m, err := sb.FetchMessage(fctx)
	if err != nil {
		t.Fatalf("pr-1's reader got nothing in %v: %v (baseline counts %+v)", time.Since(start), err, base.Counts())
	}
	if got := time.Since(start); string(m.Value) != "for pr-1" || got > 500*time.Millisecond {
		t.Fatalf("pr-1's reader got %q after %v, want its message within 500ms", m.Value, got)
	}
}
