package kafkamw_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// BenchmarkOrphanFlood: how long a flood of orphaned messages (of a
// sandbox the table does not know) holds the production message behind
// it, per orphan, against a topic of as many production messages. Each
// iteration is a new baseline group reading the topic until the last
// (production) message is delivered, its join included; ns/message is
// that time over the messages ahead of the last. Sub-benchmarks: production only;
// orphans skipped without a logger or dead-letter writer; with an audit
// record each (JSON to io.Discard); with a dead-letter write each.
//
//	go test ./kafkamw -run '^$' -bench OrphanFlood -count 3
func BenchmarkOrphanFlood(b *testing.B) {
	const n = 2000
	addrs := kafkatest.Start(b)
	fill := func(tag string) string {
		topic := kafkatest.Topic(b, addrs, 1)
		w := kafkatest.Writer(b, addrs, topic)
		w.BatchSize = n + 1
		msgs := make([]kafka.Message, 0, n+1)
		for i := range n {
			m := kafka.Message{Value: fmt.Appendf(nil, "m-%d", i)}
			if tag != "" {
				m.Headers = []kafka.Header{{Key: propagation.DefaultHeader, Value: []byte(tag)}}
			}
			msgs = append(msgs, m)
		}
		msgs = append(msgs, kafka.Message{Value: []byte("last")})
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
		return topic
	}
	prodTopic, orphanTopic := fill(""), fill("pr-99")
	table, err := routes.NewStatic(nil)
	if err != nil {
		b.Fatal(err)
	}
	dlw := kafkatest.Writer(b, addrs, kafkatest.Topic(b, addrs, 1))
	cases := []struct {
		name  string
		topic string
		opts  []kafkamw.ReaderOption
	}{
		{"production", prodTopic, nil},
		{"orphans", orphanTopic, nil},
		{"orphans-audited", orphanTopic, []kafkamw.ReaderOption{kafkamw.WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil)))}},
		{"orphans-deadlettered", orphanTopic, []kafkamw.ReaderOption{kafkamw.WithDeadLetter(dlw)}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var elapsed time.Duration
			for b.Loop() {
				start := time.Now() // the group join included, alike in every case
				cfg := kafkatest.ReaderConfig(addrs, c.topic, kafkatest.UniqueName("flood"))
				cfg.MaxWait = 10 * time.Millisecond
				r, err := kafkamw.NewReader(cfg, table, service, c.opts...)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				for {
					_, m, err := r.FetchMessage(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if string(m.Value) == "last" {
						break
					}
				}
				elapsed += time.Since(start)
				cancel()
				if err := r.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N)/n, "ns/message")
		})
	}
}
