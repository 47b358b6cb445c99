package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on fetch's untagged fast path (#14): what an outsider can
// produce, what a caller's mistake or a panic leaves, what concurrent
// callers and Close do to the lock it releases by hand.

// a14Case is one message produced to the broker and what each reader must
// do with it: "" is returned as production (the caller's context), an ID
// is returned with that sandbox in the context, "-" is not returned.
type a14Case struct {
	name              string
	headers           []kafka.Header
	baseline, sandbox string
}

func a14Cases() []a14Case {
	return []a14Case{
		{name: "nil-headers", baseline: "", sandbox: "-"},
		{name: "empty-headers", headers: []kafka.Header{}, baseline: "", sandbox: "-"},
		{name: "traceparent", headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}, baseline: "", sandbox: "-"},
		{name: "empty-key-header", headers: []kafka.Header{{Key: "", Value: nil}}, baseline: "", sandbox: "-"},
		{name: "owned", headers: tagged14("pr-42"), baseline: "-", sandbox: "pr-42"},
		{name: "overrides-nothing", headers: tagged14("pr-7"), baseline: "pr-7", sandbox: "-"},
		{name: "orphan", headers: tagged14("pr-999"), baseline: "-", sandbox: "-"},
		{name: "unreadable-id", headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("NOT_A_LABEL")}}, baseline: "-", sandbox: "-"},
		{name: "empty-sandbox-id", headers: []kafka.Header{{Key: "sandbox-id", Value: nil}}, baseline: "-", sandbox: "-"},
		{name: "baggage-only", headers: []kafka.Header{{Key: "baggage", Value: []byte("sandbox.id=pr-42")}}, baseline: "-", sandbox: "pr-42"},
		{name: "conflicting", headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-42")}, {Key: "baggage", Value: []byte("sandbox.id=pr-7")}}, baseline: "-", sandbox: "-"},
		{name: "uppercase-key", headers: []kafka.Header{{Key: "Sandbox-Id", Value: []byte("pr-42")}}, baseline: "-", sandbox: "pr-42"},
	}
}

// TestA14BrokerHeaderShapes produces each case of a14Cases through the
// embedded broker with a plain kafka-go writer (headers exactly as given:
// none, an empty list, foreign ones, ours readable or not), each between
// two untagged messages, and reads the topic with the baseline reader and
// the reader of pr-42 through the public API. What kafka-go hands over
// after the round trip (nil or empty header lists) must not move a
// sandbox's, orphaned or unreadable message onto the untagged fast path:
// the baseline reader returns only production's and pr-7's (with pr-7 in
// the context), the sandbox reader only pr-42's, never an untagged one.
func TestA14BrokerHeaderShapes(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := kafkatest.Writer(t, addrs, topic)
	table := routes14(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var msgs []kafka.Message
	want := map[string][]string{} // reader → "value:sandbox" returned, in order
	for _, c := range a14Cases() {
		before, after := "before-"+c.name, "after-"+c.name
		msgs = append(msgs,
			kafka.Message{Value: []byte(before)},
			kafka.Message{Value: []byte(c.name), Headers: c.headers},
			kafka.Message{Value: []byte(after)})
		want["baseline"] = append(want["baseline"], before+":")
		if c.baseline != "-" {
			want["baseline"] = append(want["baseline"], c.name+":"+c.baseline)
		}
		want["baseline"] = append(want["baseline"], after+":")
		if c.sandbox != "-" {
			want["sandbox"] = append(want["sandbox"], c.name+":"+c.sandbox)
		}
	}
	// The end: the last message each reader returns.
	msgs = append(msgs, kafka.Message{Value: []byte("end"), Headers: tagged14("pr-42")}, kafka.Message{Value: []byte("end")})
	want["sandbox"] = append(want["sandbox"], "end:pr-42")
	want["baseline"] = append(want["baseline"], "end:")
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	table.MarkSynced(time.Now()) // after the messages' times: no reader waits

	for _, role := range []string{"baseline", "sandbox"} {
		t.Run(role, func(t *testing.T) {
			var opts []ReaderOption
			if role == "sandbox" {
				opts = append(opts, AsSandbox("pr-42"))
			}
			r, err := NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, "orders", opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got []string
			for len(got) < len(want[role]) {
				out, msg, err := r.FetchMessage(ctx)
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				id := ""
				if s, ok := propagation.FromContext(out); ok {
					id = s.ID
				}
				got = append(got, string(msg.Value)+":"+id)
				if string(msg.Value) == "end" {
					break
				}
			}
			if !slices.Equal(got, want[role]) {
				t.Errorf("returned (value:sandbox)\n got %v\nwant %v", got, want[role])
			}
		})
	}
}

// TestA14PendingBeforeFastPath: a tagged message that the table has not
// synced up to is kept (ErrRoutesBehind); the untagged message behind it
// must not overtake it on the fast path. Each fetch reports the kept
// message again until the table syncs, and only then is the next one
// returned: for a table never loaded, and for one whose source has failed
// since its last load (synced means synced).
func TestA14PendingBeforeFastPath(t *testing.T) {
	at := time.Now().Add(-time.Minute)
	sbs := []routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: at.Add(-time.Hour)}}},
		{ID: "pr-7"},
	}
	for _, state := range []string{"never-loaded", "failing-since"} {
		for _, role := range []string{"", "pr-42"} {
			t.Run(state+"/"+role, func(t *testing.T) {
				// A table with a source (as deployed): never loaded, or
				// loaded once and failing since, before the messages.
				table := routes.New()
				if state == "failing-since" {
					table.MarkSynced(at.Add(-time.Hour))
				}
				table.MarkFailed(at.Add(-30*time.Minute), errors.New("source down"))
				if err := table.Update(sbs); err != nil {
					t.Fatal(err)
				}
				var opts []ReaderOption
				if role != "" {
					opts = append(opts, AsSandbox(role))
				}
				opts = append(opts, WithRouteWait(time.Millisecond))
				r := bareReader(t, table, "orders", opts...)
				tag := role
				if tag == "" {
					tag = "pr-7" // the baseline's, with its sandbox
				}
				stream := []kafka.Message{
					{Topic: "t", Offset: 0, Time: at},
					{Topic: "t", Offset: 1, Time: at, Headers: tagged14(tag)},
					{Topic: "t", Offset: 2, Time: at},
					{Topic: "t", Offset: 3, Time: at, Headers: tagged14(tag)},
				}
				next := 0
				src := sourceFunc(func(context.Context) (kafka.Message, error) {
					if next == len(stream) {
						return kafka.Message{}, io.EOF
					}
					next++
					return stream[next-1], nil
				})
				ctx := context.Background()
				fetch := func() (int64, string, error) {
					var msg kafka.Message
					out, err := r.fetch(ctx, src, &msg)
					id := ""
					if s, ok := propagation.FromContext(out); ok {
						id = s.ID
					}
					return msg.Offset, id, err
				}
				if role == "" {
					if off, id, err := fetch(); err != nil || off != 0 || id != "" {
						t.Fatalf("first fetch: offset %d sandbox %q, %v; want 0, production", off, id, err)
					}
				}
				for i := range 3 {
					off, id, err := fetch()
					if !errors.Is(err, ErrRoutesBehind) {
						t.Fatalf("fetch %d with the table behind: offset %d sandbox %q, %v; want ErrRoutesBehind", i, off, id, err)
					}
				}
				if d := r.Counts().Delivered; d != count14(role == "") {
					t.Fatalf("Delivered = %d while the table is behind; want %d", d, count14(role == ""))
				}
				table.MarkSynced(time.Now())
				off, id, err := fetch()
				if err != nil || off != 1 || id != tag {
					t.Fatalf("after the sync: offset %d sandbox %q, %v; want 1 with %s", off, id, err, tag)
				}
				if role == "" {
					if off, id, err := fetch(); err != nil || off != 2 || id != "" {
						t.Fatalf("then: offset %d sandbox %q, %v; want 2, production", off, id, err)
					}
				} else if off, id, err := fetch(); err != nil || off != 3 || id != tag {
					t.Fatalf("then: offset %d sandbox %q, %v; want 3 with %s (2, untagged, skipped)", off, id, err, tag)
				}
			})
		}
	}
}

// panicHandler is a slog handler that panics on every record: a user's
// logger (an audit sink) that crashes.
type panicHandler struct{}

func (panicHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (panicHandler) Handle(context.Context, slog.Record) error { panic("audit sink crashed") }
func (h panicHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h panicHandler) WithGroup(string) slog.Handler           { return h }

// TestA14PanicReleasesLock: a panic while fetch holds the lock (a logger
// that crashes on a tagged, orphaned or unreadable message's record; the
// message source itself) must leave the lock free, so that the caller
// that recovers (a worker pool, a server's recover) can fetch again. A
// held lock turns every later fetch into a wait for the caller's
// deadline: the partition is wedged.
func TestA14PanicReleasesLock(t *testing.T) {
	at := time.Now().Add(-time.Minute)
	cases := []struct {
		name    string
		headers []kafka.Header
		srcPan  bool // the source panics on the first call instead
	}{
		{name: "logger/tagged", headers: tagged14("pr-7")},
		{name: "logger/orphan", headers: tagged14("pr-999")},
		{name: "logger/unreadable", headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("BAD")}}},
		{name: "source", srcPan: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bareReader(t, routes14(t), "orders", WithLogger(slog.New(panicHandler{})))
			stream := []kafka.Message{
				{Topic: "t", Offset: 0, Time: at, Headers: c.headers},
				{Topic: "t", Offset: 1, Time: at},
			}
			next := 0
			src := sourceFunc(func(context.Context) (kafka.Message, error) {
				if c.srcPan && next == 0 {
					next++
					panic("source crashed")
				}
				next++
				return stream[next-1], nil
			})
			func() {
				defer func() {
					if recover() == nil {
						t.Fatal("the first fetch did not panic")
					}
				}()
				var msg kafka.Message
				r.fetch(context.Background(), src, &msg)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var msg kafka.Message
			if _, err := r.fetch(ctx, src, &msg); err != nil {
				t.Fatalf("fetch after a recovered panic: %v (the fetch lock was left held)", err)
			}
			if msg.Offset != 1 {
				t.Errorf("fetch after a recovered panic returned offset %d; want 1", msg.Offset)
			}
		})
	}
}

// TestA14NilContextDoesNotWedge: FetchMessage(nil), a caller's mistake,
// panics inside kafka-go's FetchMessage (select on ctx.Done()). A caller
// that recovers and fetches again with a proper context must get the next
// message, not wait forever on a fetch lock the panic left held. On the
// embedded broker, through the public API.
func TestA14NilContextDoesNotWedge(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := kafkatest.Writer(t, addrs, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("production")}); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), routes14(t), "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	panicked := func() (p any) {
		defer func() { p = recover() }()
		//lint:ignore SA1012 the mistake under test
		r.FetchMessage(nil) //nolint:staticcheck // the mistake under test
		return nil
	}()
	t.Logf("FetchMessage(nil) panicked: %v", panicked)
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	_, msg, err := r.FetchMessage(fctx)
	if err != nil {
		t.Fatalf("FetchMessage after a recovered FetchMessage(nil): %v; want the message (the fetch lock was left held)", err)
	}
	if string(msg.Value) != "production" {
		t.Errorf("got %q; want production", msg.Value)
	}
}

// TestA14ConcurrentFetchers: several goroutines fetch from one reader
// (FetchMessage is safe for concurrent use) over a stream that mixes
// untagged messages (fast path) with tagged, orphaned and unreadable ones
// (slow path). Every message is decided once: the returned offsets are
// exactly those the reader owns, each once, and the counts add up; a
// sandbox reader returns no untagged message. Run with -race.
func TestA14ConcurrentFetchers(t *testing.T) {
	at := time.Now().Add(-time.Minute)
	kinds := []struct {
		headers           []kafka.Header
		baseline, sandbox bool // returned
	}{
		{nil, true, false},
		{[]kafka.Header{}, true, false},
		{tagged14("pr-42"), false, true},
		{nil, true, false},
		{tagged14("pr-7"), true, false},
		{tagged14("pr-999"), false, false},
		{[]kafka.Header{{Key: "traceparent", Value: []byte("x")}}, true, false},
		{[]kafka.Header{{Key: "sandbox-id", Value: []byte("BAD")}}, false, false},
	}
	const n = 4000
	stream := make([]kafka.Message, n)
	for i := range stream {
		stream[i] = kafka.Message{Topic: "t", Partition: i % 3, Offset: int64(i), Time: at, Headers: kinds[i%len(kinds)].headers}
	}
	for _, role := range []string{"baseline", "sandbox"} {
		t.Run(role, func(t *testing.T) {
			var opts []ReaderOption
			if role == "sandbox" {
				opts = append(opts, AsSandbox("pr-42"))
			}
			r := bareReader(t, routes14(t), "orders", opts...)
			var mu sync.Mutex
			next := 0
			src := sourceFunc(func(context.Context) (kafka.Message, error) {
				mu.Lock()
				defer mu.Unlock()
				if next == n {
					return kafka.Message{}, io.EOF
				}
				next++
				return stream[next-1], nil
			})
			var (
				wg   sync.WaitGroup
				gotM sync.Mutex
				got  = map[int64]int{}
			)
			for range 4 {
				wg.Go(func() {
					for {
						var msg kafka.Message
						out, err := r.fetch(context.Background(), src, &msg)
						if errors.Is(err, io.EOF) {
							return
						}
						if err != nil {
							t.Error(err)
							return
						}
						k := kinds[msg.Offset%int64(len(kinds))]
						_, tagged := propagation.FromContext(out)
						if tagged != (len(k.headers) != 0 && k.headers[0].Key != "traceparent") {
							t.Errorf("offset %d returned with sandbox in context = %v", msg.Offset, tagged)
						}
						gotM.Lock()
						got[msg.Offset]++
						gotM.Unlock()
					}
				})
			}
			wg.Wait()
			want := 0
			for i := range n {
				k := kinds[i%len(kinds)]
				owned := k.baseline
				if role == "sandbox" {
					owned = k.sandbox
				}
				if owned {
					want++
					if got[int64(i)] != 1 {
						t.Errorf("offset %d returned %d times; want once", i, got[int64(i)])
					}
				} else if got[int64(i)] != 0 {
					t.Errorf("offset %d (not this reader's) returned %d times", i, got[int64(i)])
				}
			}
			c := r.Counts()
			if c.Delivered != int64(want) || c.Delivered+c.Skipped != n {
				t.Errorf("counts %+v; want %d delivered of %d", c, want, n)
			}
		})
	}
}

// TestA14CloseRacesFetch: Close while callers are inside FetchMessage on
// the embedded broker (some on the fast path over untagged messages, some
// waiting for the fetch lock) ends every call (io.EOF, or an error), and
// leaves no goroutine behind (goleak, TestMain).
func TestA14CloseRacesFetch(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	w := kafkatest.Writer(t, addrs, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var msgs []kafka.Message
	for i := range 300 {
		m := kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}
		if i%10 == 3 {
			m.Headers = tagged14("pr-42")
		}
		msgs = append(msgs, m)
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), routes14(t), "orders")
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the first message, so that Close meets a reader in flight.
	if _, _, err := r.FetchMessage(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				if _, _, err := r.FetchMessage(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	if err := r.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("FetchMessage callers still running after Close")
	}
	close(errs)
	for err := range errs {
		if ctx.Err() != nil {
			t.Errorf("a caller ended by the test's deadline, not by Close: %v", err)
		}
	}
}

// TestA14CommitRacingCloseReturns: a worker that commits what it processed
// while another goroutine closes the reader (a shutdown) must get an
// answer, an error at worst, not wait until its context ends: a worker
// committing with context.Background() would never return. Seen with
// kafka-go's CommitMessages: it hands the request to the group reader's
// commit loop, which Close stops without answering it; kafkamw's commit
// holds commitMu meanwhile, so every other commit waits too. Not the fast
// path's doing (main does the same). A few rounds, each a reader whose
// worker commits without pause while Close runs.
func TestA14CommitRacingCloseReturns(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	w := kafkatest.Writer(t, addrs, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	for round := range 8 {
		r, err := NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), routes14(t), "orders")
		if err != nil {
			t.Fatal(err)
		}
		_, msg, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Commits with a long deadline (standing in for none), as
		// several workers make them, while Close runs.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		var wg sync.WaitGroup
		first := make(chan struct{})
		var once sync.Once
		for range 4 {
			wg.Go(func() {
				for {
					err := r.CommitMessages(cctx, msg)
					once.Do(func() { close(first) })
					if err != nil {
						if cctx.Err() != nil {
							t.Errorf("round %d: CommitMessages racing Close waited for its context's end: %v", round, err)
						}
						return
					}
				}
			})
		}
		<-first
		if err := r.Close(); err != nil {
			t.Logf("Close: %v", err)
		}
		wg.Wait()
		ccancel()
		if t.Failed() {
			return
		}
	}
}

// TestA14SplitSandboxNeverUntagged: a split-mode sandbox reader reads its
// sandbox's topic, where an outsider (or a misconfigured producer) can
// write untagged messages directly, with no header, with foreign headers
// only, or with only the split's own source header: none of them is the
// sandbox's, and none may be returned (with or without the sandbox in the
// context). Only its own tagged message is.
func TestA14SplitSandboxNeverUntagged(t *testing.T) {
	at := time.Now().Add(-time.Minute)
	r := bareReader(t, routes14(t), "orders", AsSandbox("pr-42"), WithSplit(Split{}))
	r.marks = &marks{next: map[int]*int64{}, source: "t"}
	src := []kafka.Header{{Key: HeaderSplitSource, Value: []byte("0/5")}}
	stream := []kafka.Message{
		{Topic: "s", Offset: 0, Time: at},
		{Topic: "s", Offset: 1, Time: at, Headers: []kafka.Header{}},
		{Topic: "s", Offset: 2, Time: at, Headers: []kafka.Header{{Key: "traceparent", Value: []byte("x")}}},
		{Topic: "s", Offset: 3, Time: at, Headers: src},
		{Topic: "s", Offset: 4, Time: at, Headers: tagged14("pr-7")},
		{Topic: "s", Offset: 5, Time: at, Headers: append(tagged14("pr-42"), kafka.Header{Key: HeaderSplitSource, Value: []byte("0/6")})},
	}
	next := 0
	source := sourceFunc(func(context.Context) (kafka.Message, error) {
		if next == len(stream) {
			return kafka.Message{}, io.EOF
		}
		next++
		return stream[next-1], nil
	})
	var msg kafka.Message
	out, err := r.fetch(context.Background(), source, &msg)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := propagation.FromContext(out)
	if msg.Offset != 5 || s.ID != "pr-42" {
		t.Errorf("split-mode sandbox reader returned offset %d with sandbox %q; want 5 with pr-42", msg.Offset, s.ID)
	}
	if c := r.Counts(); c.Delivered != 1 || c.Skipped != 5 {
		t.Errorf("counts %+v; want 1 delivered, 5 skipped", c)
	}
}
