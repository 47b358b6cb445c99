package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
)

// TestSplitCrashWithCopiesUnwritten: the baseline forwards A's messages
// and commits every production message as it processes it (on another
// goroutine than the fetches, as a worker pool does), while the broker
// refuses every write to A's topic after the first copies (a sandbox
// partition leader gone). Then the reader stops, its copies still
// buffered (a crash, or a shutdown whose last flush fails), and the
// group's committed offsets are what a restart starts from: no A's
// message below them may be missing from A's topic (the commit fast path
// of #20 skips the forwarder's lock when it reads that nothing is
// buffered). A second reader on the group, with the broker writing
// again, then brings every copy into A's topic, and no A's message is
// returned to either baseline reader.
func TestSplitCrashWithCopiesUnwritten(t *testing.T) { splitCrash(t, 1) }

// TestSplitRebalanceWithCopiesUnwritten is TestSplitCrashWithCopiesUnwritten
// with a second baseline reader joining the group while the copies hang:
// the partitions are revoked and assigned again (each reader fetches
// again from the group's committed offsets, forwarding again what its
// predecessor left unwritten), and both readers then crash.
func TestSplitRebalanceWithCopiesUnwritten(t *testing.T) { splitCrash(t, 2) }

// splitCrash is the crash test with members baseline readers in the group
// at the crash.
func splitCrash(t *testing.T, members int) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 2)
	// While refusing, a write to A's topic hangs (its partition leader
	// does not answer) until the crash, and is then refused, unwritten.
	var refusing atomic.Bool
	var refused atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	crash := func() { once.Do(func() { close(release) }) }
	t.Cleanup(crash)
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if !refusing.Load() {
			return nil, nil, false
		}
		for _, tp := range kr.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == f.aTopic {
				refused.Add(1)
				c.SleepControl(func() { <-release })
				c.KeepControl() // kfake drops a control function that handles a request otherwise
				return nil, errors.New("A's topic is refused for now"), true
			}
		}
		return nil, nil, false
	})

	run := func(name string, r *kafkamw.Reader, until func() bool) []processed {
		got, err := runWorker(t, name, r, until)
		if err != nil {
			t.Errorf("%s: commit: %v", name, err)
		}
		return got
	}

	f.produce("a", 60)
	r1 := f.reader(true)
	first := run("baseline", r1, func() bool { return ends(t, f.addrs, f.aTopic) >= 20 })
	refusing.Store(true)
	f.produce("b", 90)
	rs := []*kafkamw.Reader{r1}
	for range members - 1 {
		rs = append(rs, f.reader(true))
	}
	decided := func() bool {
		var n int64
		for _, r := range rs {
			c := r.Counts()
			if members > 1 && c.Delivered+c.Skipped < 30 {
				return false // not yet given partitions, or barely
			}
			n += c.Delivered + c.Skipped
		}
		return n >= 150
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() {
			got, err := runWorker(t, fmt.Sprint("baseline", i), r, decided)
			if err != nil && members == 1 {
				t.Errorf("commit: %v", err)
			} else if err != nil {
				t.Logf("commit during the rebalance: %v", err)
			}
			mu.Lock()
			first = append(first, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the flush loops' ticks commit what they may
	crash()
	for i, r := range rs {
		t.Logf("reader %d at the crash: %+v", i, r.Counts())
		if err := r.Close(); err == nil {
			t.Log("the last flush wrote every copy: nothing was in flight at the crash")
		}
	}
	if refused.Load() == 0 {
		t.Fatal("no write to A's topic was refused: no copy was in flight at the crash")
	}

	// What the group committed, against what A's topic holds.
	sources := readPartitions(t, f.addrs, f.topic)
	copies := map[string]bool{}
	for _, m := range readPartitions(t, f.addrs, f.aTopic) {
		copies[string(m.Value)] = true
	}
	lag := groupLag(t, f.addrs, f.topic, f.group)
	endOf := map[int]int64{}
	for _, m := range sources {
		endOf[m.Partition] = max(endOf[m.Partition], m.Offset+1)
	}
	missing := 0
	for _, m := range sources {
		committed := endOf[m.Partition] - lag[m.Partition] // the next offset the group reads
		if f.tags[string(m.Value)] == sbA.ID && m.Offset < committed && !copies[string(m.Value)] {
			missing++
			t.Errorf("A's %s at %d/%d is committed past (next %d) with no copy in A's topic: lost", m.Value, m.Partition, m.Offset, committed)
		}
	}
	held := false
	for p, l := range lag {
		if l > 0 {
			held = true
		}
		t.Logf("partition %d: %d of %d not committed at the crash", p, l, endOf[p])
	}
	if !held {
		t.Error("everything committed at the crash, with copies refused")
	}

	// The restart, with A's topic writable again.
	refusing.Store(false)
	r2 := f.reader(true)
	second := run("baseline", r2, func() bool {
		var l int64
		for _, x := range groupLag(t, f.addrs, f.topic, f.group) {
			l += x
		}
		return l == 0
	})
	if err := r2.Close(); err != nil {
		t.Error(err)
	}
	for _, m := range readPartitions(t, f.addrs, f.aTopic) {
		copies[string(m.Value)] = true
	}
	for _, m := range sources {
		if f.tags[string(m.Value)] == sbA.ID && !copies[string(m.Value)] {
			t.Errorf("A's %s at %d/%d never reached A's topic", m.Value, m.Partition, m.Offset)
		}
	}
	for _, p := range append(first, second...) {
		if f.tags[p.value] == sbA.ID {
			t.Errorf("A's %s returned to the baseline", p.value)
		}
	}
}

// runWorker fetches from r until until reports true, handing each message
// to a worker goroutine that commits it (processed): the commits run
// alongside the fetches, as a worker pool's do. It returns what r
// returned and the first commit error. Safe to call from any goroutine.
func runWorker(t *testing.T, name string, r *kafkamw.Reader, until func() bool) ([]processed, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	work := make(chan kafka.Message, 16)
	done := make(chan error, 1)
	go func() { // the worker: commits each message once processed
		var err error
		for m := range work {
			if cerr := r.CommitMessages(ctx, m); cerr != nil && err == nil {
				err = cerr
			}
		}
		done <- err
	}()
	var got []processed
	for !until() {
		fctx, fcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		mctx, m, err := r.FetchMessage(fctx)
		fcancel()
		if err != nil {
			if ctx.Err() != nil {
				t.Errorf("%s: %v", name, err)
				break
			}
			continue
		}
		_, tagged := sandboxOf(mctx)
		got = append(got, processed{value: string(m.Value), by: name, tagged: tagged, msg: m})
		work <- m
	}
	close(work)
	return got, <-done
}

// readPartitions returns every record of topic, partition by partition.
func readPartitions(t *testing.T, addrs []string, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []kafka.Message
	for p := range 2 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond, Dialer: kafkatest.ReaderConfig(addrs, topic, "").Dialer})
		for {
			lag, err := r.ReadLag(ctx)
			if err != nil {
				r.Close()
				t.Fatal(err)
			}
			if lag == 0 {
				break
			}
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatal(err)
			}
			out = append(out, m)
		}
		r.Close()
	}
	return out
}
