package kafkamw_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/kafkamw"
)

// Attacks on the reader's ledger and on the messages Run puts back (#14).

// TestSplitRunPutBackNotDuplicate: a split-mode sandbox reader's Run is
// stopped while its handler works on a copy. Run keeps the message, so
// that the next Run returns it first. The reader had already recorded the
// copy's source offset as decided, so the kept copy must not be taken for
// a second copy of the same source message on its way out again: skipped
// as a duplicate, it would never be processed, and the next commit on the
// partition would commit past it.
func TestSplitRunPutBackNotDuplicate(t *testing.T) {
	f := newSplitFixture(t, 1)
	f.produce("m", 30)
	base := startConsumer(t, "baseline", f.reader(true), 5)
	waitFor(t, 20*time.Second, "the baseline to forward A's 10", func() bool { return ends(t, f.addrs, f.aTopic) == 10 })
	base.stop()

	sb := f.reader(true, kafkamw.AsSandbox(sbA.ID))
	defer sb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The first Run stops while its handler holds the first copy.
	var first string
	rctx, stop := context.WithCancel(ctx)
	err := sb.Run(rctx, func(hctx context.Context, m kafka.Message) error {
		if first == "" {
			first = string(m.Value)
		}
		stop()
		<-hctx.Done()
		return hctx.Err()
	})
	if err != nil || first == "" {
		t.Fatalf("first Run = %v, first message %q", err, first)
	}

	// The second Run must receive it again, then the rest.
	var mu sync.Mutex
	seen := map[string]bool{}
	rctx, stop = context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- sb.Run(rctx, func(_ context.Context, m kafka.Message) error {
			mu.Lock()
			seen[string(m.Value)] = true
			mu.Unlock()
			return nil
		})
	}()
	waitFor(t, 20*time.Second, "A's reader to decide its 10 copies again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return int64(len(seen))+sb.Counts().Duplicates >= 10
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !seen[first] {
		t.Errorf("%s, kept by the first Run, never reached the second: counts %+v", first, sb.Counts())
	}
	if c := sb.Counts(); c.Duplicates != 0 {
		t.Errorf("counts %+v: want no duplicates (each copy forwarded once)", c)
	}
	// Nothing is left uncommitted behind the kept copy.
	waitFor(t, 10*time.Second, "A's group to commit its topic", func() bool {
		for _, l := range groupLag(t, f.addrs, f.aTopic, kafkamw.SandboxGroup(f.group, sbA.ID)) {
			if l != 0 {
				return false
			}
		}
		return true
	})
}
