package kafkamw_test

import (
	"context"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/kafkamw"
)

// TestSplitProduceHangsProductionCommits: the broker never answers the
// writes to A's topic (its partition leader hangs). Production's messages
// keep being returned, and committing them must not wait behind the
// hung write of A's copies: each commit stops short of A's first
// message, but returns.
func TestSplitProduceHangsProductionCommits(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 1)
	hung, free := hangProduce(t, c, f.aTopic)
	f.produce("m", 30)
	// Skipped messages are committed every millisecond, so the tick,
	// not the 10 ms linger, is what first writes A's copies and hangs.
	r := f.reader(true, kafkamw.WithSkipCommitInterval(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var worst time.Duration
	commits := 0
	consume := func(delivered int64) {
		for r.Counts().Delivered < delivered {
			_, m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := r.CommitMessages(ctx, m); err != nil {
				t.Fatal(err)
			}
			worst = max(worst, time.Since(start))
			commits++
		}
	}
	consume(20)
	waitFor(t, 10*time.Second, "the write of A's copies to hang", func() bool { return hung.Load() > 0 })
	f.produce("n", 30)
	consume(40)
	t.Logf("%d commits, the slowest %v", commits, worst.Round(time.Millisecond))
	if worst > commitBound {
		t.Errorf("a commit of production's messages took %v behind the hung write of A's copies, want under %v", worst.Round(time.Millisecond), commitBound)
	}
	free()
	if err := r.Close(); err != nil {
		t.Log(err)
	}
}
