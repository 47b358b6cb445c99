package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestSplitInheritedSourceHeader: a message of A's that already carries a
// sandboxkit-split-source header (a service read a forwarded copy and
// produced a new message with its headers, as header propagation does)
// is a new message, not a second copy. Its copy must not be skipped by
// A's reader on the strength of the inherited coordinates (it was, when
// the first header of that name was read: the inherited "0/0" is below
// A's mark after offset 0's copy, and the message was lost).
func TestSplitInheritedSourceHeader(t *testing.T) {
	f := newSplitFixture(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	actx := propagation.ContextWithSandbox(ctx, sbA)
	inherited := []kafka.Header{{Key: kafkamw.HeaderSplitSource, Value: []byte("0/0")}}
	for i, m := range []kafka.Message{
		{Value: []byte("first")},                      // offset 0, its copy says 0/0
		{Value: []byte("second"), Headers: inherited}, // offset 1, a new message carrying 0/0
		{Value: []byte("third"), Headers: []kafka.Header{{Key: kafkamw.HeaderSplitSource, Value: []byte("0/99")}}}, // offset 2, inherits a mark far ahead
		{Value: []byte("fourth")}, // offset 3
	} {
		if err := f.w.WriteMessages(actx, m); err != nil {
			t.Fatal(i, err)
		}
	}
	base := startConsumer(t, "baseline", f.reader(true), 1)
	waitFor(t, 10*time.Second, "A's 4 copies", func() bool { return ends(t, f.addrs, f.aTopic) == 4 })
	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 10*time.Second, "A's reader to decide its 4 copies", func() bool { return a.seen() == 4 })
	base.stop()
	got := a.stop()
	var vals []string
	for _, p := range got {
		vals = append(vals, p.value)
	}
	if len(vals) != 4 || a.r.Counts().Duplicates != 0 {
		t.Fatalf("A's reader processed %q (counts %+v), want all 4 and no duplicate", vals, a.r.Counts())
	}
}

// TestSplitSandboxTopicDeleted: A's topic is deleted (by an operator, or
// by a reaper whose table was out of date) after the baseline forwarded
// to it. The baseline's later copies must still reach A (its topic is
// created again) and production messages keep being delivered and
// committed: test traffic never blocks production.
func TestSplitSandboxTopicDeleted(t *testing.T) {
	f := newSplitFixture(t, 2)
	f.produce("m", 30)
	base := startConsumer(t, "baseline", f.reader(true), 1)
	waitFor(t, 10*time.Second, "A's first copies", func() bool { return ends(t, f.addrs, f.aTopic) == 10 })
	deleteTopic(t, f.addrs, f.aTopic)
	f.produce("n", 3000)
	waitFor(t, 30*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == 3030 })
	waitFor(t, 30*time.Second, "the baseline to commit everything", func() bool {
		var lag int64
		for _, l := range groupLag(t, f.addrs, f.topic, f.group) {
			lag += l
		}
		return lag == 0
	})
	c := base.r.Counts()
	base.stop()
	if c.Forwarded != 1010 {
		t.Errorf("forwarded %d, want 1010 (counts %+v)", c.Forwarded, c)
	}
}

func deleteTopic(t *testing.T, addrs []string, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	resp, err := (&kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}).DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Errors[topic]; err != nil {
		t.Fatal(err)
	}
}

// controlledBroker starts a kfake cluster as kafkatest.Start does, for
// tests that inject failures with its control functions.
func controlledBroker(t *testing.T) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(kafkatest.DefaultPartitions),
		kfake.GroupMinSessionTimeout(10*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

// sourceOrder checks that ps, one reader's messages, hold each source
// partition's messages in source order (by the copies' source header).
func sourceOrder(t *testing.T, ps []processed) {
	t.Helper()
	last := map[string]int64{}
	for _, p := range ps {
		var src string
		for _, h := range p.msg.Headers {
			if h.Key == kafkamw.HeaderSplitSource {
				src = string(h.Value)
			}
		}
		part, off, ok := strings.Cut(src, "/")
		if !ok {
			t.Errorf("%s has no source header", p.value)
			continue
		}
		o, _ := strconv.ParseInt(off, 10, 64)
		if prev, seen := last[part]; seen && o <= prev {
			t.Errorf("%s: source %s after offset %d of its partition", p.value, src, prev)
		}
		last[part] = o
	}
}

// TestSplitPartialProduceFailure: a flush whose produce request writes
// one partition of A's topic and not the other (here the broker answers
// for one of the two) writes again the copies of the partition that did
// not answer, and only those: A's topic holds each copy once. A's reader
// processes each of A's messages once, in each source partition's order;
// the baseline commits everything.
func TestSplitPartialProduceFailure(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 2)
	var failed atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		for i := range req.Topics {
			tp := &req.Topics[i]
			if tp.Topic == f.aTopic && len(tp.Partitions) == 2 && failed.Load() < 3 {
				failed.Add(1)
				tp.Partitions = tp.Partitions[:1] // partition 1 is neither written nor answered
			}
		}
		return nil, nil, false
	})
	for round := range 5 {
		f.produce(fmt.Sprintf("r%d", round), 30)
	}
	base := startConsumer(t, "baseline", f.reader(true), 4)
	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 3)
	waitFor(t, 30*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == 150 })
	waitFor(t, 30*time.Second, "A's reader to get A's 50", func() bool { return a.seen() >= 50 })
	if failed.Load() == 0 {
		t.Fatal("no produce request carried both of A's partitions: nothing was failed")
	}
	time.Sleep(200 * time.Millisecond) // a second copy delivered would show now
	bs, as := base.stop(), a.stop()
	checkOwners(t, f.tags, f.owner, bs, as)
	sourceOrder(t, as)
	if got := ends(t, f.addrs, f.aTopic); got != 50 {
		t.Errorf("A's topic holds %d copies, want 50: only the partition that did not answer is written again", got)
	}
	if ac := a.r.Counts(); ac.Duplicates != 0 || ac.Delivered != 50 {
		t.Errorf("A's counts %+v: want 50 delivered, no duplicate", ac)
	}
	var lag int64
	for _, l := range groupLag(t, f.addrs, f.topic, f.group) {
		lag += l
	}
	if lag != 0 {
		t.Errorf("baseline lag %d after stop, want 0", lag)
	}
}

// TestSplitPartialFailureThenSandboxRestart: a flush writes one partition
// of A's topic and not the other; A's reader processes the copies written,
// commits them and is closed cleanly (a deploy); then the flush is tried
// again. A's next reader starts with no record of what its predecessor
// decided, so a second copy in A's topic would be processed a second
// time, without any crash. Each of A's messages is processed once.
func TestSplitPartialFailureThenSandboxRestart(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 2)
	var state atomic.Int32 // 0: fail the next write half; 1: refuse A's writes; 2: let through
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		for i := range req.Topics {
			tp := &req.Topics[i]
			if tp.Topic != f.aTopic {
				continue
			}
			switch state.Load() {
			case 0:
				if len(tp.Partitions) == 2 {
					state.Store(1)
					tp.Partitions = tp.Partitions[:1]
				}
			case 1:
				return nil, errors.New("A's topic is refused for now"), true
			}
		}
		return nil, nil, false
	})
	f.produce("m", 60)
	base := startConsumer(t, "baseline", f.reader(true), 4)
	waitFor(t, 30*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == 60 })
	waitFor(t, 10*time.Second, "a half-written flush", func() bool { return state.Load() == 1 && ends(t, f.addrs, f.aTopic) > 0 })
	written := ends(t, f.addrs, f.aTopic)
	a1 := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 10*time.Second, "A's first reader to get the copies written", func() bool { return a1.seen() == written })
	first := a1.stop()
	state.Store(2)
	waitFor(t, 10*time.Second, "the flush to be written again", func() bool {
		return base.r.Counts().Forwarded == 20 // all of A's acknowledged
	})
	a2 := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 10*time.Second, "A's second reader to catch up", func() bool { return int(written)+int(a2.seen()) >= 20 })
	time.Sleep(300 * time.Millisecond) // a second copy processed would show now
	checkOwners(t, f.tags, f.owner, base.stop(), first, a2.stop())
}

// TestSplitLargeBatch: A's copies buffered in one flush add up to more
// than the broker accepts in one record batch (max.message.bytes, 1 MB by
// default), each of them well below it, as the source topic took them.
// They all reach A's topic, and the baseline commits everything: a flush
// too large for one request must not fail for ever, holding production's
// commits back.
func TestSplitLargeBatch(t *testing.T) {
	f := newSplitFixture(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 400
	value := strings.Repeat("x", 8<<10)
	msgs := make([]kafka.Message, 0, 100)
	for i := range n {
		v := fmt.Sprintf("big-%d-%s", i, value)
		f.tags[v] = sbA.ID
		msgs = append(msgs, kafka.Message{Value: []byte(v)})
		if len(msgs) == cap(msgs) {
			if err := f.w.WriteMessages(propagation.ContextWithSandbox(ctx, sbA), msgs...); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	f.produce("m", 30)
	base := startConsumer(t, "baseline", f.reader(true), 5)
	waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == n+30 })
	waitFor(t, 20*time.Second, "A's copies in A's topic", func() bool { return ends(t, f.addrs, f.aTopic) == n+10 })
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return groupLag(t, f.addrs, f.topic, f.group)[0] == 0 })
	base.stop()
}
