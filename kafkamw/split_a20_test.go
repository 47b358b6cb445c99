package kafkamw_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

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
