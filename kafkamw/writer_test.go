package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

func cloneMsgs(msgs []kafka.Message) []kafka.Message {
	out := slices.Clone(msgs)
	for i := range out {
		out[i].Headers = slices.Clone(out[i].Headers)
		for j := range out[i].Headers {
			out[i].Headers[j].Value = slices.Clone(out[i].Headers[j].Value)
		}
	}
	return out
}

func header(hs []kafka.Header, key string) []string {
	var out []string
	for _, h := range hs {
		if strings.EqualFold(h.Key, key) {
			out = append(out, string(h.Value))
		}
	}
	return out
}

// readAll reads n messages of topic from the start with a plain reader.
func readAll(t *testing.T, addrs []string, topic string, n int) map[string]kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := kafka.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("check")))
	defer r.Close()
	out := map[string]kafka.Message{}
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("%d of %d messages read (keys distinct): %v", len(out), n, err)
		}
		out[string(m.Key)] = m
	}
	return out
}

// TestWriterHeaders: the writer adds the context's sandbox under the codec's
// keys, keeps every header the caller set (merging into its baggage), and
// changes neither the caller's slice nor its messages, not even the spare
// capacity of a header slice.
func TestWriterHeaders(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice", Origin: "github.com/acme/shop/pull/42"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx := propagation.ContextWithSandbox(ctx, sb)

	spare := make([]kafka.Header, 2, 8)
	spare[0] = kafka.Header{Key: "Trace-Id", Value: []byte("abc")}
	spare[1] = kafka.Header{Key: "Baggage", Value: []byte("tenant=acme,sandbox.idx=not-ours")}
	msgs := []kafka.Message{
		{Key: []byte("plain"), Value: []byte("1")},
		{Key: []byte("headers"), Value: []byte("2"), Headers: spare},
		{Key: []byte("tagged"), Value: []byte("3"), Headers: []kafka.Header{{Key: "Sandbox-Id", Value: []byte("pr-42")}, {Key: "x", Value: []byte("y")}}},
	}
	before := cloneMsgs(msgs)
	if err := w.WriteMessages(sctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(msgs, before) {
		t.Errorf("caller's messages changed:\n got %+v\nwant %+v", msgs, before)
	}
	if tail := spare[2:cap(spare)]; !reflect.DeepEqual(tail, make([]kafka.Header, len(tail))) {
		t.Errorf("caller's spare header capacity written: %+v", tail)
	}

	got := readAll(t, addrs, topic, 3)
	codec := propagation.Default()
	for key, m := range got {
		mk, err := codec.Read(otelCarrier(m.Headers))
		if err != nil || !mk.Found || mk.Sandbox.ID != sb.ID {
			t.Errorf("%s: read back %+v, %v", key, mk, err)
		}
		for _, h := range m.Headers {
			if key != "tagged" && h.Key != strings.ToLower(h.Key) && h.Key != "Trace-Id" {
				t.Errorf("%s: header %q written in upper case", key, h.Key)
			}
		}
	}
	if mk, _ := codec.Read(otelCarrier(got["plain"].Headers)); mk.Sandbox != sb {
		t.Errorf("plain: sandbox %+v, want %+v (actor and origin travel)", mk.Sandbox, sb)
	}
	h := got["headers"].Headers
	if v := header(h, "trace-id"); !slices.Equal(v, []string{"abc"}) {
		t.Errorf("caller's header: %q", v)
	}
	bag := header(h, "baggage")
	if len(bag) != 1 || !strings.Contains(bag[0], "tenant=acme") || !strings.Contains(bag[0], "sandbox.idx=not-ours") || !strings.Contains(bag[0], "sandbox.id=pr-42") {
		t.Errorf("baggage %q: want the caller's members and ours in one header", bag)
	}
	if v := header(h, "sandbox-id"); !slices.Equal(v, []string{"pr-42"}) {
		t.Errorf("sandbox-id: %q", v)
	}
	if !reflect.DeepEqual(got["tagged"].Headers, before[2].Headers) {
		t.Errorf("a message already tagged for the sandbox was changed: %+v", got["tagged"].Headers)
	}
}

// TestWriterConflict: a message tagged for another sandbox, or with
// unreadable markers, is refused and nothing of the batch is written.
func TestWriterConflict(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-42"})
	for _, hs := range [][]kafka.Header{
		{{Key: "sandbox-id", Value: []byte("pr-7")}},
		{{Key: "baggage", Value: []byte("sandbox.id=pr-7")}},
		{{Key: "sandbox-id", Value: []byte("NOT valid")}},
		// In OpenTracing's form, ours only once decoded: ottrace on a
		// consumer reads it into baggage, no reader of ours accepts it.
		{{Key: "ot-baggage-sandbox%2eid", Value: []byte("pr-42")}},
		{{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "Ot-Baggage-Sandbox+.id", Value: []byte("pr-42")}},
	} {
		err := w.WriteMessages(sctx, kafka.Message{Value: []byte("ok")}, kafka.Message{Value: []byte("bad"), Headers: hs})
		if !errors.Is(err, kafkamw.ErrConflict) {
			t.Errorf("headers %q: WriteMessages = %v, want ErrConflict", hs, err)
		}
		if err := w.WriteMessages(sctx, kafka.Message{Value: []byte("bad"), Headers: hs}); !errors.Is(err, kafkamw.ErrConflict) {
			t.Errorf("headers %q, one message: WriteMessages = %v, want ErrConflict", hs, err)
		}
	}
	// Untagged context: the writer passes messages through, markers and all.
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte("through"), Headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-7")}}}); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, addrs, topic, 1)
	if m := got["k"]; string(m.Value) != "through" || m.Offset != 0 || !reflect.DeepEqual(header(m.Headers, "sandbox-id"), []string{"pr-7"}) || len(m.Headers) != 1 {
		t.Errorf("first message in the topic %+v: want the pass-through one at offset 0, unchanged", m)
	}
}

// TestConcurrentWritesKeepTheirHeaders: goroutines write for sandboxes
// of their own into shared batches, half of them with deadlines so short
// that many writes are abandoned (kafka-go may still send those). Every
// message that reaches the topic must carry its own sandbox's headers and
// its own caller header, and every write that succeeded must be there.
func TestConcurrentWritesKeepTheirHeaders(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	kw := kafkatest.Writer(t, addrs, topic)
	w := newWriter(t, kw)
	const writers, each = 8, 60
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		written   = map[string]bool{}
		abandoned int
	)
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("pr-%d", g)
			sctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: "alice"})
			for i := range each {
				key := fmt.Sprintf("%s/%d", id, i)
				m := kafka.Message{
					Key:     []byte(key),
					Value:   []byte(id),
					Headers: []kafka.Header{{Key: "seq", Value: fmt.Appendf(nil, "%d", i)}},
				}
				ctx, cancel := sctx, context.CancelFunc(func() {})
				if g%2 == 1 {
					ctx, cancel = context.WithTimeout(sctx, 300*time.Microsecond)
				}
				err := w.WriteMessages(ctx, m)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					written[key] = true
				case errors.Is(err, context.DeadlineExceeded):
					abandoned++
				default:
					errs <- err
					mu.Unlock()
					return
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Abandoned writes may still land: read up to a last message written
	// after all of them.
	if err := kw.WriteMessages(context.Background(), kafka.Message{Key: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := kafka.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("check")))
	defer r.Close()
	seen := 0
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		key := string(m.Key)
		if key == "end" {
			break
		}
		seen++
		delete(written, key)
		id := string(m.Value)
		if h := header(m.Headers, "sandbox-id"); !slices.Equal(h, []string{id}) {
			t.Errorf("message %s: sandbox-id %q, want %q", key, h, id)
		}
		_, seq, _ := strings.Cut(key, "/")
		if h := header(m.Headers, "seq"); !slices.Equal(h, []string{seq}) {
			t.Errorf("message %s: seq header %q, want %q", key, h, seq)
		}
		if b := header(m.Headers, "baggage"); len(b) != 1 || !strings.Contains(b[0], "sandbox.id="+id) {
			t.Errorf("message %s: baggage %q, want sandbox.id=%s", key, b, id)
		}
	}
	if len(written) > 0 {
		t.Errorf("%d successful writes missing from the topic", len(written))
	}
	t.Logf("%d messages read, %d writes abandoned by their deadline", seen, abandoned)
}

// TestBatchWritesKeepTheirMessages: an asynchronous writer returns once
// the messages are batched, and the next write reuses the slice of copies:
// every message still reaches the broker as it was written, with its own
// headers, from writers of two sandboxes at once.
func TestBatchWritesKeepTheirMessages(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	kw := kafkatest.Writer(t, addrs, topic)
	kw.Async = true
	var failed atomic.Int32
	kw.Completion = func(msgs []kafka.Message, err error) {
		if err != nil {
			failed.Add(int32(len(msgs)))
		}
	}
	w := newWriter(t, kw)
	const writers, batches, size = 2, 30, 20
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("pr-%d", g)
			ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id})
			for b := range batches {
				msgs := make([]kafka.Message, size)
				for i := range msgs {
					key := fmt.Sprintf("%s/%d/%d", id, b, i)
					msgs[i] = kafka.Message{Key: []byte(key), Value: []byte(id)}
					switch i % 3 {
					case 1:
						msgs[i].Headers = []kafka.Header{{Key: "seq", Value: []byte(key)}}
					case 2:
						msgs[i].Headers = []kafka.Header{{Key: "baggage", Value: []byte("seq=" + strings.ReplaceAll(key, "/", "."))}}
					}
				}
				if err := w.WriteMessages(ctx, msgs...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := kw.Close(); err != nil {
		t.Fatal(err)
	}
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d messages failed to write", n)
	}
	got := readAll(t, addrs, topic, writers*batches*size)
	for key, m := range got {
		id := string(m.Value)
		if !strings.HasPrefix(key, id+"/") {
			t.Errorf("message %s carries value %q", key, id)
		}
		if h := header(m.Headers, "sandbox-id"); !slices.Equal(h, []string{id}) {
			t.Errorf("message %s: sandbox-id %q, want %q", key, h, id)
		}
		bag := header(m.Headers, "baggage")
		if len(bag) != 1 || !strings.HasPrefix(bag[0], "sandbox.id="+id) {
			t.Errorf("message %s: baggage %q, want sandbox.id=%s first", key, bag, id)
			continue
		}
		var i int
		fmt.Sscanf(key[strings.LastIndex(key, "/")+1:], "%d", &i)
		switch i % 3 {
		case 1:
			if h := header(m.Headers, "seq"); !slices.Equal(h, []string{key}) {
				t.Errorf("message %s: seq header %q", key, h)
			}
		case 2:
			if want := "seq=" + strings.ReplaceAll(key, "/", "."); !strings.HasSuffix(bag[0], ","+want) {
				t.Errorf("message %s: baggage %q, want the caller's %s kept", key, bag[0], want)
			}
		}
	}
}

// retryTransport does what kafka.Transport does when a produce attempt's
// wait for the broker times out: the attempt fails, but its request stays
// with the connection goroutine, which encodes it later. The second
// attempt succeeds. (A stand-in for the broker here: no real one times
// out on cue.)
type retryTransport struct {
	produces atomic.Int32
	stale    chan protocol.RecordReader
}

func (t *retryTransport) RoundTrip(ctx context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	if r, ok := req.(*produceAPI.Request); ok && t.produces.Add(1) == 1 {
		t.stale <- r.Topics[0].Partitions[0].RecordSet.Records
		return nil, context.DeadlineExceeded
	}
	return ackTransport{}.RoundTrip(ctx, nil, req)
}

// ackTransport is a broker of one partition of topic "t" that acknowledges
// every produce at once and costs nothing, so that the allocations counted
// around a write are the writers'.
type ackTransport struct{}

func (ackTransport) RoundTrip(_ context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	switch req.(type) {
	case *metadataAPI.Request:
		return &metadataAPI.Response{
			Brokers: []metadataAPI.ResponseBroker{{NodeID: 1, Host: "h", Port: 9092}},
			Topics:  []metadataAPI.ResponseTopic{{Name: "t", Partitions: []metadataAPI.ResponsePartition{{PartitionIndex: 0, LeaderID: 1}}}},
		}, nil
	case *produceAPI.Request:
		return &produceAPI.Response{Topics: []produceAPI.ResponseTopic{{Topic: "t", Partitions: []produceAPI.ResponsePartition{{Partition: 0}}}}}, nil
	}
	return nil, fmt.Errorf("unexpected request %T", req)
}

// TestWriterCopiesOutliveRetries: a write that succeeded on its second
// attempt returns nil while its first attempt's request may still be
// encoded. The copies the writer made must still hold that write's
// headers then, whatever is written next (reusing them once broke this).
func TestWriterCopiesOutliveRetries(t *testing.T) {
	tr := &retryTransport{stale: make(chan protocol.RecordReader, 1)}
	kw := &kafka.Writer{Addr: kafka.TCP("h:9092"), Topic: "t", Transport: tr, BatchTimeout: time.Millisecond,
		WriteBackoffMin: time.Millisecond, WriteBackoffMax: time.Millisecond}
	defer kw.Close()
	w := newWriter(t, kw)
	ctx1 := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1"})
	if err := w.WriteMessages(ctx1, kafka.Message{Value: []byte("a"), Headers: []kafka.Header{{Key: "seq", Value: []byte("1")}}}); err != nil {
		t.Fatal(err)
	}
	stale := <-tr.stale
	done := make(chan error, 1)
	go func() {
		ctx2 := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-2"})
		done <- w.WriteMessages(ctx2, kafka.Message{Value: []byte("b"), Headers: []kafka.Header{{Key: "seq", Value: []byte("2")}}})
	}()
	rec, err := stale.ReadRecord()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range rec.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	want := []string{"seq=1", "sandbox-id=pr-1", "baggage=sandbox.id=pr-1"}
	if !slices.Equal(got, want) {
		t.Errorf("the first attempt's request encodes headers %q, want %q", got, want)
	}
}

// TestHandedBackCopiesAreTheirOwn: kafka-go hands the copies back to the
// caller's code (a Balancer, a Completion callback, a
// MessageTooLargeError). An edit made there in place reaches no other
// message, nor the caller's own (one it had tagged already): each copy has
// a header list of its own.
func TestHandedBackCopiesAreTheirOwn(t *testing.T) {
	var seen []string
	edit := kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
		seen = append(seen, header(m.Headers, "sandbox-id")...)
		for i := range m.Headers {
			m.Headers[i] = kafka.Header{Key: "sandbox-id", Value: []byte("pr-edited")}
		}
		return partitions[0]
	})
	addrs := kafkatest.Start(t)
	kw := kafkatest.Writer(t, addrs, kafkatest.Topic(t, addrs, 1))
	kw.Balancer = edit
	w := newWriter(t, kw)
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	pretagged := []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-42")}}
	for _, msgs := range [][]kafka.Message{
		{{Value: []byte("a")}},
		{{Value: []byte("b")}},
		{{Value: []byte("c"), Headers: []kafka.Header{{Key: "seq", Value: []byte("1")}}}},
		{{Value: []byte("d")}, {Value: []byte("e")}},
		{{Value: []byte("f"), Headers: pretagged}},
		{{Value: []byte("g")}},
	} {
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	if want := slices.Repeat([]string{"pr-42"}, 7); !slices.Equal(seen, want) {
		t.Errorf("the balancer saw sandbox-id %q, want %q", seen, want)
	}
	if got := string(pretagged[0].Value); got != "pr-42" {
		t.Errorf("the caller's own sandbox-id header became %q", got)
	}
}

// TestWriteMessagesAllocs: a sandbox write allocates one object (the
// copy's header list) more than kafka-go's own write of the same tagged
// message: the copy of a single message stays on the stack. (The pooled
// slices of batches rely on what this checks: that kafka-go keeps nothing
// of the slice it is given.)
func TestWriteMessagesAllocs(t *testing.T) {
	kw := &kafka.Writer{Addr: kafka.TCP("h:9092"), Topic: "t", Transport: ackTransport{}, BatchSize: 1}
	defer kw.Close()
	w := newWriter(t, kw)
	ctx := context.Background()
	sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	for _, hs := range [][]kafka.Header{nil, {{Key: "seq", Value: []byte("1")}}} {
		m := kafka.Message{Value: []byte("v"), Headers: hs}
		tagged := m
		tagged.Headers = append(slices.Clone(hs), kafka.Header{Key: "sandbox-id", Value: []byte("pr-42")}, kafka.Header{Key: "baggage", Value: []byte("sandbox.id=pr-42,sandbox.actor=alice")})
		// kafka-go's own count varies by a fraction from run to run
		// (timers, goroutines): compare medians of interleaved runs.
		var raw, ours []float64
		for range 5 {
			raw = append(raw, allocsPerRun(t, 300, func() error { return kw.WriteMessages(ctx, tagged) }))
			ours = append(ours, allocsPerRun(t, 300, func() error { return w.WriteMessages(sctx, m) }))
		}
		slices.Sort(raw)
		slices.Sort(ours)
		extra, want := ours[2]-raw[2], 1.0
		t.Logf("%d caller headers: %.2f allocations a write, kafka-go alone %.2f", len(hs), ours[2], raw[2])
		if extra > want+0.5 {
			t.Errorf("%d caller headers: %.2f allocations more than kafka-go alone, want %v", len(hs), extra, want)
		}
	}
}

// allocsPerRun is testing.AllocsPerRun without rounding down.
func allocsPerRun(t *testing.T, runs int, f func() error) float64 {
	t.Helper()
	if err := f(); err != nil { // warm up
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs)
}
