package kafkamw_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// commitBound is how long a commit of production's messages may take
// while a sandbox topic's administration hangs: far below the
// forwardTimeout (10s) that bounds the hung request, far above what a
// commit takes on a loaded machine.
const commitBound = 4 * time.Second

// TestSplitRaiseHangsProductionCommits: A's topic exists already with a
// limit below what the forwarder wants (created by hand, or by an older
// baseline), and the broker never answers the IncrementalAlterConfigs
// that raises it (a controller that hangs). The fetch that met A's
// message waits for the raise (its copy needs the topic), but production's
// messages returned before it must still commit: the forwarder held its
// lock over the describe and the alter, and every CommitMessages waited
// behind them for the whole forwardTimeout.
func TestSplitRaiseHangsProductionCommits(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 1)
	createTopicWith(t, addrs, f.aTopic, 1) // the broker's default, below the source's plus the copy's headroom
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	var hung atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.IncrementalAlterConfigs), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.IncrementalAlterConfigsRequest)
		if slices.ContainsFunc(req.Resources, func(rr kmsg.IncrementalAlterConfigsRequestResource) bool { return rr.ResourceName == f.aTopic }) {
			select {
			case <-release:
			default:
				hung.Add(1)
				c.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	actx := propagation.ContextWithSandbox(ctx, sbA)
	for i, m := range []struct {
		ctx context.Context
		v   string
	}{{ctx, "p0"}, {actx, "a0"}, {ctx, "p1"}} {
		if err := f.w.WriteMessages(m.ctx, kafka.Message{Value: []byte(m.v)}); err != nil {
			t.Fatal(i, err)
		}
	}
	r := f.reader(true)
	defer r.Close()
	_, p0, err := r.FetchMessage(ctx)
	if err != nil || string(p0.Value) != "p0" {
		t.Fatalf("first fetch %q, %v; want p0", p0.Value, err)
	}
	fetched := make(chan string, 1)
	go func() { // meets a0: creates (finds) A's topic and raises it
		_, m, err := r.FetchMessage(ctx)
		if err != nil {
			fetched <- err.Error()
			return
		}
		fetched <- string(m.Value)
	}()
	waitFor(t, 10*time.Second, "the raise of A's topic to hang", func() bool { return hung.Load() > 0 })
	start := time.Now()
	if err := r.CommitMessages(ctx, p0); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	free()
	if took > commitBound {
		t.Errorf("the commit of production's p0 took %v behind the hung raise of A's topic, want under %v", took.Round(time.Millisecond), commitBound)
	}
	if v := <-fetched; v != "p1" {
		t.Errorf("second fetch %q, want p1", v)
	}
	if lag := groupLag(t, f.addrs, f.topic, f.group)[0]; lag > 2 {
		t.Errorf("lag %d, want at most 2: p0 committed", lag)
	}
}

// TestSplitLargeLimitLoweredAfterward: the forwarder created A's topic
// with room for the source's largest messages, then an operator (or a
// policy tool putting the broker's default back) lowered its
// max.message.bytes. A's 2 MiB message, which the source accepted, is
// refused by the lowered topic: the forwarder raises the limit again
// and writes it, rather than giving it up. It was given up (dead-lettered
// at best) as if the raise had been refused: the raise happened only
// when the forwarder first met the topic.
func TestSplitLargeLimitLoweredAfterward(t *testing.T) {
	addrs := kafkatest.Start(t)
	f := newLargeFixture(t, addrs)
	f.produceLarge([]largeMsg{{"p0", false, 0}, {"a0", true, 0}})
	base := startConsumer(t, "baseline", f.largeReader(), 1)
	waitFor(t, 20*time.Second, "A's first copy", func() bool { return ends(t, addrs, f.aTopic) == 1 })
	setMaxBytes(t, addrs, f.aTopic, 1<<20)
	if got := topicMaxBytes(t, addrs, f.aTopic); got >= bigSize {
		t.Fatalf("A's topic's max.message.bytes is %d after lowering, takes A's big message: the case is not exercised", got)
	}
	f.produceLarge([]largeMsg{{"big", true, bigSize}, {"p1", false, 0}})
	waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == 4 })
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, addrs, f.topic, f.group) == 0 })
	base.stop()
	if c := base.r.Counts(); c.Forwarded != 2 || c.Unforwardable != 0 {
		t.Errorf("baseline counts %+v: want A's 2 forwarded, none given up", c)
	}
	if got := ends(t, addrs, f.aTopic); got != 2 {
		t.Errorf("A's topic holds %d copies, want 2", got)
	}
	if got := topicMaxBytes(t, addrs, f.aTopic); got < sourceLimit {
		t.Errorf("A's topic's max.message.bytes is %d, want at least the source's %d", got, sourceLimit)
	}
}

// setMaxBytes sets topic's max.message.bytes to n, as an operator would.
func setMaxBytes(t *testing.T, addrs []string, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	resp, err := (&kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}).IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: "max.message.bytes", Value: strconv.Itoa(n), ConfigOperation: kafka.ConfigOperationSet}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			t.Fatal(r.Error)
		}
	}
}

// TestSplitLargeRaiseIgnored: A's topic refuses A's 2 MiB copy, and the
// broker answers every raise of its limit with success but keeps the
// limit (a policy that puts it back at once, a proxy that swallows the
// alter). The copy is given up after one raise, as when the raise is
// refused, and production's messages behind it are committed: a copy
// kept for another write after every "successful" raise held its source
// partition for ever.
func TestSplitLargeRaiseIgnored(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newLargeFixture(t, addrs)
	createTopicWith(t, addrs, f.aTopic, 1) // the broker's default
	var ignored atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.IncrementalAlterConfigs), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.IncrementalAlterConfigsRequest)
		if !slices.ContainsFunc(req.Resources, func(rr kmsg.IncrementalAlterConfigsRequestResource) bool { return rr.ResourceName == f.aTopic }) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for _, rr := range req.Resources {
			r := kmsg.NewIncrementalAlterConfigsResponseResource()
			r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
			resp.Resources = append(resp.Resources, r) // success, and nothing changed
		}
		ignored.Add(1)
		return resp, nil, true
	})
	f.produceLarge(largeTraffic)
	base := startConsumer(t, "baseline", f.largeReader(), 1)
	waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == int64(len(largeTraffic)) })
	waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, f.addrs, f.topic, f.group) == 0 })
	base.stop()
	if ignored.Load() == 0 {
		t.Fatal("no raise of A's topic was answered: the case is not exercised")
	}
	if c := base.r.Counts(); c.Forwarded != 2 || c.Unforwardable != 1 {
		t.Errorf("baseline counts %+v: want A's 2 forwarded, the big one given up", c)
	}
	t.Logf("%d raises answered and ignored", ignored.Load())
}
