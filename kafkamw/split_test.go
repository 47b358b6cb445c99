package kafkamw_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// splitFixture is a topic, a group and a static table in which sandbox A
// overrides the service (since an hour ago) and B does not.
type splitFixture struct {
	t      *testing.T
	addrs  []string
	topic  string
	group  string
	table  *routes.Table
	w      *kafkamw.Writer
	tags   map[string]string
	times  map[string]time.Time
	aTopic string // A's topic in the split mode
}

func newSplitFixture(t *testing.T, partitions int) *splitFixture {
	t.Helper()
	return newSplitFixtureAt(t, kafkatest.Start(t), partitions)
}

// newSplitFixtureAt is newSplitFixture on the broker at addrs.
func newSplitFixtureAt(t *testing.T, addrs []string, partitions int) *splitFixture {
	t.Helper()
	topic := kafkatest.Topic(t, addrs, partitions)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: sbA.ID, Actor: sbA.Actor, Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: sbB.ID, Actor: sbB.Actor},
	})
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("orders")
	name, err := kafkamw.SplitTopic(topic, group, sbA.ID)
	if err != nil {
		t.Fatal(err)
	}
	return &splitFixture{t: t, addrs: addrs, topic: topic, group: group, table: table,
		w: newWriter(t, kafkatest.Writer(t, addrs, topic)), tags: map[string]string{}, times: map[string]time.Time{}, aTopic: name}
}

// reader builds a reader of the fixture's group; split adds WithSplit.
// Its skip-commit interval is 20ms unless opts set another: the
// default came after opts and overrode theirs, so that a test's
// "nothing committed" reader (an hour) committed every 20ms.
func (f *splitFixture) reader(split bool, opts ...kafkamw.ReaderOption) *kafkamw.Reader {
	f.t.Helper()
	opts = append([]kafkamw.ReaderOption{kafkamw.WithSkipCommitInterval(20 * time.Millisecond)}, opts...)
	if split {
		opts = append(opts, kafkamw.WithSplit(kafkamw.Split{}))
	}
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(f.addrs, f.topic, f.group), f.table, service, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *splitFixture) produce(prefix string, n int) {
	produceMixed(f.t, f.w, prefix, n, f.tags, f.times)
}

// ownerA is the owner of each message: A's reader for A's, the baseline
// for the rest.
func (f *splitFixture) owner(v string) string {
	if f.tags[v] == sbA.ID {
		return "sandbox"
	}
	return "baseline"
}

// countA is the number of A's messages produced.
func (f *splitFixture) countA() int {
	n := 0
	for _, id := range f.tags {
		if id == sbA.ID {
			n++
		}
	}
	return n
}

// ends returns the number of records in topic (the sum of its end
// offsets).
func ends(t *testing.T, addrs []string, topic string) int64 {
	t.Helper()
	var n int64
	for _, lag := range groupLag(t, addrs, topic, kafkatest.UniqueName("nobody")) {
		n += lag
	}
	return n
}

// topicsOf lists the topics of the broker.
func topicsOf(t *testing.T, addrs []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	md, err := (&kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}).Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tp := range md.Topics {
		out = append(out, tp.Name)
	}
	return out
}

// TestSplitLateReaderAndReap: in the split mode the baseline reader
// forwards A's messages to A's topic before A's reader exists; they wait
// there for it. Every message is processed once, by its owner; A's reader
// fetches A's messages only; both groups commit everything. Once A is
// gone from the table, ReapSplitTopics deletes A's topic, and only it.
func TestSplitLateReaderAndReap(t *testing.T) {
	f := newSplitFixture(t, 3)
	f.produce("m", 60)
	base := startConsumer(t, "baseline", f.reader(true), 5)
	waitFor(t, 20*time.Second, "the baseline to decide the backlog", func() bool { return base.seen() == 60 })
	// The copies are written with the baseline's next commit.
	waitFor(t, 10*time.Second, "A's 20 messages in A's topic before A's reader starts", func() bool { return ends(t, f.addrs, f.aTopic) == 20 })

	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 3)
	f.produce("n", 30)
	waitFor(t, 20*time.Second, "both readers to decide everything", func() bool {
		return base.seen() == 90 && a.r.Counts().Delivered == int64(f.countA())
	})
	gotBase, gotA := base.stop(), a.stop()
	checkOwners(t, f.tags, f.owner, gotBase, gotA)
	if got, want := a.r.Stats().Messages, int64(f.countA()); got != want {
		t.Errorf("A's reader fetched %d messages from the broker, want its own %d", got, want)
	}
	if c := base.r.Counts(); c.Forwarded != int64(f.countA()) {
		t.Errorf("baseline counts %+v: want %d forwarded", c, f.countA())
	}
	for topic, group := range map[string]string{f.topic: f.group, f.aTopic: kafkamw.SandboxGroup(f.group, sbA.ID)} {
		for p, lag := range groupLag(t, f.addrs, topic, group) {
			if lag != 0 {
				t.Errorf("%s/%d: group %s lags by %d", topic, p, group, lag)
			}
		}
	}

	// The reaper.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := kafkatest.ReaderConfig(f.addrs, f.topic, f.group)
	other, err := kafkamw.SplitTopic(f.topic, "other-group", sbA.ID) // another service's: not ours
	if err != nil {
		t.Fatal(err)
	}
	if err := kafkatest.CreateTopic(ctx, f.addrs, other, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := kafkamw.ReapSplitTopics(ctx, cfg, routes.New()); !errors.Is(err, kafkamw.ErrRoutesBehind) {
		t.Errorf("reap with a table that never loaded: %v, want ErrRoutesBehind", err)
	}
	if got, err := kafkamw.ReapSplitTopics(ctx, cfg, f.table); err != nil || len(got) != 0 {
		t.Errorf("reap with A alive: deleted %v, %v; want nothing", got, err)
	}
	gone, err := routes.NewStatic([]routes.Sandbox{{ID: sbB.ID}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := kafkamw.ReapSplitTopics(ctx, cfg, gone)
	if err != nil || !slices.Equal(got, []string{f.aTopic}) {
		t.Fatalf("reap after A's removal: %v, %v; want [%s]", got, err, f.aTopic)
	}
	waitFor(t, 10*time.Second, "A's topic to be deleted", func() bool { return !slices.Contains(topicsOf(t, f.addrs), f.aTopic) })
	if ts := topicsOf(t, f.addrs); !slices.Contains(ts, other) || !slices.Contains(ts, f.topic) {
		t.Errorf("reap deleted more than A's topic: %v", ts)
	}
}

// TestSplitCrashBetweenForwardAndCommit: a baseline reader that forwarded
// A's messages and crashed before committing them leaves A's topic with
// copies; its successor forwards them again. The sandbox topic holds the
// duplicates (allowed), nothing is lost, and A's reader, reading both
// copies in one run, processes each message once.
func TestSplitCrashBetweenForwardAndCommit(t *testing.T) {
	f := newSplitFixture(t, 2)
	f.produce("m", 30)
	r1 := f.reader(true, kafkamw.WithSkipCommitInterval(time.Hour)) // nothing committed before the crash
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for c := r1.Counts(); c.Delivered < 20 || c.Forwarded < 10; c = r1.Counts() { // never committed
		fctx, fcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, _, err := r1.FetchMessage(fctx) // A's last messages may follow the last one returned
		fcancel()
		if err != nil && ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	if err := kafkamw.FlushForwards(r1); err != nil { // forwarded and acknowledged, not committed
		t.Fatal(err)
	}
	if c := r1.Counts(); c.Forwarded != 10 {
		t.Fatalf("before the crash: counts %+v, want A's 10 forwarded", c)
	}
	kafkamw.Crash(r1)

	base := startConsumer(t, "baseline", f.reader(true), 5)
	waitFor(t, 20*time.Second, "the successor to decide the topic", func() bool { return base.seen() == 30 })
	waitFor(t, 10*time.Second, "A's topic to hold each of A's 10 twice", func() bool { return ends(t, f.addrs, f.aTopic) == 20 })
	a := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 3)
	waitFor(t, 20*time.Second, "A's reader to decide both copies", func() bool { return a.seen() == 20 })
	checkOwners(t, f.tags, f.owner, base.stop(), a.stop())
	if c := a.r.Counts(); c.Delivered != 10 || c.Duplicates != 10 {
		t.Errorf("A's reader counts %+v: want 10 delivered, 10 duplicates skipped", c)
	}
}

// TestSplitModeSwitch: a rolling deploy between the modes, the baseline
// reader in the split mode throughout. Filter to split (the safe order:
// baseline readers first, then the sandbox's): A's filter-mode reader
// processes a first batch from the source topic while the baseline
// forwards copies; A's split-mode reader that replaces it skips the
// copies its group processed (the group's commits on the source topic)
// and processes the rest, each message once. Split back to filter: A's
// filter-mode reader resumes from its group's commits on the source topic
// and processes again what the split-mode reader processed: duplicates,
// no loss.
func TestSplitModeSwitch(t *testing.T) {
	f := newSplitFixture(t, 2)
	base := startConsumer(t, "baseline", f.reader(true), 5)
	af := startConsumer(t, "sandbox", f.reader(false, kafkamw.AsSandbox(sbA.ID)), 1)
	f.produce("m", 30)
	waitFor(t, 20*time.Second, "the filter-mode reader and the baseline", func() bool {
		return af.r.Counts().Delivered == 10 && base.seen() == 30
	})
	gotF := af.stop()

	as := startConsumer(t, "sandbox", f.reader(true, kafkamw.AsSandbox(sbA.ID)), 1)
	f.produce("n", 30)
	waitFor(t, 20*time.Second, "the split-mode reader and the baseline", func() bool {
		return as.r.Counts().Delivered == 10 && as.seen() == 20 && base.seen() == 60
	})
	gotS := as.stop()
	if c := as.r.Counts(); c.Duplicates != 10 {
		t.Errorf("split-mode reader counts %+v: want the 10 its group processed in the filter mode skipped", c)
	}
	checkOwners(t, f.tags, f.owner, base.stop(), gotF, gotS)

	// And back: duplicates, no loss.
	af2 := startConsumer(t, "sandbox", f.reader(false, kafkamw.AsSandbox(sbA.ID)), 1)
	waitFor(t, 20*time.Second, "the filter-mode reader again", func() bool { return af2.r.Counts().Delivered == int64(len(gotS)) })
	gotF2 := af2.stop()
	again := map[string]bool{}
	for _, p := range gotF2 {
		again[p.value] = true
	}
	for _, p := range gotS {
		if !again[p.value] {
			t.Errorf("%s, processed in the split mode, not again after the switch back: the window is %v", p.value, again)
		}
	}
	if len(gotF2) != len(gotS) {
		t.Errorf("after the switch back, %d processed again, want the split mode's %d", len(gotF2), len(gotS))
	}
}

// TestSplitConfig: the split mode needs one Topic and a name Kafka
// accepts for every sandbox's topic; a sandbox whose topic cannot be
// named fails closed.
func TestSplitConfig(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	split := kafkamw.WithSplit(kafkamw.Split{})
	for name, tc := range map[string]struct {
		cfg  kafka.ReaderConfig
		opts []kafkamw.ReaderOption
	}{
		"group topics":     {kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, GroupID: "g", GroupTopics: []string{"a", "b"}}, []kafkamw.ReaderOption{split}},
		"group characters": {kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, GroupID: "g/1", Topic: "t"}, []kafkamw.ReaderOption{split}},
		"too long":         {kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, GroupID: "g", Topic: strings.Repeat("t", 200)}, []kafkamw.ReaderOption{split, kafkamw.AsSandbox(strings.Repeat("a", 60))}},
		"negative":         {kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, GroupID: "g", Topic: "t"}, []kafkamw.ReaderOption{kafkamw.WithSplit(kafkamw.Split{Partitions: -1})}},
	} {
		if r, err := kafkamw.NewReader(tc.cfg, table, service, tc.opts...); !errors.Is(err, kafkamw.ErrConfig) {
			if r != nil {
				r.Close()
			}
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if _, err := kafkamw.SplitTopic("t", "g", "Not_An_ID"); !errors.Is(err, kafkamw.ErrConfig) {
		t.Errorf("SplitTopic of an invalid ID: %v", err)
	}
	if got, err := kafkamw.SplitTopic("orders", "shop", "pr-1"); err != nil || got != "orders.shop.sandbox.pr-1" {
		t.Errorf("SplitTopic = %q, %v", got, err)
	}
}

// TestSplitUnforwardable: a sandbox that overrides the service but whose
// topic name would be too long for Kafka cannot be split. Its message is
// neither processed by the baseline nor held: skipped, counted,
// dead-lettered and committed, and production behind it flows.
func TestSplitUnforwardable(t *testing.T) {
	addrs := kafkatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := "t" + strings.Repeat("x", 180)
	if err := kafkatest.CreateTopic(ctx, addrs, topic, 1); err != nil {
		t.Fatal(err)
	}
	dlTopic := kafkatest.Topic(t, addrs, 1)
	long := "pr-" + strings.Repeat("a", 57)
	table, err := routes.NewStatic([]routes.Sandbox{{ID: long, Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)}}}})
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	if err := w.WriteMessages(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: long}), kafka.Message{Value: []byte("test")}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("prod")}); err != nil {
		t.Fatal(err)
	}
	var log auditLog
	r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, "g"), table, service,
		kafkamw.WithSplit(kafkamw.Split{}), kafkamw.WithDeadLetter(kafkatest.Writer(t, addrs, dlTopic)), kafkamw.WithLogger(log.logger()))
	if err != nil {
		t.Fatal(err)
	}
	c := startConsumer(t, "baseline", r, 1)
	waitFor(t, 20*time.Second, "production", func() bool { return c.seen() == 2 })
	got := c.stop()
	if len(got) != 1 || got[0].value != "prod" {
		t.Errorf("processed %v, want prod only", got)
	}
	if n := r.Counts(); n.Unforwardable != 1 || n.DeadLettered != 1 || n.Forwarded != 0 {
		t.Errorf("counts %+v: want 1 unforwardable, dead-lettered", n)
	}
	if !strings.Contains(log.text(), "cannot be forwarded in the split mode") {
		t.Errorf("no audit record of the unforwardable message:\n%s", log.text())
	}
	if got := ends(t, addrs, dlTopic); got != 1 {
		t.Errorf("dead-letter topic holds %d, want 1", got)
	}
}

// TestSplitCommitWaitsForCopies: a commit of the baseline reader never
// passes a message whose copy is not written yet: it stops short of it,
// and the reader's next flush (here Close) writes the copy and commits
// what the caller asked for. The broker refuses A's copies until the
// checks are made: the reader writes copies forwardLinger (10 ms) after
// the first is buffered, so on a slow run (the race detector, a loaded
// machine) they would otherwise be written while the test still fetches.
func TestSplitCommitWaitsForCopies(t *testing.T) {
	c, addrs := controlledBroker(t)
	f := newSplitFixtureAt(t, addrs, 1)
	var hold atomic.Bool
	hold.Store(true)
	c.KeepControl()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if !hold.Load() {
			return nil, nil, false
		}
		for _, tp := range kr.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == f.aTopic {
				c.KeepControl() // kfake drops a control function that handles a request otherwise
				return nil, errors.New("A's topic is refused for now"), true
			}
		}
		return nil, nil, false
	})
	f.produce("m", 9) // offsets 0..8: production, A, B, production, A, ...
	r := f.reader(true, kafkamw.WithSkipCommitInterval(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for r.Counts().Delivered < 6 {
		_, m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if lag := groupLag(t, f.addrs, f.topic, f.group)[0]; lag != 8 {
		t.Errorf("lag %d after committing every message returned, want 8: the commit must stop at A's first message (offset 1), whose copy is not written", lag)
	}
	if got := ends(t, f.addrs, f.aTopic); got != 0 {
		t.Errorf("A's topic holds %d before the flush, want 0", got)
	}
	hold.Store(false)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if lag := groupLag(t, f.addrs, f.topic, f.group)[0]; lag != 0 {
		t.Errorf("lag %d after Close, want 0", lag)
	}
	if got := ends(t, f.addrs, f.aTopic); got != 3 || r.Counts().Forwarded != 3 {
		t.Errorf("A's topic holds %d, forwarded %d; want A's 3", got, r.Counts().Forwarded)
	}
}
