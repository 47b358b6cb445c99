package kafkamw_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRunDeadLetterNeverFireAndForget: a production message Run gives up
// on under DeadLetterAndContinue is committed past only once the
// dead-letter topic holds it. A dead-letter writer that does not wait for
// the broker (kafka-go's default RequiredAcks, RequireNone, or Async)
// reports success for a copy the broker refuses, here one over the
// dead-letter topic's max.message.bytes: the message was counted
// dead-lettered, committed past, and was nowhere. NewReader refuses such
// a writer; if it took one, the message must be in the dead-letter topic
// or not committed past.
func TestRunDeadLetterNeverFireAndForget(t *testing.T) {
	addrs := kafkatest.Start(t)
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  func(*kafka.Writer)
	}{
		{"default acks", func(w *kafka.Writer) { w.RequiredAcks = kafka.RequireNone }},
		{"async", func(w *kafka.Writer) { w.Async = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic, dlq := kafkatest.Topic(t, addrs, 1), kafkatest.Topic(t, addrs, 1)
			setMaxBytes(t, addrs, dlq, 1000)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			w := kafkatest.Writer(t, addrs, topic)
			big := bytes.Repeat([]byte("x"), 4000)
			if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("m-0"), Value: big}, kafka.Message{Key: []byte("m-1"), Value: []byte("ok")}); err != nil {
				t.Fatal(err)
			}
			dw := kafkatest.Writer(t, addrs, dlq)
			tc.set(dw)
			group := kafkatest.UniqueName("g")
			r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.WithDeadLetter(dw))
			if errors.Is(err, kafkamw.ErrConfig) && strings.Contains(err.Error(), "WithDeadLetter") {
				return // refused: no such write can be taken for a record
			}
			if err != nil {
				t.Fatal(err)
			}
			rctx, stop := context.WithCancel(ctx)
			err = r.Run(rctx, func(_ context.Context, m kafka.Message) error {
				if string(m.Key) == "m-0" {
					return errors.New("database down")
				}
				stop()
				return nil
			}, kafkamw.OnProductionFailure(kafkamw.DeadLetterAndContinue), kafkamw.WithRetries(1), kafkamw.WithBackoff(time.Millisecond, time.Millisecond))
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
			lag := groupLag(t, addrs, topic, group)
			dead := groupLag(t, addrs, dlq, kafkatest.UniqueName("none"))[0] // the dead-letter topic's end offset
			if dead == 0 && lag[0] == 0 {
				t.Fatalf("production message m-0 committed past (counts %+v) and not in the dead-letter topic: lost", r.Counts())
			}
		})
	}
}

// TestDeadLetterRefusalOfOneMessageKeepsTheWriter: the dead-letter
// topic refusing one message for its size (an outsider's orphan sized so
// that the dead-letter headers push it over the topic's
// max.message.bytes) says nothing about the writer: the next message is
// still dead-lettered. Taking the writer down for five seconds after such
// a refusal let one crafted message every five seconds keep every other
// orphan, unreadable message and given-up sandbox message out of the
// dead-letter topic.
func TestDeadLetterRefusalOfOneMessageKeepsTheWriter(t *testing.T) {
	addrs := kafkatest.Start(t)
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	topic, dlq := kafkatest.Topic(t, addrs, 1), kafkatest.Topic(t, addrs, 1)
	setMaxBytes(t, addrs, dlq, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ghost := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "ghost"})
	pr1 := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-1"})
	for _, m := range []struct {
		ctx   context.Context
		value []byte
	}{
		{ghost, bytes.Repeat([]byte("x"), 4000)}, // refused by the dead-letter topic
		{ghost, []byte("orphan")},                // dead-lettered
		{pr1, []byte("no database")},             // given up on by Run, dead-lettered
		{ctx, []byte("production")},
	} {
		if err := w.WriteMessages(m.ctx, kafka.Message{Value: m.value}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service,
		kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlq)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var n atomic.Int32
	err = runUntil(t, r, func(ctx context.Context, m kafka.Message) error {
		if _, ok := propagation.FromContext(ctx); ok {
			return errNoDB
		}
		n.Add(1)
		return nil
	}, "the production message", func() bool { return n.Load() == 1 }, kafkamw.WithSandboxErrors(errNoDB))
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counts()
	dead := groupLag(t, addrs, dlq, kafkatest.UniqueName("none"))[0]
	if c.DeadLettered != 2 || c.DeadLetterFailed != 1 || dead != 2 {
		t.Fatalf("counts %+v, %d in the dead-letter topic: want the oversized orphan alone refused, the orphan and the sandbox message dead-lettered", c, dead)
	}
}

// TestRunPanicAroundSandboxMessageKeepsIt: a panic that escapes Run while
// it handles a sandbox message, from the service's own code around the
// handler (its OnError callback here; its audit logger or dead-letter
// writer's transport alike), keeps the message as a production
// handler's panic does: the supervisor that recovers and calls Run again
// gets the message first. Run went on past it instead, and its next
// commit covered a message no one had processed or dead-lettered.
func TestRunPanicAroundSandboxMessageKeepsIt(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "pr-1", "")
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("g")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var mu sync.Mutex
	var seen []string
	fail := true
	h := func(ctx context.Context, m kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(m.Value))
		if _, ok := propagation.FromContext(ctx); ok && fail {
			fail = false
			return errors.New("sandbox database down")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	func() {
		defer func() {
			if p := recover(); p == nil {
				t.Fatal("Run did not panic")
			}
		}()
		_ = r.Run(ctx, h, kafkamw.OnError(func(error) { panic("alerting client bug") }))
	}()
	err = runUntil(t, r, h, "the production message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 && seen[len(seen)-1] == "m-1"
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "m-0,m-0,m-1" {
		t.Fatalf("handled %v: want the sandbox message m-0 again after the panic, then m-1", seen)
	}
}

// TestRunDeadLetterReasonClipped: the handler's error goes into the
// dead-letter copy's HeaderDeadLetterReason clipped, not whole. A handler
// that quotes the payload it cannot parse (a JSON decoder's error, say)
// doubled the copy: a production message of 600 KB, which the topic
// took, made a copy over the dead-letter writer's 1 MB batch limit, and
// under DeadLetterAndContinue its write was retried for ever, holding the
// partition on a message the policy says to dead-letter and pass.
func TestRunDeadLetterReasonClipped(t *testing.T) {
	addrs := kafkatest.Start(t)
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	topic, dlq := kafkatest.Topic(t, addrs, 1), kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := kafkatest.Writer(t, addrs, topic)
	big := bytes.Repeat([]byte("x"), 600<<10)
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("m-0"), Value: big}, kafka.Message{Key: []byte("m-1"), Value: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service,
		kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlq)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var done atomic.Bool
	err = runUntil(t, r, func(_ context.Context, m kafka.Message) error {
		if string(m.Key) == "m-0" {
			return fmt.Errorf("cannot parse %q", m.Value)
		}
		done.Store(true)
		return nil
	}, "the production message behind one dead-lettered", done.Load,
		kafkamw.OnProductionFailure(kafkamw.DeadLetterAndContinue), kafkamw.WithRetries(1), kafkamw.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	dead := readAll(t, addrs, dlq, 1)["m-0"]
	reason := header(dead.Headers, kafkamw.HeaderDeadLetterReason)
	if !bytes.Equal(dead.Value, big) || len(reason) != 1 || !strings.Contains(reason[0], "cannot parse") || len(reason[0]) > 4<<10 {
		t.Fatalf("dead letter of m-0: %d bytes of value, reasons of %d bytes: want the message whole and one reason, clipped", len(dead.Value), len(strings.Join(reason, "")))
	}
}

// TestRunRestartAccountsForEveryMessage: a stream of production messages,
// messages of a sandbox the baseline owns (pr-1 exists, overrides
// nothing), of a sandbox that overrides the service (pr-2: its reader's)
// and orphans (ghost), consumed by Run in one group across a restart.
// After a clean stop (ctx cancelled in the handler) the next reader
// starts right after the last message handled: the baseline's messages
// are each handled once, in order, none lost; pr-2's and the orphans
// never reach the baseline handler and are counted. After a crash (the
// reader killed in the handler, before its commit) the next reader
// handles the killed message again and nothing else twice (the orphan
// before it, skipped on its commit, is decided again).
func TestRunRestartAccountsForEveryMessage(t *testing.T) {
	addrs := kafkatest.Start(t)
	now := time.Now().Add(-time.Hour)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-1"},
		{ID: "pr-2", Services: map[string]routes.Route{service: {Upstream: "h:1", ActiveFrom: now}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"", "pr-1", "", "ghost", "pr-2", "", "pr-1", "pr-1", "ghost", "", "pr-2", "", "pr-1", "", "ghost", "", "pr-2", "pr-1", "", ""}
	var owned []string
	for i, k := range kinds {
		if k == "" || k == "pr-1" {
			owned = append(owned, fmt.Sprintf("m-%d", i))
		}
	}
	for _, tc := range []struct {
		name     string
		crash    bool
		interval time.Duration // ReaderConfig.CommitInterval: 0 commits synchronously
	}{
		{"clean", false, 0},
		{"crash", true, 0},
		{"clean/async commits", false, 50 * time.Millisecond},
	} {
		crash := tc.crash
		t.Run(tc.name, func(t *testing.T) {
			topic := attackTopic(t, addrs, kinds...)
			group := kafkatest.UniqueName("g")
			var seen []string
			var counts kafkamw.Counts
			for session, stopAt := range []string{"m-9", ""} {
				cfg := kafkatest.ReaderConfig(addrs, topic, group)
				cfg.CommitInterval = tc.interval
				r, err := kafkamw.NewReader(cfg, table, service)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err = r.Run(ctx, func(mctx context.Context, m kafka.Message) error {
					want := ""
					if i := m.Offset; int(i) < len(kinds) {
						want = kinds[i]
					}
					if got, _ := sandboxOf(mctx); got != want {
						t.Errorf("%s handled with sandbox %q, want %q", m.Value, got, want)
					}
					seen = append(seen, string(m.Value))
					switch {
					case string(m.Value) == stopAt && crash:
						kafkamw.Crash(r)
						cancel()
					case string(m.Value) == stopAt, string(m.Value) == owned[len(owned)-1] && session == 1:
						cancel()
					}
					return nil
				})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				c := r.Counts()
				t.Logf("session %d: %+v", session, c)
				counts.Orphaned += c.Orphaned
				counts.Skipped += c.Skipped
				r.Close()
			}
			want := strings.Join(owned, ",")
			if crash {
				want = strings.Replace(want, "m-9,", "m-9,m-9,", 1)
			}
			if got := strings.Join(seen, ","); got != want {
				t.Fatalf("handled %s\nwant    %s", got, want)
			}
			// After the crash the orphan m-8, whose skip rode on m-9's
			// lost commit, is decided (and counted) again.
			orphans := int64(3)
			if crash {
				orphans = 4
			}
			if counts.Orphaned != orphans || counts.Skipped != orphans+3 {
				t.Errorf("counts across the sessions %+v: want %d orphans and the 3 messages of pr-2 skipped", counts, orphans)
			}
		})
	}
}

// TestRunStopsOnClose: Close ends Run at once, also when the group
// reader has messages fetched ahead: Run handled them after Close, each
// commit failing (the group reader is gone), so that every one was
// handled again after the restart; and FetchMessage after Close returned
// them rather than io.EOF, as its documentation says.
func TestRunStopsOnClose(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "", "", "", "", "", "", "", "")
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("Run", func(t *testing.T) {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var seen []string
		err = r.Run(ctx, func(_ context.Context, m kafka.Message) error {
			seen = append(seen, string(m.Value))
			if string(m.Value) == "m-1" {
				r.Close() // as a shutdown hook would, while the handler runs
			}
			return nil
		})
		if err != nil || strings.Join(seen, ",") != "m-0,m-1" {
			t.Fatalf("Run = %v after handling %v: want it to stop after m-1, during which the reader was closed", err, seen)
		}
	})
	t.Run("FetchMessage", func(t *testing.T) {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, _, err := r.FetchMessage(ctx); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if _, m, err := r.FetchMessage(ctx); !errors.Is(err, io.EOF) {
			t.Fatalf("FetchMessage after Close = %s, %v; want io.EOF", m.Value, err)
		}
	})
}

// valueCtx is a caller's context of a type == cannot compare (it holds a
// slice), passed by value: a request-scoped struct embedding its parent.
type valueCtx struct {
	context.Context
	tags []string
}

// TestRunWithUncomparableContext: Run takes any context. It told a
// sandbox message from a production one by comparing the message's
// context with its own (==), which panics at run time when both hold a
// value of one type that cannot be compared: every production message
// panicked Run before its handler, and was passed over by the next Run.
func TestRunWithUncomparableContext(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "", "pr-1", "")
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	base, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen []string
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("Run panicked: %v", p)
			}
		}()
		err = r.Run(valueCtx{base, []string{"consumer"}}, func(ctx context.Context, m kafka.Message) error {
			id, _ := sandboxOf(ctx)
			seen = append(seen, string(m.Value)+"/"+id)
			if len(seen) == 3 {
				cancel()
			}
			return nil
		})
	}()
	if err != nil || strings.Join(seen, ",") != "m-0/,m-1/pr-1,m-2/" {
		t.Fatalf("Run = %v, handled %v: want m-0, m-1 with pr-1, m-2", err, seen)
	}
}

// TestRunNilContext: Run(nil, h), a caller's mistake, is an error
// wrapping ErrConfig, as a nil handler is; it panicked on the nil
// context's first use.
func TestRunNilContext(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"}, table, service)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		//lint:ignore SA1012 the caller's mistake under test
		return r.Run(nil, func(context.Context, kafka.Message) error { return nil })
	}()
	if !errors.Is(err, kafkamw.ErrConfig) {
		t.Fatalf("Run(nil, h) = %v; want an error wrapping ErrConfig", err)
	}
}

// TestDeadLetterTopicIsNotRead: NewReader refuses a dead-letter writer
// whose topic the reader reads, which an operator can mistype. The
// reader took it, and each orphan it dead-lettered came back to it as a
// new orphan, dead-lettered again: one message looped through the topic
// for ever, each round a record more (and a given-up production message
// under DeadLetterAndContinue alike).
func TestDeadLetterTopicIsNotRead(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "ghost", "")
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []kafka.ReaderConfig{
		kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")),
		func() kafka.ReaderConfig {
			c := kafkatest.ReaderConfig(addrs, "", kafkatest.UniqueName("g"))
			c.GroupTopics = []string{kafkatest.Topic(t, addrs, 1), topic}
			return c
		}(),
	} {
		r, err := kafkamw.NewReader(cfg, table, service, kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, topic)))
		if errors.Is(err, kafkamw.ErrConfig) && strings.Contains(err.Error(), "WithDeadLetter") {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		for ctx.Err() == nil {
			r.FetchMessage(ctx)
		}
		cancel()
		c := r.Counts()
		r.Close()
		t.Fatalf("a reader of %v dead-lettering to %s: counts %+v: the one orphan came back %d times", append(cfg.GroupTopics, cfg.Topic), topic, c, c.Orphaned-1)
	}
}

// TestRunDeadLetterReasonRedactsTickets: a handler's error that quotes a
// ticket (a header it could not use, say) reaches the dead-letter copy's
// reason and the audit record without the ticket's signature, as every
// header of the copy does: people read dead letters. The reason was
// written whole, and a clip of a long error inside the signature would
// leave 42 of its 43 characters where no redaction recognises them.
func TestRunDeadLetterReasonRedactsTickets(t *testing.T) {
	addrs := kafkatest.Start(t)
	signer, err := propagation.NewSigner(propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := signer.Sign(propagation.Sandbox{ID: "pr-1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sig := tk[strings.LastIndexByte(tk, '.')+1:]
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"short": "cannot use " + tk,
		"cut":   strings.Repeat("x", 1024-len(tk)+20) + tk + " and more",
	} {
		t.Run(name, func(t *testing.T) {
			topic, dlq := attackTopic(t, addrs, "pr-1", ""), kafkatest.Topic(t, addrs, 1)
			var log auditLog
			r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service,
				kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlq)), kafkamw.WithLogger(log.logger()))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var done atomic.Bool
			err = runUntil(t, r, func(ctx context.Context, _ kafka.Message) error {
				if _, ok := propagation.FromContext(ctx); ok {
					return fmt.Errorf("%s: %w", text, errNoDB)
				}
				done.Store(true)
				return nil
			}, "the production message", done.Load, kafkamw.WithSandboxErrors(errNoDB))
			if err != nil {
				t.Fatal(err)
			}
			reason := strings.Join(header(readAll(t, addrs, dlq, 1)["m-0"].Headers, kafkamw.HeaderDeadLetterReason), "")
			for where, s := range map[string]string{"dead-letter reason": reason, "audit": log.text()} {
				if strings.Contains(s, sig[:16]) {
					t.Errorf("the %s holds the ticket's signature: %s", where, s)
				}
			}
			if !strings.Contains(reason, "redacted") {
				t.Errorf("dead-letter reason %q: want the ticket shown redacted", reason)
			}
		})
	}
}

// TestRunRetryStopsOnClose: Close ends Run also while it retries a
// failing production message (RetryForever): Run went on calling the
// handler after Close for as long as its context lived, though nothing
// it did could be committed any more.
func TestRunRetryStopsOnClose(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "")
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	failed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.Run(context.Background(), func(context.Context, kafka.Message) error {
			if calls.Add(1) == 1 {
				close(failed)
			}
			return errors.New("database down")
		}, kafkamw.WithBackoff(time.Millisecond, 5*time.Millisecond))
	}()
	<-failed
	r.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after Close, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run still retrying 10s after Close (%d handler calls)", calls.Load())
	}
}
