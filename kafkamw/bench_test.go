package kafkamw

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// benchMessages is the size of the topic BenchmarkReader reads; lower it
// (-kafkamw.bench.messages=20000) for a quicker run.
var benchMessages = flag.Int("kafkamw.bench.messages", 100000, "messages in BenchmarkReader's topic")

const (
	benchService = "orders"
	benchSandbox = "pr-42"
	commitEvery  = 100
)

// benchTopic is the topic the sub-benchmarks of BenchmarkReader share: n
// small messages, every third tagged for the sandbox.
type benchTopic struct {
	addrs  []string
	topic  string
	n      int
	tagged int
	table  *routes.Table
}

// newBenchTopic starts a broker, which b's cleanup stops, and fills the
// topic.
func newBenchTopic(b *testing.B) *benchTopic {
	bt := &benchTopic{n: *benchMessages, topic: "bench"}
	addrs, stop, err := kafkatest.NewBroker()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	bt.addrs = addrs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := kafkatest.CreateTopic(ctx, addrs, bt.topic, 3); err != nil {
		b.Fatal(err)
	}
	kw, closeWriter := kafkatest.NewWriter(addrs, bt.topic)
	defer closeWriter()
	kw.BatchSize = 5000
	// Every third message tagged, interleaved as a real stream would be:
	// the tagged ones are decorated as NewWriter does.
	w := NewWriter(kw)
	sb := propagation.Sandbox{ID: benchSandbox, Actor: "alice"}
	const chunk = 5000
	for start := 0; start < bt.n; start += chunk {
		msgs := make([]kafka.Message, 0, chunk)
		for i := start; i < min(start+chunk, bt.n); i++ {
			m := kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "order %d", i)}
			if i%3 == 1 {
				tagged, _, err := w.decorate(sb, []kafka.Message{m}, false)
				if err != nil {
					b.Fatal(err)
				}
				m = tagged[0]
				bt.tagged++
			}
			msgs = append(msgs, m)
		}
		if err := kw.WriteMessages(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	bt.table, err = routes.NewStatic([]routes.Sandbox{{ID: benchSandbox, Services: map[string]routes.Route{
		benchService: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	return bt
}

func benchConfig(bt *benchTopic, group string) kafka.ReaderConfig {
	cfg := kafkatest.ReaderConfig(bt.addrs, bt.topic, group)
	cfg.MaxWait = 10 * time.Millisecond
	return cfg
}

// pass reads one group's way through the topic: fetch returns the next
// message and whether the pass is over after it. The last message of each
// partition is committed every commitEvery messages returned and at the
// end. The timer runs from the first message on, so the group join is not
// measured.
func pass(b *testing.B, fetch func(context.Context) (kafka.Message, bool, error), commit func(context.Context, ...kafka.Message) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	last := map[int]kafka.Message{}
	flush := func() {
		msgs := make([]kafka.Message, 0, len(last))
		for _, m := range last {
			msgs = append(msgs, m)
		}
		if err := commit(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
		clear(last)
	}
	for i := 0; ; i++ {
		m, done, err := fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			b.StartTimer()
		}
		last[m.Partition] = m
		if done {
			break
		}
		if (i+1)%commitEvery == 0 {
			flush()
		}
	}
	flush()
	b.StopTimer()
}

// BenchmarkReader reads the same topic with a plain kafka-go group reader,
// the baseline reader and the sandbox reader, committing every 100 messages
// returned (skipped messages ride on those commits). An op is one message
// of the topic read, returned or skipped; each pass through the topic uses
// a fresh group, and the group join is not timed. msgs/s is the topic's
// messages read per second.
func BenchmarkReader(b *testing.B) {
	bt := newBenchTopic(b)
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		b.StopTimer()
		timed := 0
		for read, i := 0, 0; read < b.N; i++ {
			want := min(b.N-read, bt.n)
			r := kafka.NewReader(benchConfig(bt, fmt.Sprintf("raw-%d-%d", time.Now().UnixNano(), i)))
			n := 0
			pass(b, func(ctx context.Context) (kafka.Message, bool, error) {
				m, err := r.FetchMessage(ctx)
				n++
				return m, n == want, err
			}, r.CommitMessages)
			r.Close()
			read += want
			timed += want - 1 // the first is read before the timer starts
		}
		if s := b.Elapsed().Seconds(); s > 0 {
			b.ReportMetric(float64(timed)/s, "msgs/s")
		}
	})
	for _, role := range []string{"baseline", "sandbox"} {
		b.Run(role, func(b *testing.B) {
			b.ReportAllocs()
			b.StopTimer()
			var timed int64
			for read, i := int64(0), 0; read < int64(b.N); i++ {
				want := min(int64(b.N)-read, int64(bt.n))
				opts := []Option{WithRoutes(bt.table), WithService(benchService)}
				owned := int64(bt.n - bt.tagged)
				if role == "sandbox" {
					opts = append(opts, AsSandbox(benchSandbox))
					owned = int64(bt.tagged)
				}
				r, err := NewReader(benchConfig(bt, fmt.Sprintf("%s-%d-%d", role, time.Now().UnixNano(), i)), opts...)
				if err != nil {
					b.Fatal(err)
				}
				var first int64 = -1
				pass(b, func(ctx context.Context) (kafka.Message, bool, error) {
					_, m, err := r.FetchMessage(ctx)
					c := r.Counts()
					if first < 0 {
						first = c.Delivered + c.Skipped
					}
					// Done when enough is read, or when the reader has
					// returned all it owns (what follows is skipped).
					return m, c.Delivered+c.Skipped >= want || c.Delivered == owned, err
				}, r.CommitMessages)
				c := r.Counts()
				r.Close()
				read += c.Delivered + c.Skipped
				timed += c.Delivered + c.Skipped - first
			}
			if s := b.Elapsed().Seconds(); s > 0 {
				b.ReportMetric(float64(timed)/s, "msgs/s")
			}
		})
	}
}

// BenchmarkInject measures header injection on the writer, per message,
// as WriteMessages does it around the write: one message per write on a
// synchronous writer (the copy is reused after a successful write), on an
// asynchronous one (a new copy each time), batches of 100, and a message
// whose baggage ours is merged into.
//
//	go test ./kafkamw -run '^$' -bench Inject -benchmem
func BenchmarkInject(b *testing.B) {
	w := NewWriter(&kafka.Writer{})
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice", Origin: "github.com/acme/shop/pull/42"}
	hdr := []kafka.Header{{Key: "content-type", Value: []byte("application/json")}}
	one := func(b *testing.B, msgs []kafka.Message, reuse bool) {
		b.ReportAllocs()
		for b.Loop() {
			_, c, err := w.decorate(sb, msgs, reuse)
			if err != nil {
				b.Fatal(err)
			}
			if reuse {
				release(c) // what a successful synchronous write does
			}
		}
	}
	b.Run("one", func(b *testing.B) {
		one(b, []kafka.Message{{Key: []byte("k"), Value: []byte("v"), Headers: hdr}}, true)
	})
	b.Run("one-async", func(b *testing.B) {
		one(b, []kafka.Message{{Key: []byte("k"), Value: []byte("v"), Headers: hdr}}, false)
	})
	b.Run("batch-100", func(b *testing.B) {
		msgs := make([]kafka.Message, 100)
		for i := range msgs {
			msgs[i] = kafka.Message{Key: []byte("k"), Value: []byte("v"), Headers: hdr}
		}
		one(b, msgs, false)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/msg")
	})
	b.Run("caller-baggage", func(b *testing.B) {
		one(b, []kafka.Message{{Value: []byte("v"), Headers: []kafka.Header{{Key: "baggage", Value: []byte("tenant=acme")}}}}, true)
	})
}

// BenchmarkDecide measures the reader's own work per message, without the
// broker: reading the headers and deciding ownership, on both sides.
func BenchmarkDecide(b *testing.B) {
	table, _ := routes.NewStatic([]routes.Sandbox{{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}})
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-42", Actor: "alice"}, &c)
	for _, sandbox := range []string{"", "pr-42"} {
		cfg := newConfig([]Option{WithRoutes(table), WithService("orders"), AsSandbox(sandbox)})
		r := &Reader{cfg: cfg, markers: newMarkers(cfg.codec), ledger: newLedger(), fetching: make(chan struct{}, 1)}
		for name, hs := range map[string][]kafka.Header{"untagged": nil, "tagged": c.list} {
			b.Run(sandbox+"/"+name, func(b *testing.B) {
				msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: hs}
				b.ReportAllocs()
				for b.Loop() {
					r.decide(context.Background(), &msg)
				}
			})
		}
	}
}
