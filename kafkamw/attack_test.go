package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// attackTopic writes, on a one-partition topic, the messages named in
// order: "" is a production message, anything else a message of that
// sandbox. Values are "m-<i>".
func attackTopic(t *testing.T, addrs []string, kinds ...string) string {
	t.Helper()
	topic := kafkatest.Topic(t, addrs, 1)
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, id := range kinds {
		wctx := ctx
		if id != "" {
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
		}
		if err := w.WriteMessages(wctx, kafka.Message{Key: fmt.Appendf(nil, "m-%d", i), Value: fmt.Appendf(nil, "m-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	return topic
}

// runUntil runs r.Run with h in the background until cond holds, then
// stops it and returns Run's error.
func runUntil(t *testing.T, r *kafkamw.Reader, h kafkamw.Handler, what string, cond func() bool, opts ...kafkamw.RunOption) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	panicked := make(chan any, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				panicked <- p
				done <- nil
			}
		}()
		done <- r.Run(ctx, h, opts...)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		select {
		case p := <-panicked:
			t.Fatalf("Run panicked before %s: %v", what, p)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("timed out waiting for %s: production is wedged", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	return <-done
}

// TestRunSandboxHandlerPanic: a handler that panics on a sandbox's
// message must not take production down with it. Before, the panic left
// Run, the consumer process crashed, restarted on the same uncommitted
// message, and crashed again: one test message stopped production for
// good. Now it is recovered, dead-lettered with the panic as the reason,
// and committed past; the production messages behind it are processed.
func TestRunSandboxHandlerPanic(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "", "pr-nodb", "", "")
	dlq := kafkatest.Topic(t, addrs, 1)
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-nodb"}})
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("g")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlq)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var mu sync.Mutex
	var prod []string
	calls := 0
	h := func(ctx context.Context, m kafka.Message) error {
		if _, ok := propagation.FromContext(ctx); ok {
			mu.Lock()
			calls++
			mu.Unlock()
			var db map[string]int
			db["x"]++ //lint:ignore SA5000 the deliberate bug under test: a handler that panics
		}
		mu.Lock()
		prod = append(prod, string(m.Value))
		mu.Unlock()
		return nil
	}
	err = runUntil(t, r, h, "the production messages behind the panicking one", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(prod) == 3
	}, kafkamw.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if calls != 1 {
		t.Errorf("the panicking sandbox handler was called %d times, want once (a panic is not retried)", calls)
	}
	if c := r.Counts(); c.Failed != 1 || c.DeadLettered != 1 {
		t.Errorf("counts %+v: the panicking message must be given up on and dead-lettered", c)
	}
	dead := readAll(t, addrs, dlq, 1)
	m, ok := dead["m-1"]
	if !ok {
		t.Fatalf("dead-letter topic %v: m-1 missing", dead)
	}
	if reason := header(m.Headers, kafkamw.HeaderDeadLetterReason); len(reason) != 1 || !strings.Contains(reason[0], "panic") {
		t.Errorf("dead-letter reason %q, want it to name the panic", reason)
	}
	if lag := groupLag(t, addrs, topic, group); lag[0] != 0 {
		t.Errorf("lag %d after a clean stop", lag[0])
	}
}

// TestRunProductionHandlerPanic: a production handler's panic is the
// service's own bug and is not hidden: Run panics with it, and the
// message is not committed, so the next consumer receives it again
// (nothing is lost), neither by a new reader after a crash nor by the
// same reader when a supervisor recovers the panic and carries on.
func TestRunProductionHandlerPanic(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "", "")
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("g")
	newReader := func() *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newReader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got any
	func() {
		defer func() { got = recover() }()
		_ = r.Run(ctx, func(ctx context.Context, m kafka.Message) error {
			if string(m.Value) == "m-1" {
				panic("production bug")
			}
			return nil
		})
	}()
	if got != "production bug" {
		t.Fatalf("Run recovered %v; want the production handler's panic to propagate", got)
	}
	// A supervisor that recovers and runs the same reader again gets the
	// message again, rather than going on past it (and committing past it).
	_, m, err := r.FetchMessage(ctx)
	if err != nil || string(m.Value) != "m-1" {
		t.Fatalf("on the same reader after the panic, FetchMessage = %q, %v; want m-1 again", m.Value, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := newReader()
	defer r2.Close()
	_, m, err = r2.FetchMessage(ctx)
	if err != nil || string(m.Value) != "m-1" {
		t.Fatalf("after the crash, FetchMessage = %q, %v; want m-1 again", m.Value, err)
	}
}

// TestOrphanDeadLetterDown: with the dead-letter topic unreachable, an
// orphaned message must not hold the production messages behind it. It
// is skipped, counted, and audited with the failed write and its
// coordinates, so it can still be found in the topic.
func TestOrphanDeadLetterDown(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "pr-99", "", "")
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	dw := downDeadLetter(t, addrs)
	var log auditLog
	group := kafkatest.UniqueName("g")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.WithDeadLetter(dw), kafkamw.WithLogger(log.logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var n atomic.Int32
	err = runUntil(t, r, func(ctx context.Context, m kafka.Message) error { n.Add(1); return nil },
		"the production messages behind an orphan", func() bool { return n.Load() == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Counts(); c.Orphaned != 1 || c.DeadLettered != 0 || c.DeadLetterFailed != 1 {
		t.Errorf("counts %+v: want one orphan whose dead-letter write failed", c)
	}
	rec := log.text()
	if !strings.Contains(rec, "dead-letter write failed") || !strings.Contains(rec, topic+"/0/0") {
		t.Errorf("audit does not record the failed dead-letter write with the message's coordinates:\n%s", rec)
	}
}

// TestRunSandboxGiveUpDeadLetterDown: a sandbox message whose handler
// fails, with the dead-letter topic unreachable, must not hold production:
// Run gives up on the write after its retries, audits and commits past.
func TestRunSandboxGiveUpDeadLetterDown(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "pr-nodb", "", "")
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-nodb"}})
	if err != nil {
		t.Fatal(err)
	}
	dw := downDeadLetter(t, addrs)
	group := kafkatest.UniqueName("g")
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.WithDeadLetter(dw))
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
	}, "the production messages behind a failing sandbox message", func() bool { return n.Load() == 2 },
		kafkamw.WithSandboxErrors(errNoDB), kafkamw.WithBackoff(time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Counts(); c.Failed != 1 || c.DeadLetterFailed != 1 {
		t.Errorf("counts %+v: want one failed sandbox message whose dead-letter write failed", c)
	}
	if lag := groupLag(t, addrs, topic, group); lag[0] != 0 {
		t.Errorf("lag %d after a clean stop", lag[0])
	}
}

// TestRunExclusive: while Run runs, a second Run and FetchMessage are
// refused (a message FetchMessage took would be handled by no one and
// committed past by Run); Close during Run ends Run cleanly.
func TestRunExclusive(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "", "", "")
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var n atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(context.Context, kafka.Message) error { n.Add(1); return nil })
	}()
	waitFor(t, 10*time.Second, "Run to process the messages", func() bool { return n.Load() == 3 })
	if err := r.Run(ctx, func(context.Context, kafka.Message) error { return nil }); !errors.Is(err, kafkamw.ErrConfig) {
		t.Errorf("second Run = %v, want ErrConfig", err)
	}
	fctx, fcancel := context.WithTimeout(ctx, time.Second)
	defer fcancel()
	if _, m, err := r.FetchMessage(fctx); !errors.Is(err, kafkamw.ErrConfig) {
		t.Errorf("FetchMessage during Run = %q, %v; want ErrConfig", m.Value, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// TestRouteSourceHangs: a route source that never answers. Production
// messages ahead of the first tagged message of a partition flow; the
// tagged message is never decided (no reader decides before its table has
// loaded), and, since a partition is committed in order, the production
// messages behind it wait with it: FetchMessage reports ErrRoutesBehind
// for as long as the source hangs. A route source is production
// infrastructure: its outage holds every partition that carries a tagged
// message, which the package documentation says.
func TestRouteSourceHangs(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := attackTopic(t, addrs, "", "pr-1", "")
	hang := routes.SourceFunc(func(ctx context.Context) ([]routes.Sandbox, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	table := syncTable(t, hang, time.Hour)
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, service, kafkamw.WithRouteWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, m, err := r.FetchMessage(ctx); err != nil || string(m.Value) != "m-0" {
		t.Fatalf("FetchMessage = %q, %v; want m-0, ahead of the tagged message", m.Value, err)
	}
	for range 5 {
		if _, m, err := r.FetchMessage(ctx); !errors.Is(err, kafkamw.ErrRoutesBehind) || !strings.Contains(err.Error(), "synced up to never") {
			t.Fatalf("FetchMessage = %q, %v; want ErrRoutesBehind on a table that never loaded", m.Value, err)
		}
	}
	if c := r.Counts(); c.Delivered != 1 || c.Skipped != 0 || c.Waits != 5 {
		t.Errorf("counts %+v: want m-0 delivered, the tagged message undecided, five waits", c)
	}
}

// TestRebalanceLeave: two baseline consumers in one group and a sandbox
// consumer; one baseline consumer leaves in the middle (cancelled and
// closed: the group rebalances onto the other) while skipped messages of
// its partitions are pending commit. No production message, and no
// message the baseline owns with a sandbox context, is lost; no message
// of the sandbox that overrides the service is processed by a baseline
// consumer, nor a production one by the sandbox's; every orphan is
// accounted for; both groups end with no lag.
func TestRebalanceLeave(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 4)
	past := time.Now().Add(-time.Hour)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-own", Services: map[string]routes.Route{service: {Upstream: "h:1", ActiveFrom: past}}},
		{ID: "pr-nodb"},
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"", "pr-own", "", "pr-99", "", "pr-nodb"}
	const n = 600
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tags := map[string]string{}
	want := map[string]int{}
	batch := make([]kafka.Message, 0, n)
	for i := range n {
		v := fmt.Sprintf("m-%03d", i)
		id := kinds[i%len(kinds)]
		tags[v] = id
		want[id]++
		if id == "" {
			batch = append(batch, kafka.Message{Key: []byte(v), Value: []byte(v)})
			continue
		}
		if err := w.WriteMessages(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id}), kafka.Message{Key: []byte(v), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteMessages(ctx, batch...); err != nil {
		t.Fatal(err)
	}

	group := kafkatest.UniqueName("g")
	newReader := func(opts ...kafkamw.ReaderOption) *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, append([]kafkamw.ReaderOption{
			kafkamw.WithSkipCommitInterval(10 * time.Millisecond),
		}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var mu sync.Mutex
	got := map[string][]string{} // value → consumers that processed it
	handler := func(name string) kafkamw.Handler {
		return func(ctx context.Context, m kafka.Message) error {
			time.Sleep(time.Millisecond) // slow enough for the rebalance to land mid-stream
			mu.Lock()
			got[string(m.Value)] = append(got[string(m.Value)], name)
			mu.Unlock()
			return nil
		}
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	run := func(r *kafkamw.Reader, name string) (context.CancelFunc, chan error) {
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx, handler(name)) }()
		return stop, done
	}
	a, b, sb := newReader(), newReader(), newReader(kafkamw.AsSandbox("pr-own"))
	stopA, doneA := run(a, "a")
	stopB, doneB := run(b, "b")
	stopS, doneS := run(sb, "sandbox")
	waitFor(t, 30*time.Second, "both baseline consumers to process messages", func() bool {
		return a.Counts().Delivered > 20 && b.Counts().Delivered > 20
	})
	stopA()
	if err := <-doneA; err != nil {
		t.Errorf("a: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("a: close: %v", err)
	}
	owned := n - want["pr-99"]
	zeroLag := func(g string) bool {
		for _, l := range groupLag(t, addrs, topic, g) {
			if l != 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, 45*time.Second, "every owned message processed and both groups committed", func() bool {
		return count() == owned && zeroLag(group) && zeroLag(kafkamw.SandboxGroup(group, "pr-own"))
	})
	stopB()
	stopS()
	for _, d := range []chan error{doneB, doneS} {
		if err := <-d; err != nil {
			t.Error(err)
		}
	}
	for _, r := range []*kafkamw.Reader{b, sb} {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}
	dups := 0
	for v, id := range tags {
		by := got[v]
		switch {
		case id == "pr-99":
			if len(by) != 0 {
				t.Errorf("orphan %s processed by %v", v, by)
			}
			continue
		case len(by) == 0:
			t.Errorf("%s (sandbox %q) lost", v, id)
			continue
		case len(by) > 1:
			dups++
		}
		for _, c := range by {
			if (id == "pr-own") != (c == "sandbox") {
				t.Errorf("%s (sandbox %q) processed by %s: two owners", v, id, c)
			}
		}
	}
	if o := a.Counts().Orphaned + b.Counts().Orphaned; o < int64(want["pr-99"]) {
		t.Errorf("%d orphans counted, want at least %d", o, want["pr-99"])
	}
	t.Logf("redelivered across the rebalance (at-least-once): %d; a %+v; b %+v", dups, a.Counts(), b.Counts())
}

// TestImplicitActivationGap: a route document without activeFrom, loaded
// by the baseline's table and the sandbox's table at different moments.
// routes.Table stamps a missing activeFrom with its own clock at load, so
// the two readers hold different windows, and a message produced between
// the two loads is skipped by both: the baseline leaves it to the
// sandbox, the sandbox leaves it to the baseline. Nobody processes it and
// nobody counts it as orphaned: lost. The package documentation asks for
// explicit activeFrom times; nothing enforces it. The fix belongs to
// routes (reject, or stamp at publication, a route without activeFrom in a
// source document), so the test runs only with SANDBOXKIT_KNOWN_GAPS=1.
func TestImplicitActivationGap(t *testing.T) {
	if os.Getenv("SANDBOXKIT_KNOWN_GAPS") != "1" {
		t.Skip("known gap in routes (activeFrom stamped per table); run with SANDBOXKIT_KNOWN_GAPS=1")
	}
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	doc := []routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{service: {Upstream: "h:1"}}}}
	// The baseline's table loads the document a minute before the
	// message, the sandbox's a minute after it.
	// After their loads both clocks read the wall clock (a table filled by
	// hand is synced up to its clock's now).
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	baseTable := routes.New(routes.WithClock(clock))
	sbTable := routes.New(routes.WithClock(clock))
	skew.Store(int64(-time.Minute))
	if err := baseTable.Update(doc); err != nil {
		t.Fatal(err)
	}
	skew.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	if err := w.WriteMessages(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-1"}), kafka.Message{Value: []byte("between")}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(time.Minute))
	err := sbTable.Update(doc)
	skew.Store(0)
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("g")
	base, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), baseTable, service)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	sbr, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), sbTable, service, kafkamw.AsSandbox("pr-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer sbr.Close()
	owners := 0
	if _, m, err := base.FetchMessage(ctx); err != nil {
		t.Fatal(err)
	} else if string(m.Value) == "between" {
		owners++
	}
	// The sandbox reader seeds from its own activeFrom, after "between";
	// read from the start of its window with a short wait.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, m, err := sbr.FetchMessage(sctx); err == nil && string(m.Value) == "between" {
		owners++
	}
	if owners != 1 {
		t.Errorf("message produced between the two tables' loads processed by %d readers, want exactly 1 (baseline %+v, sandbox %+v)", owners, base.Counts(), sbr.Counts())
	}
}

// TestFutureTimestampStaleTable: a message stamped a day ahead, read by a
// reader whose route source has been failing since its last good load.
// Deciding it "with the table as it is" would use a document that other
// readers, whose sources are healthy, no longer hold: they could decide
// otherwise (two owners, or none). It waits, as a message of the present
// does, until the table has synced up to the reader's now, and returns
// ErrRoutesBehind meanwhile.
func TestFutureTimestampStaleTable(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var healthy atomic.Bool
	healthy.Store(true)
	doc := []routes.Sandbox{{ID: "pr-1"}}
	src := routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) {
		if !healthy.Load() {
			return nil, errors.New("route source down")
		}
		return doc, nil
	})
	table := syncTable(t, src, 5*time.Millisecond)
	waitFor(t, 5*time.Second, "first sync", func() bool { return !table.SyncedAt().IsZero() })
	healthy.Store(false)
	waitFor(t, 5*time.Second, "a failed sync", func() bool { return table.Err() != nil })
	stuck := table.SyncedAt()
	waitFor(t, 5*time.Second, "the table to fall behind", func() bool { return time.Since(stuck) > 50*time.Millisecond })

	w := kafkatest.Writer(t, addrs, topic)
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("skewed"), Time: time.Now().Add(24 * time.Hour),
		Headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}}}); err != nil {
		t.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")),
		table, service, kafkamw.WithRouteWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, m, err := r.FetchMessage(ctx); !errors.Is(err, kafkamw.ErrRoutesBehind) {
		t.Fatalf("FetchMessage = %q, %v; want ErrRoutesBehind from a table stale since %s", m.Value, err, stuck)
	}
	healthy.Store(true)
	_, m, err := r.FetchMessage(ctx)
	for i := 0; errors.Is(err, kafkamw.ErrRoutesBehind) && i < 100; i++ {
		_, m, err = r.FetchMessage(ctx)
	}
	if err != nil || string(m.Value) != "skewed" {
		t.Fatalf("after the source came back, FetchMessage = %q, %v; want skewed", m.Value, err)
	}
	if c := r.Counts(); c.Future != 1 {
		t.Errorf("counts %+v, want one future message", c)
	}
}

// downDeadLetter returns a dead-letter writer whose every write fails, as
// when the dead-letter topic is unreachable.
func downDeadLetter(t *testing.T, addrs []string) *kafka.Writer {
	t.Helper()
	var down atomic.Bool
	down.Store(true)
	dw := kafkatest.Writer(t, addrs, kafkatest.Topic(t, addrs, 1))
	dw.MaxAttempts = 1
	dw.Transport = failing{dw.Transport, &down}
	return dw
}
