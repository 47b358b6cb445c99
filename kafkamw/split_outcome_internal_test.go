package kafkamw

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
)

// TestSplitWriteOutcomesByCopy: a write of copies to two partitions,
// interleaved in the batch, each partition's cut in several record sets
// (by maxRecordSet, and around a copy that goes alone), so that the
// records array holds them grouped by partition, not in batch order. The
// broker leaves partition 1's second set unanswered and unwritten. Each
// copy's outcome, by its index in the batch, must say what the broker
// did with that copy: written exactly for the copies in the topic, and
// each partition's copies there in batch order, with their own values.
func TestSplitWriteOutcomesByCopy(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	topic := kafkatest.Topic(t, addrs, 2)
	var p1Sets atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		for i := range req.Topics {
			tp := &req.Topics[i]
			for j := 0; j < len(tp.Partitions); j++ {
				if tp.Topic == topic && tp.Partitions[j].Partition == 1 && p1Sets.Add(1) == 2 {
					tp.Partitions = append(tp.Partitions[:j], tp.Partitions[j+1:]...) // neither written nor answered
					j--
				}
			}
		}
		return nil, nil, false
	})
	f := newForwarder(Split{}, kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")))
	defer f.close()
	const value = 200 << 10 // four copies to a record set
	var batch []kafka.Message
	var srcs []topicPartitionOffset
	for i := range 14 {
		p := i % 2
		v := make([]byte, value)
		copy(v, fmt.Sprintf("copy-%d", i))
		batch = append(batch, kafka.Message{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d", i), Value: v,
			Headers: []kafka.Header{{Key: HeaderSplitSource, Value: fmt.Appendf(nil, "%d/%d", p, i)}}, Time: time.UnixMilli(int64(1000 + i))})
		srcs = append(srcs, topicPartitionOffset{topicPartition{"source", p}, int64(i)})
	}
	// Partition 1's copies 1, 3 | 5 alone | 7, 9, 11, 13: its second set
	// is copy 5's. Partition 0's: 0, 2, 4, 6 | 8, 10, 12.
	f.alone[srcs[5]] = struct{}{}
	f.flushMu.Lock()
	defer f.flushMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := f.write(ctx, batch, srcs)
	if err == nil {
		t.Fatal("the write reported no error for partition 1's unanswered set")
	}
	if p1Sets.Load() != 2 {
		t.Fatalf("partition 1 was sent %d sets, want 2 (its third waits for its second)", p1Sets.Load())
	}
	landed := map[int][]int{} // by partition, the copies in the topic in order
	for p := range 2 {
		// MaxWait is the read deadline of a fetch's answer in kafka-go:
		// with 50ms, an answer carrying a record set of four 200 KiB
		// copies timed out under -race on 2 loaded cores, on every
		// fetch again, until ctx ran out (see largeReader).
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: topic, Partition: p, MaxWait: 2 * time.Second})
		for range map[int]int{0: 7, 1: 2}[p] {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("partition %d: %v", p, err)
			}
			var i int
			if _, err := fmt.Sscanf(string(m.Value[:16]), "copy-%d", &i); err != nil {
				t.Fatalf("partition %d: a record %q that is no copy", p, m.Value[:16])
			}
			w := batch[i]
			if string(m.Key) != string(w.Key) || len(m.Value) != value || !m.Time.Equal(w.Time) ||
				len(m.Headers) != 1 || string(m.Headers[0].Value) != string(w.Headers[0].Value) {
				t.Errorf("copy %d: key %q, time %v, headers %v; want %q, %v, %v", i, m.Key, m.Time, m.Headers, w.Key, w.Time, w.Headers)
			}
			landed[p] = append(landed[p], i)
		}
		r.Close()
	}
	if fmt.Sprint(landed) != fmt.Sprint(map[int][]int{0: {0, 2, 4, 6, 8, 10, 12}, 1: {1, 3}}) {
		t.Errorf("the topic holds copies %v", landed)
	}
	in := map[int]bool{}
	for _, is := range landed {
		for _, i := range is {
			in[i] = true
		}
	}
	for i, o := range out {
		if o.written != in[i] || o.refused != nil {
			t.Errorf("copy %d: outcome %+v, in the topic %v", i, o, in[i])
		}
	}
}
