package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestSplitCommitNeverPassesBufferedCopy attacks the commit fast path
// (forwarder.holding, #20): one goroutine fetches as the fetch lock's
// holder does (handOff then ledger.skip for a sandbox's message,
// ledger.deliver for production's), another commits every production
// message it is handed (as Run does), a third commits what the ledger
// says may be committed (the flush loop's tick), and a fourth flushes the
// copies against a real broker that refuses one produce request in
// three (the copies stay buffered, the flag set, and are written again).
// At the moment each commit is sent, no copy of a source offset at or
// below the offset committed may still be buffered: it is not yet
// acknowledged, and a crash then would lose it. At the end every copy is
// in the sandbox topic and the commits reached the end of both
// partitions. Run with -race and -count.
func TestSplitCommitNeverPassesBufferedCopy(t *testing.T) {
	const perPartition = 1500
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	topic := kafkatest.Topic(t, addrs, 2)
	group := kafkatest.UniqueName("g")
	table, err := syncedTable([]routes.Sandbox{{ID: benchSandbox}})
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, benchService, WithSplit(Split{}))
	f := newForwarder(Split{}, kafkatest.ReaderConfig(addrs, topic, group))
	defer f.close()
	r.forward = f
	sandboxTopicName, err := SplitTopic(topic, group, benchSandbox)
	if err != nil {
		t.Fatal(err)
	}

	var produces, flushes, flushErrs atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if failing.Load() && produces.Add(1)%3 == 0 {
			c.KeepControl() // kfake drops a control function that handles a request otherwise
			return nil, errors.New("refused for the test"), true
		}
		return nil, nil, false
	})

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var violations atomic.Int64
	var cmu sync.Mutex
	committed := map[int]int64{}
	// send stands for the group reader's CommitMessages: it checks,
	// under the forwarder's mutex, that nothing committed lies at or
	// past a buffered copy of its partition.
	send := func(_ context.Context, msgs ...kafka.Message) error {
		f.mu.Lock()
		for _, m := range msgs {
			for _, s := range f.src {
				if s.topic == m.Topic && s.partition == m.Partition && s.offset <= m.Offset {
					if violations.Add(1) <= 5 {
						t.Errorf("commit of %s/%d/%d with the copy of offset %d buffered, not acknowledged (holding %v)",
							m.Topic, m.Partition, m.Offset, s.offset, f.holding.Load())
					}
					break
				}
			}
		}
		f.mu.Unlock()
		cmu.Lock()
		for _, m := range msgs {
			committed[m.Partition] = max(committed[m.Partition], m.Offset)
		}
		cmu.Unlock()
		return nil
	}

	delivered := make(chan kafka.Message, 64)
	fetched := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the fetch lock's holder
		defer close(fetched)
		defer close(delivered)
		for off := range int64(perPartition) {
			if off%4 == 0 {
				time.Sleep(time.Millisecond) // the flushes write a few copies at a time
			}
			for p := range 2 {
				msg := kafka.Message{Topic: topic, Partition: p, Offset: off, Value: []byte(strconv.FormatInt(off, 10))}
				if off%3 == 1 || off%7 == 0 {
					if err := r.handOff(ctx, &msg, benchSandbox); err != nil {
						t.Error(err)
						return
					}
					r.ledger.skip(&msg)
					continue
				}
				r.ledger.deliver(&msg)
				delivered <- msg
			}
		}
	})
	wg.Go(func() { // Run's committer: each message as it is processed
		for m := range delivered {
			if err := r.commit(ctx, send, []kafka.Message{m}); err != nil {
				t.Error(err)
			}
		}
	})
	tick := func() { // flushSkipped's commit, after its flush
		r.commitMu.Lock()
		defer r.commitMu.Unlock()
		if msgs := r.forward.capped(&r.ledger, r.ledger.committable()); len(msgs) > 0 {
			_ = send(ctx, msgs...)
			r.ledger.committed(msgs)
		}
	}
	wg.Go(func() {
		for {
			select {
			case <-fetched:
				return
			case <-time.After(100 * time.Microsecond):
			}
			tick()
		}
	})
	wg.Go(func() { // the flush loop
		for {
			select {
			case <-fetched:
				return
			case <-time.After(time.Duration(produces.Load()%3) * time.Millisecond):
			}
			flushes.Add(1)
			if err := r.flushForwards(ctx); err != nil { // refused: retried
				flushErrs.Add(1)
			}
		}
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	failing.Store(false)
	for len(f.bufSnapshot()) > 0 {
		if err := r.flushForwards(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tick()
	if f.holding.Load() {
		t.Error("nothing buffered, holding still set")
	}
	for p := range 2 {
		if committed[p] != perPartition-1 {
			t.Errorf("partition %d committed up to %d, want %d", p, committed[p], perPartition-1)
		}
	}
	t.Logf("%d produce requests, %d flushes, %d failed", produces.Load(), flushes.Load(), flushErrs.Load())
	if produces.Load() < 10 {
		t.Errorf("%d produce requests, %d flushes, %d failed: the flushes did not interleave with the commits", produces.Load(), flushes.Load(), flushErrs.Load())
	}
	// Every copy is in the sandbox topic (once or more: a refused
	// request may have been written nonetheless).
	want := map[string]bool{}
	for off := range int64(perPartition) {
		if off%3 == 1 || off%7 == 0 {
			for p := range 2 {
				want[fmt.Sprintf("%d/%d", p, off)] = true
			}
		}
	}
	for p := range 2 {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: sandboxTopicName, Partition: p, MaxWait: 50 * time.Millisecond})
		for {
			lag, err := rd.ReadLag(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if lag == 0 {
				break
			}
			m, err := rd.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range m.Headers {
				if h.Key == HeaderSplitSource {
					delete(want, string(h.Value))
				}
			}
		}
		rd.Close()
	}
	if len(want) > 0 {
		var some []string
		for k := range want {
			if some = append(some, k); len(some) == 5 {
				break
			}
		}
		t.Errorf("%d copies missing from the sandbox topic, e.g. %s", len(want), strings.Join(some, " "))
	}
}

// bufSnapshot returns the buffered copies' sources, under mu.
func (f *forwarder) bufSnapshot() []topicPartitionOffset {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]topicPartitionOffset(nil), f.src...)
}

// TestSplitRefusedCopyHoldsUntilGivenUp: a copy the sandbox topic refuses
// as too large (its limit lowered by an operator) is kept for the write
// after the forwarder raises the limit, refused again, and only then
// given up. Through the kept write and the give-up's accounting it still
// holds its partition's commits back, the commit fast path's flag
// included; once it has left the buffer the commits go past it.
func TestSplitRefusedCopyHoldsUntilGivenUp(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	group := kafkatest.UniqueName("g")
	table, err := syncedTable([]routes.Sandbox{{ID: benchSandbox}})
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, benchService, WithSplit(Split{}))
	f := newForwarder(Split{}, kafkatest.ReaderConfig(addrs, topic, group))
	defer f.close()
	r.forward = f
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name, err := SplitTopic(topic, group, benchSandbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.ensure(ctx, sandboxTopic{topic, benchSandbox}, name); err != nil {
		t.Fatal(err)
	}
	// An operator lowers the sandbox topic's limit below the copy.
	resp, err := f.client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: name,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: maxMessageBytes, Value: "1000", ConfigOperation: kafka.ConfigOperationSet}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, rr := range resp.Resources {
		if rr.Error != nil {
			t.Fatal(rr.Error)
		}
	}
	// A copy larger than the source's own limit: refused after the raise
	// too.
	big := kafka.Message{Topic: topic, Partition: 0, Offset: 5, Value: make([]byte, 2<<20)}
	if err := r.handOff(ctx, &big, benchSandbox); err != nil {
		t.Fatal(err)
	}
	r.ledger.skip(&big)
	later := kafka.Message{Topic: topic, Partition: 0, Offset: 6}
	r.ledger.deliver(&later)

	var sent []kafka.Message
	send := func(_ context.Context, msgs ...kafka.Message) error { sent = append(sent, msgs...); return nil }
	held := func(when string) {
		t.Helper()
		sent = sent[:0]
		if !f.holding.Load() {
			t.Errorf("%s: the refused copy is buffered, holding is not set", when)
		}
		if err := r.commit(ctx, send, []kafka.Message{later}); err != nil {
			t.Fatal(err)
		}
		for _, m := range sent {
			if m.Offset >= big.Offset {
				t.Errorf("%s: commit of offset %d past the refused copy of offset %d", when, m.Offset, big.Offset)
			}
		}
	}
	given := 0
	giveUp := func(msg *kafka.Message, _ string, err error) {
		given++
		if msg.Offset != big.Offset {
			t.Errorf("gave up offset %d, want %d", msg.Offset, big.Offset)
		}
		held("while the copy is given up")
	}
	for i := 0; given == 0 && i < 5; i++ {
		if _, err := f.flush(ctx, giveUp); err != nil {
			t.Fatal(err)
		}
		if given == 0 {
			if len(f.raisedFor) == 0 {
				t.Fatal("refused without a raise: the kept write is not exercised")
			}
			held("kept for the write after the raise")
		}
	}
	if given != 1 {
		t.Fatalf("given up %d times, want once", given)
	}
	if f.holding.Load() {
		t.Error("the given-up copy left the buffer, holding still set")
	}
	sent = sent[:0]
	if err := r.commit(ctx, send, []kafka.Message{later}); err != nil {
		t.Fatal(err)
	}
	if len(sent) == 0 || sent[len(sent)-1].Offset != later.Offset {
		t.Errorf("after the give-up: committed %+v, want offset %d", sent, later.Offset)
	}
}
