package kafkamw

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
)

// TestSplitConcurrentFlushes: flushes from several goroutines at once (the
// flush loop, a fetch whose buffer is full, Close) while copies are
// buffered, as handOff buffers them. Every write uses the forwarder's one
// records array; each must be alone with it (flushMu): every copy lands
// in the topic exactly once, in buffer order, with its own key, value
// and headers. Run with -race.
func TestSplitConcurrentFlushes(t *testing.T) {
	const n = 3000
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	f := newForwarder(Split{}, kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")))
	defer f.close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	giveUp := func(msg *kafka.Message, _ string, err error) { t.Errorf("copy %q given up: %v", msg.Value, err) }
	buffered := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(buffered)
		for i := range n {
			v := fmt.Appendf(nil, "%06d", i)
			f.mu.Lock()
			f.buf = append(f.buf, kafka.Message{Topic: topic, Key: v, Value: v,
				Headers: []kafka.Header{{Key: HeaderSplitSource, Value: append([]byte("0/"), v...)}}})
			f.src = append(f.src, topicPartitionOffset{topicPartition{"source", 0}, int64(i)})
			f.mu.Unlock()
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-buffered:
					return
				default:
				}
				if _, err := f.flush(ctx, giveUp); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, err := f.flush(ctx, giveUp); err != nil {
		t.Fatal(err)
	}
	if len(f.buf) != 0 {
		t.Fatalf("%d copies still buffered", len(f.buf))
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	for i := range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := fmt.Sprintf("%06d", i)
		if string(m.Value) != want || string(m.Key) != want || len(m.Headers) != 1 || string(m.Headers[0].Value) != "0/"+want {
			t.Fatalf("record %d: %q / %q %v, want copy %s", i, m.Key, m.Value, m.Headers, want)
		}
	}
	if end, err := r.ReadLag(ctx); err != nil || end != 0 {
		t.Errorf("%d records after the %d copies (%v): some written twice", end, n, err)
	}
}
