package kafkamw_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newWriter is kafkamw.NewWriter for tests.
func newWriter(t testing.TB, w *kafka.Writer, opts ...kafkamw.WriterOption) *kafkamw.Writer {
	t.Helper()
	wr, err := kafkamw.NewWriter(w, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return wr
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processed is one message a reader returned.
type processed struct {
	value   string
	by      string
	sandbox propagation.Sandbox
	tagged  bool
	msg     kafka.Message
}

// consumer runs a reader's fetch loop in the background: it records every
// message returned, and commits the last message of every partition each
// commitEvery messages and when stopped.
type consumer struct {
	t      testing.TB
	name   string
	r      *kafkamw.Reader
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu   sync.Mutex
	got  []processed
	errs []error
}

func startConsumer(t testing.TB, name string, r *kafkamw.Reader, commitEvery int) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{t: t, name: name, r: r, cancel: cancel, done: make(chan struct{})}
	t.Cleanup(func() { c.stop() })
	go func() {
		defer close(c.done)
		last := map[int]kafka.Message{}
		commit := func(ctx context.Context) {
			if len(last) == 0 {
				return
			}
			msgs := make([]kafka.Message, 0, len(last))
			for _, m := range last {
				msgs = append(msgs, m)
			}
			if err := r.CommitMessages(ctx, msgs...); err != nil {
				if ctx.Err() == nil { // a commit cut by stop is retried by the final one
					c.addErr(fmt.Errorf("commit: %w", err))
				}
				return
			}
			clear(last)
		}
		n := 0
		for {
			mctx, m, err := r.FetchMessage(ctx)
			if err != nil {
				if ctx.Err() != nil {
					cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
					commit(cctx)
					ccancel()
					return
				}
				c.addErr(err)
				select { // an error that repeats must not spin
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			s, tagged := propagation.FromContext(mctx)
			c.mu.Lock()
			c.got = append(c.got, processed{value: string(m.Value), by: name, sandbox: s, tagged: tagged, msg: m})
			c.mu.Unlock()
			last[m.Partition] = m
			if n++; n%commitEvery == 0 {
				commit(ctx)
			}
		}
	}()
	return c
}

func (c *consumer) addErr(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

// seen is how many messages the reader has decided: returned or skipped.
func (c *consumer) seen() int64 {
	n := c.r.Counts()
	return n.Delivered + n.Skipped
}

// stop ends the loop, commits what it returned and closes the reader.
// It reports the errors the loop met. It may be called more than once.
func (c *consumer) stop() []processed {
	c.t.Helper()
	c.once.Do(func() {
		c.cancel()
		<-c.done
		if err := c.r.Close(); err != nil {
			c.t.Errorf("%s: close: %v", c.name, err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, err := range c.errs {
			if i == 5 {
				c.t.Errorf("%s: and %d more errors", c.name, len(c.errs)-i)
				break
			}
			c.t.Errorf("%s: %v", c.name, err)
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// auditLog captures the audit records of a reader or writer
// (internal/audit/audittest). Its zero value is ready to use.
type auditLog struct {
	once sync.Once
	rec  *audittest.Recorder
	log  *slog.Logger
}

func (a *auditLog) logger() *slog.Logger {
	a.once.Do(func() { a.rec, a.log = audittest.New() })
	return a.log
}

// decisions counts the records by decision and sandbox ID:
// "<decision>/<id>".
func (a *auditLog) decisions(t testing.TB) map[string]int {
	t.Helper()
	a.logger()
	out := map[string]int{}
	for _, rec := range a.rec.Records() {
		out[rec[audit.KeyDecision]+"/"+rec[audit.KeyID]]++
	}
	return out
}

// text returns every record, one a line, for searching in.
func (a *auditLog) text() string {
	a.logger()
	var b strings.Builder
	for _, rec := range a.rec.Records() {
		fmt.Fprintln(&b, rec)
	}
	return b.String()
}

// key is what [auditLog.decisions] counts records of decision d about
// sandbox id under.
func key(d audit.Decision, id string) string { return string(d) + "/" + id }

// groupLag returns, per partition of topic, the end offset minus the
// group's committed offset.
func groupLag(t testing.TB, addrs []string, topic, group string) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	var ps []int
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		ps = append(ps, p.ID)
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	ends, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil {
		t.Fatal(err)
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[topic] {
		committed[p.Partition] = p.CommittedOffset
	}
	lag := map[int]int64{}
	for _, p := range ends.Topics[topic] {
		c := max(committed[p.Partition], 0)
		lag[p.Partition] = p.LastOffset - c
	}
	return lag
}

// hc is a read-only TextMapCarrier over record headers, for checking what
// reached the broker with the codec itself.
type hc []kafka.Header

func otelCarrier(hs []kafka.Header) hc { return hc(hs) }

func (h hc) Get(key string) string {
	for _, x := range h {
		if strings.EqualFold(x.Key, key) {
			return string(x.Value)
		}
	}
	return ""
}

func (h hc) Set(string, string) { panic("read-only") }

func (h hc) Keys() []string {
	var out []string
	for _, x := range h {
		out = append(out, x.Key)
	}
	return out
}

func sandboxOf(ctx context.Context) (string, bool) {
	s, ok := propagation.FromContext(ctx)
	return s.ID, ok
}
