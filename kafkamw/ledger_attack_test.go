package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
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

// TestLedgerStressCrashRebalance: one group, messages of production, of a
// sandbox with its own reader (skipped), of an unknown sandbox (orphans,
// skipped) and of a sandbox without an override (the baseline's), on four
// partitions. Reader a is read by three goroutines at once, which commit
// in whatever order they finish (each after the messages of its partition
// returned before it are processed, as a correct concurrent consumer
// does); reader b joins with Run and a handler that fails now and then,
// which rebalances the group mid-stream; a crashes, dropping what its
// goroutines held unprocessed; c joins. Every baseline message must be
// processed (a skipped offset committed past a returned, unprocessed one
// loses it), and once all is processed the group must have committed to
// the end of every partition: the skipped messages are committed.
func TestLedgerStressCrashRebalance(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 4)
	past := time.Now().Add(-time.Hour)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-own", Services: map[string]routes.Route{service: {Upstream: "h:1", ActiveFrom: past}}},
		{ID: "pr-nodb"},
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"", "pr-own", "pr-99", "", "pr-nodb", "pr-own", "pr-99"}
	const n = 700
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ours := map[string]bool{}
	for i := range n {
		v := fmt.Sprintf("m-%03d", i)
		id := kinds[i%len(kinds)]
		wctx := ctx
		if id != "" {
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
		}
		if id == "" || id == "pr-nodb" {
			ours[v] = true
		}
		if err := w.WriteMessages(wctx, kafka.Message{Key: []byte(v), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	group := kafkatest.UniqueName("g")
	newReader := func() *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service,
			kafkamw.WithSkipCommitInterval(5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var mu sync.Mutex
	got := map[string]int{}
	record := func(v string) { mu.Lock(); got[string(v)]++; mu.Unlock() }
	processed := func() int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for v := range got {
			if ours[v] {
				k++
			}
		}
		return k
	}

	// a: three goroutines on one reader.
	a := newReader()
	actx, crashA := context.WithCancel(ctx)
	var (
		crashed atomic.Bool
		amu     sync.Mutex
		acond   = sync.NewCond(&amu)
		pending = map[int]map[int64]bool{} // per partition: returned to a, not yet processed
		awg     sync.WaitGroup
	)
	for g := range 3 {
		awg.Add(1)
		go func() {
			defer awg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for {
				_, m, err := a.FetchMessage(actx)
				if err != nil {
					return
				}
				amu.Lock()
				if pending[m.Partition] == nil {
					pending[m.Partition] = map[int64]bool{}
				}
				pending[m.Partition][m.Offset] = true
				amu.Unlock()
				time.Sleep(time.Duration(2+rng.IntN(15)) * time.Millisecond) // slow enough for b to join mid-stream
				if crashed.Load() {
					return // the crash took it: not processed
				}
				record(string(m.Value))
				amu.Lock()
				delete(pending[m.Partition], m.Offset)
				acond.Broadcast()
				for { // commit only once the partition's earlier messages are processed
					earlier := false
					for o := range pending[m.Partition] {
						if o < m.Offset {
							earlier = true
						}
					}
					if !earlier || crashed.Load() {
						break
					}
					acond.Wait()
				}
				amu.Unlock()
				if crashed.Load() {
					return
				}
				_ = a.CommitMessages(actx, m)
			}
		}()
	}
	waitFor(t, 30*time.Second, "a to process messages", func() bool { return a.Counts().Delivered > 60 })

	// b joins with Run, its handler failing on a third of first attempts.
	b := newReader()
	bctx, stopB := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	var tries sync.Map
	go func() {
		bdone <- b.Run(bctx, func(_ context.Context, m kafka.Message) error {
			k := string(m.Value)
			if _, again := tries.LoadOrStore(k, true); !again && len(k)%3 == int(m.Offset%3) {
				return errors.New("transient")
			}
			record(k)
			return nil
		}, kafkamw.WithBackoff(time.Millisecond, 5*time.Millisecond), kafkamw.WithRetries(10))
	}()
	waitFor(t, 30*time.Second, "b to join and decide messages", func() bool {
		bc := b.Counts()
		return bc.Delivered+bc.Skipped > 10 || processed() == len(ours)
	})

	// a crashes with messages in its goroutines' hands.
	crashed.Store(true)
	amu.Lock()
	acond.Broadcast()
	amu.Unlock()
	kafkamw.Crash(a)
	crashA()
	awg.Wait()

	c := startConsumer(t, "c", newReader(), 3)
	waitFor(t, 60*time.Second, "every baseline message processed", func() bool {
		return processed()+countValues(c) >= len(ours)
	})
	// c commits every third message, and the rest when it stops: stop it,
	// and b, alone in the group again, must commit every partition to its
	// end (the skipped messages too).
	for _, p := range c.stop() {
		record(p.value)
	}
	zero := func() bool {
		for _, l := range groupLag(t, addrs, topic, group) {
			if l != 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, "the group to commit every partition to its end", zero)
	stopB()
	if err := <-bdone; err != nil {
		t.Error(err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for v := range ours {
		if got[v] == 0 {
			t.Errorf("%s lost", v)
		}
	}
	for v := range got {
		if !ours[v] {
			t.Errorf("%s, not the baseline's, processed", v)
		}
	}
	t.Logf("a %+v; b %+v; c %+v", a.Counts(), b.Counts(), c.r.Counts())
}

// countValues is how many distinct values of the baseline c has processed
// that no one else has; an estimate for waiting only.
func countValues(c *consumer) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// TestRunPutBackThenSkippedCommits: Run stops while its handler holds a
// message, which it keeps; before the next Run the route table changes
// (a route published with an activation time in the past) and the kept
// message is now the sandbox's: the baseline skips it, and the sandbox's
// messages behind it. Nothing the baseline returned remains to be
// committed, so the flush must commit past them all: the ledger must not
// keep counting the kept message as returned and uncommitted, which held
// the partition's commits back until the next production message.
func TestRunPutBackThenSkippedCommits(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	past := time.Now().Add(-time.Hour)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-own", Services: map[string]routes.Route{service: {Upstream: "h:1", ActiveFrom: past}}},
		{ID: "pr-late"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	for i, id := range []string{"", "pr-late", "pr-own", "pr-own", "pr-own"} {
		wctx := ctx
		if id != "" {
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
		}
		if err := w.WriteMessages(wctx, kafka.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	group := kafkatest.UniqueName("g")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service,
		kafkamw.WithSkipCommitInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rctx, stop := context.WithCancel(ctx)
	err = r.Run(rctx, func(hctx context.Context, m kafka.Message) error {
		if m.Offset == 0 {
			return nil
		}
		// pr-late gets a route for the service, active since before its
		// message: the message is now its reader's.
		if err := table.Put(routes.Sandbox{ID: "pr-late", Services: map[string]routes.Route{service: {Upstream: "h:2", ActiveFrom: past}}}); err != nil {
			t.Error(err)
		}
		stop()
		<-hctx.Done()
		return hctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop = context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(rctx, func(_ context.Context, m kafka.Message) error {
			t.Errorf("message %d, no longer the baseline's, returned", m.Offset)
			return nil
		})
	}()
	waitFor(t, 10*time.Second, "the reader to skip the kept message and the sandbox's behind it", func() bool {
		return r.Counts().Skipped == 4
	})
	waitFor(t, 10*time.Second, "the skipped messages to be committed", func() bool {
		return groupLag(t, addrs, topic, group)[0] == 0
	})
	stop()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
