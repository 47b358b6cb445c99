package kafkamw_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestSplitCopiesByteForByte: six sandboxes' messages, interleaved with
// production's over three partitions, each with a header set of its own
// (none to six headers of 0 to 63 bytes, nil values, some carrying an
// inherited sandboxkit-split-source), so that the forwarder's shared
// header chunks hold copies of every shape side by side; the broker
// answers for only some partitions of the first writes, so that copies
// are kept, moved in the buffer and written again while new ones are
// buffered. Every source message of a sandbox has exactly one copy in
// its sandbox's topic, and that copy is its source byte for byte: key,
// value (nil kept nil), timestamp, and headers in order (those of the
// source without any inherited sandboxkit-split-topic or -source, then
// the ones naming the source topic, when its name or the group's has a
// dot, and coordinates). Run with and without dots.
func TestSplitCopiesByteForByte(t *testing.T) {
	for _, dot := range []string{"", "."} {
		t.Run(fmt.Sprintf("dot=%q", dot), func(t *testing.T) { copiesByteForByte(t, dot) })
	}
}

func copiesByteForByte(t *testing.T, dot string) {
	c, addrs := controlledBroker(t)
	const parts, n = 3, 900
	topic := kafkatest.Topic(t, addrs, parts)
	group := kafkatest.UniqueName("orders") + dot + "x"
	var sbs []routes.Sandbox
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("sb-%d", i)
		ids = append(ids, id)
		sbs = append(sbs, routes.Sandbox{ID: id, Actor: "a", Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)}}})
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{} // sandbox topic -> sandbox
	for _, id := range ids {
		name, err := kafkamw.SplitTopic(topic, group, id)
		if err != nil {
			t.Fatal(err)
		}
		names[name] = id
	}
	var cut atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for i := range kr.(*kmsg.ProduceRequest).Topics {
			tp := &kr.(*kmsg.ProduceRequest).Topics[i]
			if _, ok := names[tp.Topic]; ok && len(tp.Partitions) > 1 && cut.Load() < 8 {
				cut.Add(1)
				tp.Partitions = tp.Partitions[:len(tp.Partitions)-1] // neither written nor answered
			}
		}
		return nil, nil, false
	})
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	rng := rand.New(rand.NewPCG(20, 20))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	baseline := startConsumer(t, "baseline", mustReader(t, kafkatest.ReaderConfig(addrs, topic, group), table), 5)
	for i := range n {
		m := kafka.Message{Key: []byte("k" + strconv.Itoa(rng.IntN(50))), Time: time.UnixMilli(time.Now().UnixMilli() - int64(rng.IntN(1e6)))}
		if rng.IntN(10) > 0 {
			m.Value = []byte(fmt.Sprintf("v%d-%s", i, strings.Repeat("x", rng.IntN(200))))
		}
		for j := range rng.IntN(7) {
			h := kafka.Header{Key: fmt.Sprintf("h%d-%d", j, rng.IntN(3))}
			if rng.IntN(5) > 0 {
				h.Value = bytes.Repeat([]byte{byte('a' + j)}, rng.IntN(64))
			}
			switch rng.IntN(12) {
			case 0:
				h = kafka.Header{Key: kafkamw.HeaderSplitSource, Value: []byte(fmt.Sprintf("%d/%d", rng.IntN(3), rng.IntN(1000)))}
			case 1:
				h = kafka.Header{Key: kafkamw.HeaderSplitTopic, Value: []byte("another")}
			}
			m.Headers = append(m.Headers, h)
		}
		wctx, id := ctx, ""
		if k := rng.IntN(len(ids) + 3); k < len(ids) {
			id = ids[k]
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id, Actor: "a"})
		}
		m.Headers = append([]kafka.Header{{Key: "x-test-sandbox", Value: []byte(id)}}, m.Headers...)
		if err := w.WriteMessages(wctx, m); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(20 * time.Millisecond) // copies of several writes' paces
		}
	}
	waitFor(t, 30*time.Second, "the baseline to decide the topic", func() bool { return baseline.seen() == n })
	waitFor(t, 30*time.Second, "the baseline to commit everything", func() bool { return lagOf(t, addrs, topic, group) == 0 })
	baseline.stop()
	if cut.Load() == 0 {
		t.Fatal("no write was cut: the retries are not exercised")
	}
	source := readTopic(t, addrs, topic, n)
	want := map[string]kafka.Message{} // "<partition>/<offset>" -> source message of a sandbox
	wantIn := map[string]string{}      // and its sandbox
	for _, m := range source {
		if len(m.Headers) == 0 || m.Headers[0].Key != "x-test-sandbox" {
			t.Fatalf("source message %d/%d has no test header first: %v", m.Partition, m.Offset, m.Headers)
		}
		if id := string(m.Headers[0].Value); id != "" {
			coord := fmt.Sprintf("%d/%d", m.Partition, m.Offset)
			want[coord], wantIn[coord] = m, id
		}
	}
	got := map[string]bool{}
	for name, id := range names {
		copies := readTopic(t, addrs, name, int(ends(t, addrs, name)))
		for _, cp := range copies {
			hs := cp.Headers
			if len(hs) == 0 || hs[len(hs)-1].Key != kafkamw.HeaderSplitSource {
				t.Errorf("%s: a copy without %s last: %v", name, kafkamw.HeaderSplitSource, hs)
				continue
			}
			coord := string(hs[len(hs)-1].Value)
			src, ok := want[coord]
			switch {
			case !ok:
				t.Errorf("%s: a copy of %s, not a sandbox's message", name, coord)
				continue
			case wantIn[coord] != id:
				t.Errorf("%s: a copy of %s, %s's message", name, coord, wantIn[coord])
			case got[coord]:
				t.Errorf("%s: a second copy of %s", name, coord)
			}
			got[coord] = true
			wantHs := slices.DeleteFunc(slices.Clone(src.Headers), func(h kafka.Header) bool {
				return h.Key == kafkamw.HeaderSplitSource || h.Key == kafkamw.HeaderSplitTopic
			})
			if strings.Contains(topic+group, ".") {
				wantHs = append(wantHs, kafka.Header{Key: kafkamw.HeaderSplitTopic, Value: []byte(topic)})
			}
			if !bytes.Equal(cp.Key, src.Key) || !bytes.Equal(cp.Value, src.Value) || (cp.Value == nil) != (src.Value == nil) ||
				!cp.Time.Equal(src.Time) || !sameHeaders(hs[:len(hs)-1], wantHs) {
				t.Errorf("%s: the copy of %s differs from its source:\n copy   %q %q %v %v\n source %q %q %v %v",
					name, coord, cp.Key, cp.Value, cp.Time, hs[:len(hs)-1], src.Key, src.Value, src.Time, wantHs)
			}
		}
	}
	for coord := range want {
		if !got[coord] {
			t.Errorf("%s's message %s has no copy", wantIn[coord], coord)
		}
	}
	t.Logf("%d sandbox messages of %d, %d writes cut", len(want), n, cut.Load())
}

func sameHeaders(a, b []kafka.Header) bool {
	return slices.EqualFunc(a, b, func(x, y kafka.Header) bool {
		return x.Key == y.Key && bytes.Equal(x.Value, y.Value) && (x.Value == nil) == (y.Value == nil)
	})
}

// mustReader is a split-mode baseline reader of cfg's topic and group.
func mustReader(t *testing.T, cfg kafka.ReaderConfig, table *routes.Table) *kafkamw.Reader {
	t.Helper()
	r, err := kafkamw.NewReader(cfg, table, service, kafkamw.WithSkipCommitInterval(20*time.Millisecond), kafkamw.WithSplit(kafkamw.Split{}))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readTopic reads the n messages of topic with a group of its own.
func readTopic(t *testing.T, addrs []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("all")))
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := make([]kafka.Message, 0, n)
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("%s: %d of %d read: %v", topic, len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}
