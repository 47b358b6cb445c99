package kafkamw_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// A source topic may accept larger messages than the broker's default
// max.message.bytes (1 MiB), which a sandbox topic created without a
// configuration gets: a sandbox's message that fits the source and not
// its sandbox topic was refused on every flush, stayed buffered for ever
// and held back every commit of its source partition, production's
// included (issue #14's rule: test traffic must never be the message that
// blocks a partition).

const (
	sourceLimit = 4 << 20 // the source topic's max.message.bytes
	bigSize     = 2 << 20 // a sandbox message above the broker's default
)

// largeMsg is one message of a test: its key (and value's prefix),
// whether it is A's, and its value's size (the key alone when 0).
type largeMsg struct {
	key  string
	a    bool
	size int
}

// largeTraffic is production's messages around A's, one of which is
// larger than the broker's default limit.
var largeTraffic = []largeMsg{
	{"p0", false, 0}, {"a0", true, 0}, {"p1", false, 0}, {"big", true, bigSize},
	{"p2", false, 0}, {"a1", true, 0}, {"p3", false, 0},
}

// maxBytes is a topic's max.message.bytes of n.
func maxBytes(n int) kafka.ConfigEntry {
	return kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(n)}
}

// createTopicWith creates topic with configs and waits for its leaders.
func createTopicWith(t *testing.T, addrs []string, topic string, partitions int, configs ...kafka.ConfigEntry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	resp, err := (&kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}).CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Errors[topic]; err != nil {
		t.Fatal(err)
	}
	if err := kafkatest.CreateTopic(ctx, addrs, topic, partitions); err != nil { // exists: waits for its leaders
		t.Fatal(err)
	}
}

// topicMaxBytes is topic's max.message.bytes.
func topicMaxBytes(t *testing.T, addrs []string, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	resp, err := (&kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}).DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Resources {
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "max.message.bytes" {
				n, err := strconv.Atoi(e.ConfigValue)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
	}
	t.Fatalf("%s: no max.message.bytes in %+v", topic, resp.Resources)
	return 0
}

// newLargeFixture is newSplitFixtureAt with a one-partition source topic
// whose max.message.bytes is sourceLimit, and a writer that writes
// messages up to it.
func newLargeFixture(t *testing.T, addrs []string) *splitFixture {
	t.Helper()
	topic := kafkatest.UniqueName(t.Name())
	createTopicWith(t, addrs, topic, 1, maxBytes(sourceLimit))
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: sbA.ID, Actor: sbA.Actor, Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: sbB.ID, Actor: sbB.Actor},
	})
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("orders")
	name, err := kafkamw.SplitTopic(topic, group, sbA.ID)
	if err != nil {
		t.Fatal(err)
	}
	kw := kafkatest.Writer(t, addrs, topic)
	kw.BatchBytes = sourceLimit
	return &splitFixture{t: t, addrs: addrs, topic: topic, group: group, table: table,
		w: newWriter(t, kw), tags: map[string]string{}, times: map[string]time.Time{}, aTopic: name}
}

// largeReader is a split-mode reader of the fixture's group. Its
// ReaderConfig.MaxBytes is kafka-go's default (1 MB): the broker returns
// a first record batch whole however large.
//
// kafka-go gives a fetch's answer MaxWait to arrive and each message of it
// ReadBatchTimeout to be read, and on a timeout fetches it again from the
// start. kafkatest's 50ms and 1s are far too short for an answer that
// carries 2 MiB under -race on 2 loaded cores: the in-process broker took
// longer to encode and send it, every fetch of the big message timed out
// (read tcp ...: i/o timeout, hundreds of times), and the tests' waits
// (20s) ran out with the big message never read. Here they are 2s and
// 10s (kafka-go's default); an idle fetch still returns as soon as a
// message arrives.
func (f *splitFixture) largeReader(opts ...kafkamw.ReaderOption) *kafkamw.Reader {
	f.t.Helper()
	cfg := kafkatest.ReaderConfig(f.addrs, f.topic, f.group)
	cfg.MaxWait, cfg.ReadBatchTimeout = 2*time.Second, 10*time.Second
	opts = append(opts, kafkamw.WithSkipCommitInterval(20*time.Millisecond), kafkamw.WithSplit(kafkamw.Split{}))
	r, err := kafkamw.NewReader(cfg, f.table, service, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// produceLarge writes msgs, in order, to the fixture's topic.
func (f *splitFixture) produceLarge(msgs []largeMsg) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range msgs {
		v := m.key
		if m.size > len(v) {
			v += strings.Repeat("x", m.size-len(v))
		}
		wctx := ctx
		if m.a {
			wctx = propagation.ContextWithSandbox(ctx, sbA)
		}
		if err := f.w.WriteMessages(wctx, kafka.Message{Key: []byte(m.key), Value: []byte(v)}); err != nil {
			f.t.Fatal(m.key, err)
		}
	}
}

// keys returns the keys of ps, in order.
func keys(ps []processed) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, string(p.msg.Key))
	}
	return out
}

// keysOf returns the keys of msgs that are A's (a) or production's.
func keysOf(msgs []largeMsg, a bool, except ...string) []string {
	var out []string
	for _, m := range msgs {
		if m.a == a && !slices.Contains(except, m.key) {
			out = append(out, m.key)
		}
	}
	return out
}

// lagOf is group's total lag on topic.
func lagOf(t *testing.T, addrs []string, topic, group string) int64 {
	t.Helper()
	var n int64
	for _, l := range groupLag(t, addrs, topic, group) {
		n += l
	}
	return n
}

// TestSplitLargeMessageSandboxTopicSized: A's topic, created by the
// baseline's first forward or by A's reader before it, gets the source
// topic's max.message.bytes (and room for the header a copy adds), so A's
// 2 MiB message, which the source accepted, reaches A's reader; the
// production messages around it are processed and committed. It failed
// with a topic at the broker's default: the copy was refused on every
// flush and the baseline committed nothing past it.
func TestSplitLargeMessageSandboxTopicSized(t *testing.T) {
	for _, first := range []string{"baseline", "sandbox"} {
		t.Run("created by the "+first, func(t *testing.T) {
			f := newLargeFixture(t, kafkatest.Start(t))
			f.produceLarge(largeTraffic)
			var a *consumer
			if first == "sandbox" {
				a = startConsumer(t, "sandbox", f.largeReader(kafkamw.AsSandbox(sbA.ID)), 1)
				waitFor(t, 10*time.Second, "A's reader to create A's topic", func() bool { return slices.Contains(topicsOf(t, f.addrs), f.aTopic) })
			}
			base := startConsumer(t, "baseline", f.largeReader(), 1)
			waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == int64(len(largeTraffic)) })
			waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, f.addrs, f.topic, f.group) == 0 })
			if a == nil {
				a = startConsumer(t, "sandbox", f.largeReader(kafkamw.AsSandbox(sbA.ID)), 1)
			}
			waitFor(t, 20*time.Second, "A's reader to get A's 3", func() bool { return a.r.Counts().Delivered == 3 })
			bs, as := base.stop(), a.stop()
			if got, want := keys(bs), keysOf(largeTraffic, false); !slices.Equal(got, want) {
				t.Errorf("the baseline processed %v, want %v", got, want)
			}
			if got, want := keys(as), keysOf(largeTraffic, true); !slices.Equal(got, want) {
				t.Errorf("A's reader processed %v, want %v", got, want)
			}
			for _, p := range as {
				if string(p.msg.Key) == "big" && len(p.msg.Value) != bigSize {
					t.Errorf("A's big message has %d bytes, want %d", len(p.msg.Value), bigSize)
				}
			}
			if c := base.r.Counts(); c.Forwarded != 3 || c.Unforwardable != 0 {
				t.Errorf("baseline counts %+v: want A's 3 forwarded", c)
			}
			if got := topicMaxBytes(t, f.addrs, f.aTopic); got < sourceLimit {
				t.Errorf("A's topic's max.message.bytes is %d, want at least the source's %d", got, sourceLimit)
			}
		})
	}
}

// TestSplitLargeMessageGivenUp: A's topic exists already with the
// broker's default limit (created by an older baseline, or by hand) and
// the broker refuses to raise it (an ACL refuses IncrementalAlterConfigs),
// so the copy of A's 2 MiB message is refused whatever the forwarder
// does. The copy is given up, as an unforwardable message: skipped,
// dead-lettered when a dead-letter writer is set (counted and audited
// when that write fails too), counted, audited with the broker's refusal;
// production's messages behind it are processed and committed, and A's
// other messages reach A's reader. It wedged the source partition: the
// copy was written again on every flush and no commit passed it.
func TestSplitLargeMessageGivenUp(t *testing.T) {
	for _, mode := range []string{"dead letter", "no dead letter", "dead letter down"} {
		t.Run(mode, func(t *testing.T) {
			cl, addrs := controlledBroker(t)
			f := newLargeFixture(t, addrs)
			createTopicWith(t, addrs, f.aTopic, 1) // the broker's default max.message.bytes
			denied := denyAlterConfigs(cl, f.aTopic)
			var log auditLog
			opts := []kafkamw.ReaderOption{kafkamw.WithLogger(log.logger())}
			var dlTopic string
			switch mode {
			case "dead letter":
				dlTopic = kafkatest.UniqueName("dead")
				createTopicWith(t, addrs, dlTopic, 1, maxBytes(2*sourceLimit))
				dw := kafkatest.Writer(t, addrs, dlTopic)
				dw.BatchBytes = 2 * sourceLimit
				opts = append(opts, kafkamw.WithDeadLetter(dw))
			case "dead letter down":
				opts = append(opts, kafkamw.WithDeadLetter(downDeadLetter(t, addrs)))
			}
			f.produceLarge(largeTraffic)
			base := startConsumer(t, "baseline", f.largeReader(opts...), 1)
			a := startConsumer(t, "sandbox", f.largeReader(kafkamw.AsSandbox(sbA.ID)), 1)
			waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == int64(len(largeTraffic)) })
			waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, f.addrs, f.topic, f.group) == 0 })
			waitFor(t, 20*time.Second, "A's reader to get A's other 2", func() bool { return a.r.Counts().Delivered == 2 })
			bs, as := base.stop(), a.stop()
			if got, want := keys(bs), keysOf(largeTraffic, false); !slices.Equal(got, want) {
				t.Errorf("the baseline processed %v, want %v", got, want)
			}
			if got, want := keys(as), keysOf(largeTraffic, true, "big"); !slices.Equal(got, want) {
				t.Errorf("A's reader processed %v, want %v", got, want)
			}
			c := base.r.Counts()
			dl, dlFailed := int64(0), int64(0)
			switch mode {
			case "dead letter":
				dl = 1
			case "dead letter down":
				dlFailed = 1
			}
			if denied.Load() == 0 {
				t.Fatal("no IncrementalAlterConfigs of A's topic was refused: the case is not exercised")
			}
			if c.Forwarded != 2 || c.Unforwardable != 1 || c.DeadLettered != dl || c.DeadLetterFailed != dlFailed || c.Skipped != 3 || c.Delivered != 4 {
				t.Errorf("baseline counts %+v: want 2 forwarded, 1 unforwardable, %d dead-lettered, %d dead-letter writes failed", c, dl, dlFailed)
			}
			text := log.text()
			if !strings.Contains(text, "cannot be forwarded in the split mode") || !strings.Contains(text, "too large") {
				t.Errorf("no audit record of the refused copy:\n%s", text)
			}
			if got := log.decisions(t)[key(audit.Rejected, sbA.ID)]; got != 1 {
				t.Errorf("%d records rejected for A, want 1:\n%s", got, text)
			}
			if mode == "dead letter down" && !strings.Contains(text, "dead-letter write failed, message left at "+f.topic+"/0/3") {
				t.Errorf("the audit record does not say where the message is left:\n%s", text)
			}
			if mode == "dead letter" {
				checkDeadLetter(t, addrs, dlTopic, f.topic+"/0/3")
			}
		})
	}
}

// denyAlterConfigs makes c refuse every IncrementalAlterConfigs of
// topic, as an ACL would, and returns how many it refused.
func denyAlterConfigs(c *kfake.Cluster, topic string) *atomic.Int32 {
	var denied atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.IncrementalAlterConfigs), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.IncrementalAlterConfigsRequest)
		if !slices.ContainsFunc(req.Resources, func(rr kmsg.IncrementalAlterConfigsRequestResource) bool { return rr.ResourceName == topic }) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for _, rr := range req.Resources {
			r := kmsg.NewIncrementalAlterConfigsResponseResource()
			r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
			r.ErrorCode = 29 // TOPIC_AUTHORIZATION_FAILED
			resp.Resources = append(resp.Resources, r)
		}
		denied.Add(1)
		return resp, nil, true
	})
	return &denied
}

// TestSplitLargeExistingTopicRaised: A's topic exists already (created by
// an older baseline, or before the source's limit was raised). With a
// limit below the source's, the forwarder raises it, and A's 2 MiB
// message reaches A's reader; the production messages around it are
// processed and committed, nothing is given up. With a limit above the
// source's it is left as it is: the split mode never lowers one. Before
// the raise, the lower limit refused the copy and it was given up
// (TestSplitLargeMessageGivenUp's case, now only when the raise is
// refused).
func TestSplitLargeExistingTopicRaised(t *testing.T) {
	for _, existing := range []int{0, 3 * sourceLimit} {
		t.Run(fmt.Sprintf("max.message.bytes=%d", existing), func(t *testing.T) {
			addrs := kafkatest.Start(t)
			f := newLargeFixture(t, addrs)
			if existing == 0 {
				createTopicWith(t, addrs, f.aTopic, 1) // the broker's default
			} else {
				createTopicWith(t, addrs, f.aTopic, 1, maxBytes(existing))
			}
			before := topicMaxBytes(t, addrs, f.aTopic)
			if existing == 0 && before >= bigSize {
				t.Fatalf("the broker's default max.message.bytes %d takes A's big message: the case is not exercised", before)
			}
			f.produceLarge(largeTraffic)
			base := startConsumer(t, "baseline", f.largeReader(), 1)
			a := startConsumer(t, "sandbox", f.largeReader(kafkamw.AsSandbox(sbA.ID)), 1)
			waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == int64(len(largeTraffic)) })
			waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, f.addrs, f.topic, f.group) == 0 })
			waitFor(t, 20*time.Second, "A's reader to get A's 3", func() bool { return a.r.Counts().Delivered == 3 })
			bs, as := base.stop(), a.stop()
			if got, want := keys(bs), keysOf(largeTraffic, false); !slices.Equal(got, want) {
				t.Errorf("the baseline processed %v, want %v", got, want)
			}
			if got, want := keys(as), keysOf(largeTraffic, true); !slices.Equal(got, want) {
				t.Errorf("A's reader processed %v, want %v", got, want)
			}
			if c := base.r.Counts(); c.Forwarded != 3 || c.Unforwardable != 0 {
				t.Errorf("baseline counts %+v: want A's 3 forwarded, none given up", c)
			}
			got := topicMaxBytes(t, addrs, f.aTopic)
			if existing == 0 && got < sourceLimit {
				t.Errorf("A's topic's max.message.bytes is %d, want at least the source's %d", got, sourceLimit)
			}
			if existing != 0 && got != existing {
				t.Errorf("A's topic's max.message.bytes is %d, want %d as it was (never lowered)", got, existing)
			}
		})
	}
}

// checkDeadLetter checks that topic holds one dead letter, the big
// message from source (topic/partition/offset), whole.
func checkDeadLetter(t *testing.T, addrs []string, topic, source string) {
	t.Helper()
	if got := ends(t, addrs, topic); got != 1 {
		t.Fatalf("dead-letter topic holds %d, want 1", got)
	}
	cfg := kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("dl"))
	cfg.MaxWait, cfg.ReadBatchTimeout = 2*time.Second, 10*time.Second // the dead letter is 2 MiB: see largeReader
	r := kafka.NewReader(cfg)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var src, reason string
	for _, h := range m.Headers {
		switch h.Key {
		case kafkamw.HeaderDeadLetterSource:
			src = string(h.Value)
		case kafkamw.HeaderDeadLetterReason:
			reason = string(h.Value)
		case kafkamw.HeaderSplitSource:
			t.Errorf("the dead letter carries the copy's %s header", h.Key)
		}
	}
	if string(m.Key) != "big" || len(m.Value) != bigSize || src != source || !strings.Contains(reason, "too large") {
		t.Errorf("dead letter %q, %d bytes, source %q, reason %q; want big, %d bytes, from %s, too large", m.Key, len(m.Value), src, reason, bigSize, source)
	}
}

// TestSplitLargeRecordSet: copies small enough one by one for A's topic
// (max.message.bytes 100 KiB, which the broker refuses to raise) but buffered together (here while A's
// topic's leader does not answer) go in one record set that the broker
// refuses as too large. That set is written again one copy per set, so
// only the copy too large by itself is given up: A's reader gets the
// others, in order, and production is committed. Given up as a whole, or
// written again as it was, it lost A's messages or wedged the partition.
func TestSplitLargeRecordSet(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 1)
	const limit = 100 << 10
	createTopicWith(t, addrs, f.aTopic, 1, maxBytes(limit))
	denyAlterConfigs(c, f.aTopic) // else the forwarder raises the limit to the source's
	var held atomic.Bool
	held.Store(true)
	var heldWrites, refusedSets atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		for i := range req.Topics {
			tp := &req.Topics[i]
			if tp.Topic != f.aTopic {
				continue
			}
			if held.Load() {
				heldWrites.Add(1)
				tp.Partitions = nil // neither written nor answered
				continue
			}
			for _, p := range tp.Partitions {
				var b kmsg.RecordBatch
				if b.ReadFrom(p.Records) == nil && b.NumRecords > 1 && len(p.Records) > limit {
					refusedSets.Add(1)
				}
			}
		}
		return nil, nil, false
	})
	traffic := []largeMsg{
		{"p0", false, 0}, {"a0", true, 60 << 10}, {"a1", true, 60 << 10}, {"p1", false, 0},
		{"a2", true, 60 << 10}, {"big", true, 150 << 10}, {"a3", true, 60 << 10}, {"p2", false, 0},
	}
	f.produceLarge(traffic)
	base := startConsumer(t, "baseline", f.reader(true), 1)
	waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == int64(len(traffic)) })
	waitFor(t, 10*time.Second, "a held write", func() bool { return heldWrites.Load() > 0 })
	held.Store(false)
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, f.addrs, f.topic, f.group) == 0 })
	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's reader to get A's 4", func() bool { return a.r.Counts().Delivered == 4 })
	bs, as := base.stop(), a.stop()
	if refusedSets.Load() == 0 {
		t.Fatal("no record set of several copies over A's topic's limit was written: the case is not exercised")
	}
	if got, want := keys(bs), keysOf(traffic, false); !slices.Equal(got, want) {
		t.Errorf("the baseline processed %v, want %v", got, want)
	}
	if got, want := keys(as), keysOf(traffic, true, "big"); !slices.Equal(got, want) {
		t.Errorf("A's reader processed %v, want %v", got, want)
	}
	sourceOrder(t, as)
	if c := base.r.Counts(); c.Forwarded != 4 || c.Unforwardable != 1 {
		t.Errorf("baseline counts %+v: want 4 forwarded, 1 unforwardable", c)
	}
	if got := ends(t, f.addrs, f.aTopic); got != 4 {
		t.Errorf("A's topic holds %d copies, want 4", got)
	}
}

// TestSplitLargeDescribeRefused: the source topic's configuration cannot
// be read (an ACL refuses DescribeConfigs). The forward does not fail for
// it: A's topic is created with the broker's default, A's small messages
// are forwarded, and A's 2 MiB message, which that topic refuses, is
// given up; production is committed.
func TestSplitLargeDescribeRefused(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newLargeFixture(t, addrs)
	var denied atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.DescribeConfigs), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.DescribeConfigsRequest)
		if !slices.ContainsFunc(req.Resources, func(rr kmsg.DescribeConfigsRequestResource) bool { return rr.ResourceName == f.topic }) {
			return nil, nil, false // the test's own look at A's topic
		}
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
		for _, rr := range req.Resources {
			r := kmsg.NewDescribeConfigsResponseResource()
			r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
			r.ErrorCode = 29 // TOPIC_AUTHORIZATION_FAILED
			resp.Resources = append(resp.Resources, r)
		}
		denied.Add(1)
		return resp, nil, true
	})
	f.produceLarge(largeTraffic)
	base := startConsumer(t, "baseline", f.largeReader(), 1)
	waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == int64(len(largeTraffic)) })
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, f.addrs, f.topic, f.group) == 0 })
	a := startConsumer(t, "sandbox", f.largeReader(kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "A's reader to get A's other 2", func() bool { return a.r.Counts().Delivered == 2 })
	bs, as := base.stop(), a.stop()
	if denied.Load() == 0 {
		t.Fatal("no DescribeConfigs was refused: the case is not exercised")
	}
	if got, want := keys(bs), keysOf(largeTraffic, false); !slices.Equal(got, want) {
		t.Errorf("the baseline processed %v, want %v", got, want)
	}
	if got, want := keys(as), keysOf(largeTraffic, true, "big"); !slices.Equal(got, want) {
		t.Errorf("A's reader processed %v, want %v", got, want)
	}
	if c := base.r.Counts(); c.Forwarded != 2 || c.Unforwardable != 1 {
		t.Errorf("baseline counts %+v: want 2 forwarded, 1 unforwardable", c)
	}
	if got := topicMaxBytes(t, f.addrs, f.aTopic); got >= sourceLimit {
		t.Errorf("A's topic's max.message.bytes is %d: the source's was not to be read", got)
	}
}
