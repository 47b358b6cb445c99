package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// malformed are sandbox headers that cannot be read, by value.
var malformed = map[string][]kafka.Header{
	"bad-id":         {{Key: "sandbox-id", Value: []byte("NOT_A_LABEL")}},
	"no-value":       {{Key: "baggage", Value: []byte("sandbox.id")}},
	"conflict":       {{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "baggage", Value: []byte("sandbox.id=pr-7")}},
	"actor-no-id":    {{Key: "baggage", Value: []byte("sandbox.actor=alice")}},
	"bad-escape":     {{Key: "baggage", Value: []byte("sandbox.id=pr-42,sandbox.actor=%zz")}},
	"two-header-ids": {{Key: "Sandbox-Id", Value: []byte("pr-42")}, {Key: "sandbox-id", Value: []byte("pr-43")}},
	// Issue 13: an empty or blank dedicated header, a record header named
	// as a baggage key (kcat -H sandbox.id=pr-1), lookalike baggage keys
	// that OpenTelemetry (Unicode and \v \f \r \n spaces) or a lenient
	// parser (percent-decoded keys) reads as ours.
	"empty-header":    {{Key: "sandbox-id", Value: []byte("")}},
	"blank-header":    {{Key: "sandbox-id", Value: []byte(" \t")}},
	"member-key-name": {{Key: "sandbox.id", Value: []byte("pr-42")}},
	// A member key spelled with a letter that Unicode case folding takes
	// to ours (ſ, U+017F, folds to s), as the codec's carrier reads it.
	"folded-member-key": {{Key: "\u017fandbox.id", Value: []byte("pr-42")}},
	"nbsp-key":          {{Key: "baggage", Value: []byte("\u00a0sandbox.id=pr-42")}},
	"vtab-key":          {{Key: "baggage", Value: []byte("a=1,\vsandbox.id=pr-42")}},
	"crlf-key":          {{Key: "baggage", Value: []byte("\r\nsandbox.id=pr-42")}},
	"percent-key":       {{Key: "baggage", Value: []byte("sandbox%2Eid=pr-42")}},
	"header-and-ncode":  {{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "baggage", Value: []byte("sandbox.id=pr-42,\u2003sandbox.id=pr-7")}},
}

// produceUnreadable writes the malformed messages between good ones (an
// untagged one and one of pr-42) with a plain writer, and returns the
// values of the good ones.
func produceUnreadable(t *testing.T, addrs []string, topic string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := kafkatest.Writer(t, addrs, topic)
	var good []string
	for _, v := range slices.Sorted(maps.Keys(malformed)) {
		msgs := []kafka.Message{
			{Key: []byte(v), Value: []byte("good-untagged-" + v)},
			{Key: []byte(v), Value: []byte(v), Headers: malformed[v]},
			{Key: []byte(v), Value: []byte("good-tagged-" + v), Headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-42")}}},
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		good = append(good, "good-untagged-"+v, "good-tagged-"+v)
	}
	return good
}

// TestUnreadable: a message whose sandbox headers cannot be read is never
// returned, neither by the baseline reader nor by a sandbox reader. With a
// dead-letter writer it is written there first, with the reason; without
// one it is skipped with a rejected audit record. Either way it is counted.
func TestUnreadable(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	good := produceUnreadable(t, addrs, topic)
	total := int64(len(good) + len(malformed))
	// pr-42's route for the service was removed before the messages were
	// produced: its good messages are the baseline's, and its reader
	// starts at the route's activation, before them.
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-42", Services: map[string]routes.Route{
		service: {Upstream: "h:1", ActiveFrom: time.Now().Add(-2 * time.Hour), RemovedAt: time.Now().Add(-time.Hour)},
	}}})
	if err != nil {
		t.Fatal(err)
	}

	for _, dl := range []bool{false, true} {
		name := map[bool]string{false: "skip", true: "dead-letter"}[dl]
		t.Run(name, func(t *testing.T) {
			var log auditLog
			opts := []kafkamw.ReaderOption{kafkamw.WithLogger(log.logger())}
			var dlqTopic string
			if dl {
				dlqTopic = kafkatest.Topic(t, addrs, 1)
				opts = append(opts, kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlqTopic)))
			}
			group := kafkatest.UniqueName("orders")
			base, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, opts...)
			if err != nil {
				t.Fatal(err)
			}
			sb, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.AsSandbox("pr-42"))
			if err != nil {
				t.Fatal(err)
			}
			cb, cs := startConsumer(t, "baseline", base, 1), startConsumer(t, "sandbox", sb, 1)
			waitFor(t, 20*time.Second, "every message decided", func() bool { return cb.seen() == total && cs.seen() == total })
			gotBase, gotSb := cb.stop(), cs.stop()

			var values []string
			for _, p := range gotBase {
				values = append(values, p.value)
			}
			slices.Sort(values)
			slices.Sort(good)
			if !slices.Equal(values, good) {
				t.Errorf("baseline processed %q,\nwant only the good messages %q", values, good)
			}
			if len(gotSb) != 0 {
				t.Errorf("sandbox reader processed %d messages; pr-42 does not override %s", len(gotSb), service)
			}
			wantDL := int64(0)
			if dl {
				wantDL = int64(len(malformed))
			}
			if got, want := base.Counts(), (kafkamw.Counts{Delivered: int64(len(good)), Skipped: int64(len(malformed)), Unreadable: int64(len(malformed)), DeadLettered: wantDL}); got != want {
				t.Errorf("baseline counts %+v, want %+v", got, want)
			}
			if c := sb.Counts(); c.Unreadable != int64(len(malformed)) || c.Delivered != 0 {
				t.Errorf("sandbox counts %+v", c)
			}
			rejected, other := 0, 0
			for k, n := range log.decisions(t) {
				if strings.HasPrefix(k, key(audit.Rejected, "")) {
					rejected += n
				} else if !strings.HasPrefix(k, key(audit.Fallback, "")) {
					other += n
				}
			}
			if rejected != len(malformed) || other != 0 {
				t.Errorf("audit records %v: want %d rejected, the rest fallback", log.decisions(t), len(malformed))
			}
			if !dl {
				return
			}
			dead := readAll(t, addrs, dlqTopic, len(malformed))
			for v, hs := range malformed {
				m, ok := dead[v]
				if !ok || string(m.Value) != v {
					t.Errorf("%s not dead-lettered: %+v", v, m)
					continue
				}
				if !slices.EqualFunc(m.Headers[:len(hs)], hs, func(a, b kafka.Header) bool { return a.Key == b.Key && string(a.Value) == string(b.Value) }) {
					t.Errorf("%s: original headers not kept: %+v", v, m.Headers)
				}
				if r := header(m.Headers, kafkamw.HeaderDeadLetterReason); len(r) != 1 || !strings.Contains(r[0], "propagation:") {
					t.Errorf("%s: reason %q", v, r)
				}
				if s := header(m.Headers, kafkamw.HeaderDeadLetterSource); len(s) != 1 || !strings.HasPrefix(s[0], topic+"/") {
					t.Errorf("%s: source %q", v, s)
				}
			}
		})
	}
}

// TestDeadLetterFailure: when the dead-letter write fails, an unreadable
// message is skipped all the same (no message that no one processes may
// hold production behind it), counted in DeadLetterFailed and audited with
// its coordinates. After one failure the writer is not tried again for a
// while: a dead-letter topic that hangs costs one bounded write, not one
// per message.
func TestDeadLetterFailure(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := kafkatest.Writer(t, addrs, topic)
	if err := w.WriteMessages(ctx,
		kafka.Message{Value: []byte("bad"), Headers: malformed["bad-id"]},
		kafka.Message{Value: []byte("bad2"), Headers: malformed["bad-id"]},
		kafka.Message{Value: []byte("good")}); err != nil {
		t.Fatal(err)
	}
	table := routes.New()
	var fail atomic.Bool
	fail.Store(true)
	dlq := kafkatest.Topic(t, addrs, 1)
	dw := kafkatest.Writer(t, addrs, dlq)
	dw.MaxAttempts = 1
	// A transport that fails: the dead-letter topic is unreachable.
	var calls atomic.Int32
	dw.Transport = counting{failing{dw.Transport, &fail}, &calls}
	var log auditLog
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service, kafkamw.WithDeadLetter(dw), kafkamw.WithLogger(log.logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, m, err := r.FetchMessage(ctx)
	if err != nil || string(m.Value) != "good" {
		t.Fatalf("FetchMessage = %q, %v; want good, past the unreadable messages", m.Value, err)
	}
	if c := r.Counts(); c.Skipped != 2 || c.Unreadable != 2 || c.DeadLettered != 0 || c.DeadLetterFailed != 2 {
		t.Fatalf("counts %+v", c)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("dead-letter writer tried %d times, want once: after a failure it rests", n)
	}
	rec := log.text()
	for _, off := range []string{"/0/0", "/0/1"} {
		if !strings.Contains(rec, "dead-letter write failed, message left at "+topic+off) {
			t.Errorf("audit does not name %s%s as left in the topic:\n%s", topic, off, rec)
		}
	}
}

// counting counts a transport's round trips.
type counting struct {
	kafka.RoundTripper
	n *atomic.Int32
}

func (c counting) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	c.n.Add(1)
	return c.RoundTripper.RoundTrip(ctx, addr, req)
}

type failing struct {
	kafka.RoundTripper
	fail *atomic.Bool
}

func (f failing) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	if f.fail.Load() {
		return nil, errors.New("dead-letter broker unreachable")
	}
	return f.RoundTripper.RoundTrip(ctx, addr, req)
}

// TestFutureTimestamp: one tagged message stamped a day ahead (a producer
// with a wrong clock) must not stall the partition: it is decided at once,
// and the message behind it is delivered.
func TestFutureTimestamp(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// pr-1 exists but does not override this service: the baseline owns
	// its messages.
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{"other": {Upstream: "h:1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	w := kafkatest.Writer(t, addrs, topic)
	if err := w.WriteMessages(ctx,
		kafka.Message{Value: []byte("skewed"), Time: time.Now().Add(24 * time.Hour), Headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}}},
		kafka.Message{Value: []byte("normal")}); err != nil {
		t.Fatal(err)
	}
	// A table that is only ever behind the future message: one that syncs.
	src := routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) { return table.Sandboxes(), nil })
	synced := syncTable(t, src, 5*time.Millisecond)
	waitFor(t, 5*time.Second, "first sync", func() bool { return !synced.SyncedAt().IsZero() })

	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")),
		synced, service, kafkamw.WithRouteWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for range 2 {
		mctx, m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("FetchMessage after %q: %v", got, err)
		}
		got = append(got, string(m.Value))
		if string(m.Value) == "skewed" {
			if s, ok := sandboxOf(mctx); !ok || s != "pr-1" {
				t.Errorf("skewed message context: %q, %v", s, ok)
			}
		}
	}
	if got[0] != "skewed" || got[1] != "normal" {
		t.Fatalf("delivered %q", got)
	}
	// At most one wait: for the table to sync up to the reader's now,
	// never up to the message's time, a day ahead.
	if c := r.Counts(); c.Future != 1 || c.Waits > 1 {
		t.Fatalf("counts %+v, want one future message and at most one wait", c)
	}
}

// TestConcurrentFetch: several goroutines share one reader while its
// table keeps falling behind the messages (ErrRoutesBehind now and then).
// Every message must be delivered exactly once: a message kept for a retry
// must not be overwritten by another goroutine's.
func TestConcurrentFetch(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The source answers once, then holds every sync until gate opens,
	// which the test does once a reader has waited for the table; from
	// then on it is slow, and the table keeps falling behind.
	doc := []routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{"other": {Upstream: "h:1"}}}}
	var calls atomic.Int32
	gate := make(chan struct{})
	src := routes.SourceFunc(func(ctx context.Context) ([]routes.Sandbox, error) {
		if calls.Add(1) > 1 {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			time.Sleep(3 * time.Millisecond)
		}
		return doc, nil
	})
	table := syncTable(t, src, time.Millisecond)
	waitFor(t, 5*time.Second, "first sync", func() bool { return !table.SyncedAt().IsZero() })

	// Stamped after the table's first sync, one millisecond apart: the
	// readers meet messages their table has not synced up to yet.
	const n = 200
	w := kafkatest.Writer(t, addrs, topic)
	base := time.Now().Add(time.Millisecond)
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte("v"), Time: base.Add(time.Duration(i) * time.Millisecond),
			Headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}}}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")),
		table, service, kafkamw.WithRouteWait(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	go func() {
		defer close(gate)
		for r.Counts().Waits == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				finished := len(seen) == n
				mu.Unlock()
				if finished || ctx.Err() != nil {
					return
				}
				fctx, fcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				_, m, err := r.FetchMessage(fctx)
				fcancel()
				if err != nil {
					continue // routes behind, or nothing yet: try again
				}
				mu.Lock()
				seen[string(m.Key)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d of %d messages delivered (counts %+v)", len(seen), n, r.Counts())
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("message %s delivered %d times", k, c)
		}
	}
	if c := r.Counts(); c.Waits == 0 {
		t.Fatalf("counts %+v: the table never fell behind, the test proves nothing", c)
	}
	t.Logf("counts %+v", r.Counts())
}
