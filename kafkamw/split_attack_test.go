package kafkamw_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

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
