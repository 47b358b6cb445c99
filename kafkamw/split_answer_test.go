package kafkamw_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestSplitProduceAnswerMismatch: a produce request of A's copies to two
// partitions of A's topic gets, once, an answer that acknowledges the
// first partition twice and says nothing of the second (a proxy or a
// broker that answers the wrong partition), and writes nothing. The
// answer counted as many partitions as the request had, so the write
// reported no error; the flush took every copy of the batch for
// acknowledged and the baseline committed past the second partition's
// copies, which no write had delivered: they were lost. An answer that
// does not name each partition of the request once is the request's
// error: every copy stays buffered and is written again.
func TestSplitProduceAnswerMismatch(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 2)
	var lied atomic.Int32
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		if lied.Load() > 0 || len(req.Topics) != 1 || req.Topics[0].Topic != f.aTopic || len(req.Topics[0].Partitions) < 2 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = f.aTopic
		for range req.Topics[0].Partitions {
			p := kmsg.NewProduceResponseTopicPartition()
			p.Partition = req.Topics[0].Partitions[0].Partition
			rt.Partitions = append(rt.Partitions, p)
		}
		resp.Topics = append(resp.Topics, rt)
		lied.Add(1)
		return resp, nil, true
	})
	// A batch's copies usually reach both partitions in one write; on a
	// loaded -race run they may go one partition at a time, so more
	// messages are produced until one write carried both (as the split
	// kill tests do).
	f.produce("m", 60)
	base := startConsumer(t, "baseline", f.reader(true), 5)
	total := int64(60)
	for round := 1; ; round++ {
		waitFor(t, 20*time.Second, "the baseline to decide the topic", func() bool { return base.seen() == total })
		waitFor(t, 20*time.Second, "the baseline to commit everything", func() bool {
			lag := groupLag(t, f.addrs, f.topic, f.group)
			return lag[0]+lag[1] == 0
		})
		if lied.Load() > 0 {
			break
		}
		if round == 10 {
			t.Fatal("no write of A's copies reached two partitions at once in 10 rounds: the test proved nothing")
		}
		f.produce(fmt.Sprintf("m%d-", round), 60)
		total += 60
	}
	want := int64(f.countA())
	if got := ends(t, f.addrs, f.aTopic); got != want {
		t.Errorf("A's topic holds %d copies once everything is committed, want %d: copies lost", got, want)
	}
	base.stop()
}
