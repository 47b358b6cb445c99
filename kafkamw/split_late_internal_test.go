package kafkamw

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
)

// lateTransport holds each produce request until its caller's context
// ends, returns the context's error and sends the request afterwards,
// once release is closed: kafka-go's transport does that when the
// deadline fires before its connection's goroutine has encoded a request
// (the caller's await returns on ctx.Done, the goroutine goes on).
type lateTransport struct {
	kafka.RoundTripper
	release chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
}

func (l *lateTransport) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if _, ok := req.(*produce.Request); !ok {
		return l.RoundTripper.RoundTrip(ctx, addr, req)
	}
	<-ctx.Done()
	l.wg.Go(func() {
		<-l.release
		_, err := l.RoundTripper.RoundTrip(context.Background(), addr, req)
		l.mu.Lock()
		l.errs = append(l.errs, err)
		l.mu.Unlock()
	})
	return nil, ctx.Err()
}

// TestSplitWriteLateRequest: a write whose produce request is still to be
// encoded when the write returns (its deadline fired first). The write
// clears its records array on return, and the next write fills it with
// other copies; the late request must still carry its own copies' keys,
// values and headers, not the cleared or the next write's records: the
// array is only the material of the record sets, each copied by
// kafka.NewRecordReader before the request is sent.
func TestSplitWriteLateRequest(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	f := newForwarder(Split{}, kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")))
	defer f.close()
	late := &lateTransport{RoundTripper: f.client.Transport, release: make(chan struct{})}
	copies := func(prefix string, n int) ([]kafka.Message, []topicPartitionOffset) {
		var batch []kafka.Message
		var srcs []topicPartitionOffset
		for i := range n {
			v := fmt.Sprintf("%s-%d", prefix, i)
			batch = append(batch, kafka.Message{Topic: topic, Key: []byte("k" + v), Value: []byte(v),
				Headers: []kafka.Header{{Key: HeaderSplitSource, Value: []byte("0/" + v)}}, Time: time.UnixMilli(int64(1000 + i))})
			srcs = append(srcs, topicPartitionOffset{topicPartition{"source", 0}, int64(i)})
		}
		return batch, srcs
	}
	f.flushMu.Lock()
	defer f.flushMu.Unlock()

	f.client.Transport = late
	first, srcs := copies("first", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	out, err := f.write(ctx, first, srcs)
	cancel()
	if err == nil || out[0].written {
		t.Fatalf("the held write returned %v, %+v; want its deadline's error, nothing written", err, out[0])
	}
	f.client.Transport = late.RoundTripper
	second, srcs := copies("second", 20)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.write(ctx, second, srcs); err != nil {
		t.Fatal(err)
	}
	close(late.release) // the first write's request goes now
	late.wg.Wait()
	for _, err := range late.errs {
		if err != nil {
			t.Fatalf("the late request: %v", err)
		}
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	want := map[string]kafka.Message{}
	for _, m := range append(first, second...) {
		want[string(m.Value)] = m
	}
	for range len(want) {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("%d copies left to read: %v", len(want), err)
		}
		w, ok := want[string(m.Value)]
		if !ok {
			t.Fatalf("a record %q / %q with %d headers, no copy's (or a second time)", m.Key, m.Value, len(m.Headers))
		}
		delete(want, string(m.Value))
		if string(m.Key) != string(w.Key) || !m.Time.Equal(w.Time) || len(m.Headers) != 1 ||
			m.Headers[0].Key != HeaderSplitSource || string(m.Headers[0].Value) != string(w.Headers[0].Value) {
			t.Errorf("copy %q: key %q, time %v, headers %v; want %q, %v, %v", w.Value, m.Key, m.Time, m.Headers, w.Key, w.Time, w.Headers)
		}
	}
}
