package kafkamw_test

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
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
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
	// Until one write has been failed half, a write of A's topic that
	// carries one partition only is held (neither written nor answered),
	// so that its copies stay buffered and a later write carries both
	// partitions'. Holding by the clock (until the baseline had decided
	// the topic) raced: a write whose copies were taken before then
	// reached the broker after, carried one partition, was written
	// whole, and nothing was ever failed (CI, stop 28).
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		for i := range req.Topics {
			tp := &req.Topics[i]
			if tp.Topic != f.aTopic || failed.Load() > 0 {
				continue
			}
			if len(tp.Partitions) < 2 {
				tp.Partitions = nil
				continue
			}
			failed.Add(1)
			tp.Partitions = tp.Partitions[:1] // partition 1 is neither written nor answered
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
	// 0: fail half the first write that carries both partitions' copies,
	// holding (neither writing nor answering) those that carry one, so
	// that their copies stay buffered for it (as
	// TestSplitPartialProduceFailure does: holding by the clock raced
	// with a write whose copies were taken before); 1: refuse A's
	// writes; 2: let through.
	var state atomic.Int32
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
				if len(tp.Partitions) < 2 {
					tp.Partitions = nil
					continue
				}
				state.Store(1)
				tp.Partitions = tp.Partitions[:1]
			case 1:
				c.KeepControl() // kfake drops a control function that handles a request otherwise
				return nil, errors.New("A's topic is refused for now"), true
			}
		}
		return nil, nil, false
	})
	f.produce("m", 60)
	base := startConsumer(t, "baseline", f.reader(true), 4)
	waitFor(t, 30*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == 60 })
	waitFor(t, 10*time.Second, "a half-written flush", func() bool { return state.Load() == 1 && ends(t, f.addrs, f.aTopic) > 0 })
	time.Sleep(200 * time.Millisecond) // the half write lands; nothing after it does
	written := ends(t, f.addrs, f.aTopic)
	a1 := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's first reader to get the copies written", func() bool { return a1.seen() >= written })
	first := a1.stop()
	state.Store(2)
	waitFor(t, 10*time.Second, "the flush to be written again", func() bool {
		return base.r.Counts().Forwarded == 20 // all of A's acknowledged
	})
	a2 := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's second reader to catch up", func() bool { return len(first)+int(a2.seen()) >= 20 })
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
	// The baseline's fetches are answered with record batches of 800 KiB
	// (100 messages of 8 KiB a write): kafkatest's MaxWait (50ms), which
	// kafka-go makes the read deadline of a fetch's answer, is too short
	// for those under -race on 2 loaded cores, and every fetch timed out
	// and was made again until the wait below ran out (see largeReader).
	cfg := kafkatest.ReaderConfig(f.addrs, f.topic, f.group)
	cfg.MaxWait = 2 * time.Second
	r, err := kafkamw.NewReader(cfg, f.table, service, kafkamw.WithSkipCommitInterval(20*time.Millisecond), kafkamw.WithSplit(kafkamw.Split{}))
	if err != nil {
		t.Fatal(err)
	}
	base := startConsumer(t, "baseline", r, 5)
	waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == n+30 })
	waitFor(t, 20*time.Second, "A's copies in A's topic", func() bool { return ends(t, f.addrs, f.aTopic) == n+10 })
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return groupLag(t, f.addrs, f.topic, f.group)[0] == 0 })
	base.stop()
}

// TestSplitProduceHangs: the broker never answers the writes to A's topic
// (a partition leader that hangs). Production messages keep being
// delivered; no commit passes A's first message, whose copy is not
// acknowledged; Close returns within its bounds (the write in progress
// and Close's own, forwardTimeout each; a stopping flush loop started
// another write half the time, again and again, taking 20, 30, 40s and
// more) and commits nothing past it. Once
// the broker answers again, a new baseline forwards A's messages and A's
// reader gets every one.
func TestSplitProduceHangs(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 1)
	hung, free := hangProduce(t, c, f.aTopic)
	f.produce("m", 30) // A's first message at offset 1
	r := f.reader(true)
	ctx, cancel := context.WithCancel(context.Background())
	loop := make(chan struct{})
	go func() { // returns and commits every message it can
		defer close(loop)
		for {
			_, m, err := r.FetchMessage(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if err := r.CommitMessages(ctx, m); err != nil && ctx.Err() == nil {
				t.Errorf("commit: %v", err)
			}
		}
	}()
	waitFor(t, 10*time.Second, "the baseline to decide the topic", func() bool {
		c := r.Counts()
		return c.Delivered+c.Skipped == 30 && hung.Load() > 0
	})
	time.Sleep(100 * time.Millisecond) // commits, if any, happen now
	if lag := groupLag(t, f.addrs, f.topic, f.group)[0]; lag < 29 {
		t.Errorf("lag %d while A's first copy (offset 1) is unacknowledged, want at least 29", lag)
	}
	start := time.Now()
	cancel()
	<-loop
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if !errors.Is(err, kafkamw.ErrForward) {
			t.Errorf("Close: %v, want an ErrForward", err)
		}
	case <-time.After(25 * time.Second):
		free()
		t.Fatal("Close did not return within 25s of a hung write (the write in progress, then its own: forwardTimeout each)")
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if lag := groupLag(t, f.addrs, f.topic, f.group)[0]; lag < 29 {
		t.Errorf("lag %d after Close, want at least 29: a commit passed an unacknowledged copy", lag)
	}
	free()
	base2 := startConsumer(t, "baseline", f.reader(true), 1)
	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's reader to get A's 10", func() bool { return a.seen() >= 10 })
	waitFor(t, 20*time.Second, "the new baseline to commit everything", func() bool { return groupLag(t, f.addrs, f.topic, f.group)[0] == 0 })
	time.Sleep(100 * time.Millisecond)
	base2.stop()
	as := a.stop()
	seen := map[string]int{}
	for _, p := range as {
		seen[p.value]++
	}
	for v, id := range f.tags {
		if id == sbA.ID && seen[v] != 1 {
			t.Errorf("%s processed %d times by A's reader, want 1", v, seen[v])
		}
	}
}

// TestSplitFiftySandboxes: 50 sandboxes override the service at once.
// The baseline creates their 50 topics on demand and forwards each its
// share, once; it commits everything; each sandbox's reader gets its
// share (a few of them are run).
func TestSplitFiftySandboxes(t *testing.T) {
	const n, size = 50, 3000
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 3)
	sbs := make([]routes.Sandbox, n)
	for i := range sbs {
		sbs[i] = routes.Sandbox{ID: fmt.Sprintf("pr-%d", i), Services: map[string]routes.Route{
			service: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)},
		}}
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		t.Fatal(err)
	}
	kw := kafkatest.Writer(t, addrs, topic)
	kw.BatchSize = 500
	w := newWriter(t, kw)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := map[string]int{}
	var batch []kafka.Message
	flush := func(id string) {
		wctx := ctx
		if id != "" {
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
		}
		if err := w.WriteMessages(wctx, batch...); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range size { // runs of 10: untagged, then one sandbox's
		id := ""
		if (i/10)%2 == 1 {
			id = sbs[(i/20)%n].ID
			want[id]++
		}
		batch = append(batch, kafka.Message{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "%s/%d", id, i)})
		if len(batch) == 10 {
			flush(id)
		}
	}
	group := kafkatest.UniqueName("g")
	newReader := func(opts ...kafkamw.ReaderOption) *kafkamw.Reader {
		opts = append(opts, kafkamw.WithSplit(kafkamw.Split{}), kafkamw.WithSkipCommitInterval(20*time.Millisecond))
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	base := startConsumer(t, "baseline", newReader(), 1)
	waitFor(t, 30*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == size })
	waitFor(t, 30*time.Second, "the baseline to commit everything", func() bool {
		var lag int64
		for _, l := range groupLag(t, addrs, topic, group) {
			lag += l
		}
		return lag == 0
	})
	for _, sb := range sbs {
		name, err := kafkamw.SplitTopic(topic, group, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := ends(t, addrs, name); got != int64(want[sb.ID]) {
			t.Errorf("%s holds %d copies, want %d", name, got, want[sb.ID])
		}
	}
	for _, i := range []int{0, 17, 49} {
		id := sbs[i].ID
		a := startConsumer(t, id, newReader(kafkamw.AsSandbox(id)), 3)
		waitFor(t, 20*time.Second, id+"'s reader to get its share", func() bool { return a.seen() >= int64(want[id]) })
		for _, p := range a.stop() {
			if !strings.HasPrefix(p.value, id+"/") {
				t.Errorf("%s's reader got %s", id, p.value)
			}
		}
		if c := a.r.Counts(); c.Delivered != int64(want[id]) {
			t.Errorf("%s's reader delivered %d, want %d", id, c.Delivered, want[id])
		}
	}
	if c := base.r.Counts(); c.Forwarded != size/2 {
		t.Errorf("forwarded %d, want %d", c.Forwarded, size/2)
	}
	base.stop()
}

// TestSplitDedupIsBySourceCoordinates: the skipping of second copies
// must not skip legitimate messages. A's messages produced twice on
// purpose (same key, same value) are two messages; with one partition in
// A's topic (Split{Partitions: 1}) for three source partitions, the
// copies of different source partitions interleave and their offsets
// overlap. After a baseline crash between forward and commit, A's reader
// processes each of A's messages once and skips exactly the second
// copies.
func TestSplitDedupIsBySourceCoordinates(t *testing.T) {
	f := newSplitFixture(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	actx := propagation.ContextWithSandbox(ctx, sbA)
	for i := range 12 { // each twice, in a row
		m := kafka.Message{Key: []byte("same"), Value: []byte("again")}
		if i%2 == 1 {
			m.Value = []byte(fmt.Sprintf("again-%d", i/2))
		}
		if err := f.w.WriteMessages(actx, m, m); err != nil {
			t.Fatal(err)
		}
	}
	f.produce("m", 30) // and 10 more of A's
	split := kafkamw.WithSplit(kafkamw.Split{Partitions: 1})
	r1 := f.reader(false, split, kafkamw.WithSkipCommitInterval(time.Hour))
	for r1.Counts().Forwarded < 34 {
		fctx, fcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, _, err := r1.FetchMessage(fctx)
		fcancel()
		if err != nil && ctx.Err() != nil {
			t.Fatal(err)
		}
		if err := kafkamw.FlushForwards(r1); err != nil {
			t.Fatal(err)
		}
	}
	kafkamw.Crash(r1) // nothing committed: every copy is forwarded again
	base := startConsumer(t, "baseline", f.reader(false, split), 1)
	waitFor(t, 20*time.Second, "A's topic to hold each copy twice", func() bool { return ends(t, f.addrs, f.aTopic) == 68 })
	a := startConsumer(t, "sandbox", f.reader(false, split, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's reader to decide both copies", func() bool { return a.seen() == 68 })
	base.stop()
	as := a.stop()
	sourceOrderOnce(t, as)
	if c := a.r.Counts(); c.Delivered != 34 || c.Duplicates != 34 {
		t.Errorf("A's reader counts %+v: want 34 delivered, 34 duplicates", c)
	}
}

// sourceOrderOnce is sourceOrder, and checks that no source message came
// twice.
func sourceOrderOnce(t *testing.T, ps []processed) {
	t.Helper()
	sourceOrder(t, ps)
	seen := map[string]bool{}
	for _, p := range ps {
		for _, h := range p.msg.Headers {
			if h.Key == kafkamw.HeaderSplitSource {
				if seen[string(h.Value)] {
					t.Errorf("source %s processed twice", h.Value)
				}
				seen[string(h.Value)] = true
			}
		}
	}
}

// TestSplitLeaderMoves: the leader of A's topic's partition moves to
// another broker after the baseline learnt the cluster (its cached view
// names the old one, which answers NOT_LEADER_OR_FOLLOWER). The copies
// reach A's topic anyway, once each, and the baseline commits
// everything.
func TestSplitLeaderMoves(t *testing.T) {
	c, err := kfake.NewCluster(
		kfake.NumBrokers(2),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(kafkatest.DefaultPartitions),
		kfake.GroupMinSessionTimeout(10*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f := newSplitFixtureAt(t, c.ListenAddrs(), 1)
	f.produce("m", 30)
	base := startConsumer(t, "baseline", f.reader(true), 1)
	waitFor(t, 10*time.Second, "A's first copies", func() bool { return ends(t, f.addrs, f.aTopic) == 10 })
	from := c.LeaderFor(f.aTopic, 0)
	to := int32(0)
	if from == 0 {
		to = 1
	}
	if err := c.MoveTopicPartition(f.aTopic, 0, to); err != nil {
		t.Fatal(err)
	}
	f.produce("n", 30)
	waitFor(t, 30*time.Second, "A's later copies", func() bool { return ends(t, f.addrs, f.aTopic) == 20 })
	waitFor(t, 30*time.Second, "the baseline to commit everything", func() bool { return groupLag(t, f.addrs, f.topic, f.group)[0] == 0 })
	base.stop()
	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's reader to get A's 20", func() bool { return a.seen() == 20 })
	sourceOrderOnce(t, a.stop())
}

// TestSplitSandboxRemovedWhileBuffered: A's copies are buffered (the
// broker refuses writes to A's topic for now) when A leaves the table and
// the reaper deletes A's topic. Once the broker accepts writes again the
// baseline is not stuck: the copies of the messages it decided while A
// was live are written (its topic created again, reaped again by the next
// pass), A's later messages are orphans, and everything is committed.
func TestSplitSandboxRemovedWhileBuffered(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 1)
	var refuse atomic.Bool
	refuse.Store(true)
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range kr.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == f.aTopic && refuse.Load() {
				c.KeepControl() // kfake drops a control function that handles a request otherwise
				return nil, errors.New("A's topic is refused for now"), true
			}
		}
		return nil, nil, false
	})
	f.produce("m", 30)
	base := startConsumer(t, "baseline", f.reader(true), 1)
	waitFor(t, 10*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == 30 })
	if lag := groupLag(t, f.addrs, f.topic, f.group)[0]; lag < 29 {
		t.Errorf("lag %d with A's copies refused, want at least 29", lag)
	}
	f.table.Remove(sbA.ID)
	cfg := kafkatest.ReaderConfig(f.addrs, f.topic, f.group)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if gone, err := kafkamw.ReapSplitTopics(ctx, cfg, f.table); err != nil || len(gone) != 1 {
		t.Fatalf("reaped %q, %v; want A's topic", gone, err)
	}
	f.produce("n", 30) // A's are orphans now
	refuse.Store(false)
	waitFor(t, 20*time.Second, "the baseline to decide the rest", func() bool { return base.seen() == 60 })
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return groupLag(t, f.addrs, f.topic, f.group)[0] == 0 })
	cnt := base.r.Counts()
	base.stop()
	if cnt.Forwarded != 10 || cnt.Orphaned != 10 {
		t.Errorf("baseline counts %+v: want A's first 10 forwarded, the next 10 orphaned", cnt)
	}
	if got := ends(t, f.addrs, f.aTopic); got != 10 {
		t.Errorf("A's topic, created again, holds %d, want 10", got)
	}
	if gone, err := kafkamw.ReapSplitTopics(ctx, cfg, f.table); err != nil || len(gone) != 1 {
		t.Errorf("second reap: %q, %v; want A's topic again", gone, err)
	}
}

// hangProduce makes the broker hold every produce request that writes to
// topic (a partition leader that never answers) until free is called, or
// the test ends. hung counts the requests held.
func hangProduce(t *testing.T, c *kfake.Cluster, topic string) (hung *atomic.Int32, free func()) {
	t.Helper()
	release := make(chan struct{})
	var once sync.Once
	free = func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	hung = new(atomic.Int32)
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range kr.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == topic {
				select {
				case <-release:
				default:
					hung.Add(1)
					c.SleepControl(func() { <-release })
				}
			}
		}
		return nil, nil, false
	})
	return hung, free
}
