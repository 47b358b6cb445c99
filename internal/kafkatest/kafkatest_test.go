package kafkatest_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRoundTrip proves the broker speaks the protocol kafka-go needs: a
// topic is created, a message with headers is produced and consumed by a
// group reader, and the commit is visible to a second group member later.
func TestRoundTrip(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	w := kafkatest.Writer(t, addrs, topic)
	want := kafka.Message{Key: []byte("k"), Value: []byte("v"), Headers: []kafka.Header{{Key: "h", Value: []byte("x")}}}
	if err := w.WriteMessages(ctx, want); err != nil {
		t.Fatal(err)
	}

	group := kafkatest.UniqueName("g")
	r := kafka.NewReader(kafkatest.ReaderConfig(addrs, topic, group))
	got, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Key) != "k" || string(got.Value) != "v" || len(got.Headers) != 1 || string(got.Headers[0].Value) != "x" {
		t.Fatalf("got %+v", got)
	}
	if err := r.CommitMessages(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {got.Partition}}})
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.Topics[topic]; len(ps) != 1 || ps[0].CommittedOffset != got.Offset+1 {
		t.Fatalf("committed offsets %+v, want %d", resp.Topics, got.Offset+1)
	}
}

func TestUniqueName(t *testing.T) {
	a, b := kafkatest.UniqueName("Test/a b"), kafkatest.UniqueName("Test/a b")
	if a == b {
		t.Fatalf("two names are both %q", a)
	}
	for _, c := range a {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			t.Fatalf("%q holds %q", a, c)
		}
	}
}
