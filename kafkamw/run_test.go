package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// errNoDB stands for dbroute.ErrNoTestDatabase: the handler's database
// router refuses a sandbox without a test database.
var errNoDB = errors.New("test: no test database for the sandbox")

// handled is one message a handler processed.
type handled struct {
	value     string
	partition int
	offset    int64
}

// TestRunNeverWedges: production messages interleaved with messages of an
// unknown sandbox, an expired one, a removed one (produced after its
// removal), one without a test database (its handler fails with a sandbox
// error) and one with its own reader whose handler always fails. The
// baseline consumer is restarted cleanly in the middle. Every production
// message is processed exactly once, in partition order; every sandbox
// message is accounted for exactly once in the dead-letter topic, with
// its reason; nothing is left uncommitted.
func TestRunNeverWedges(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	dlq := kafkatest.Topic(t, addrs, 1)
	past := time.Now().Add(-time.Hour)
	overrides := map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: past}}
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-own", Services: overrides},
		{ID: "pr-nodb"},
		{ID: "pr-exp", Expires: time.Now().Add(-time.Minute)},
		{ID: "pr-gone", Services: overrides},
	})
	if err != nil {
		t.Fatal(err)
	}
	// pr-gone is removed; its messages come late, after the removal.
	if err := table.Update([]routes.Sandbox{{ID: "pr-own", Services: overrides}, {ID: "pr-nodb"}, {ID: "pr-exp", Expires: time.Now().Add(-time.Minute)}}); err != nil {
		t.Fatal(err)
	}

	kinds := []string{"", "", "pr-99", "", "pr-exp", "", "pr-gone", "", "pr-nodb", "", "pr-own", ""}
	const n = 240
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tags := map[string]string{}
	for i := range n {
		v := fmt.Sprintf("m-%03d", i)
		wctx := ctx
		if id := kinds[i%len(kinds)]; id != "" {
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id, Actor: "alice"})
		}
		tags[v] = kinds[i%len(kinds)]
		if err := w.WriteMessages(wctx, kafka.Message{Key: []byte(v), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{}
	for _, id := range tags {
		want[id]++
	}

	dlw := kafkatest.Writer(t, addrs, dlq)
	group := kafkatest.UniqueName("orders")
	var log auditLog
	newReader := func(opts ...kafkamw.ReaderOption) *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, append([]kafkamw.ReaderOption{
			kafkamw.WithDeadLetter(dlw),
			kafkamw.WithLogger(log.logger()), kafkamw.WithSkipCommitInterval(20 * time.Millisecond),
		}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var (
		mu       sync.Mutex
		prod     []handled
		runErrs  []error
		sbCalls  int
		nodbSeen int
	)
	onError := kafkamw.OnError(func(err error) {
		mu.Lock()
		defer mu.Unlock()
		runErrs = append(runErrs, err)
	})
	runOpts := []kafkamw.RunOption{
		kafkamw.WithRetries(3), kafkamw.WithBackoff(time.Millisecond, 4*time.Millisecond), onError,
		kafkamw.WithSandboxErrors(append(kafkamw.DefaultSandboxErrors(), errNoDB)...),
	}
	prodCount := func() int { mu.Lock(); defer mu.Unlock(); return len(prod) }

	// pr-own's consumer: its handler always fails.
	sbReader := newReader(kafkamw.AsSandbox("pr-own"))
	sbCtx, sbStop := context.WithCancel(ctx)
	sbDone := make(chan error, 1)
	go func() {
		sbDone <- sbReader.Run(sbCtx, func(ctx context.Context, m kafka.Message) error {
			mu.Lock()
			sbCalls++
			mu.Unlock()
			return errors.New("a bug in pr-own's consumer")
		}, append(runOpts, kafkamw.WithRetries(2))...)
	}()

	// The baseline consumer, restarted after half the production messages.
	baseHandler := func(stopAfter int, stop context.CancelFunc) kafkamw.Handler {
		return func(ctx context.Context, m kafka.Message) error {
			if s, ok := propagation.FromContext(ctx); ok {
				if s.ID != "pr-nodb" {
					return fmt.Errorf("baseline handed %s of sandbox %s", m.Value, s.ID)
				}
				mu.Lock()
				nodbSeen++
				mu.Unlock()
				return fmt.Errorf("insert: %w", errNoDB)
			}
			mu.Lock()
			prod = append(prod, handled{string(m.Value), m.Partition, m.Offset})
			if len(prod) == stopAfter {
				stop() // a clean shutdown right after processing
			}
			mu.Unlock()
			return nil
		}
	}
	base1 := newReader()
	ctx1, stop1 := context.WithCancel(ctx)
	if err := base1.Run(ctx1, baseHandler(want[""]/2, stop1), runOpts...); err != nil {
		t.Fatalf("first baseline Run: %v", err)
	}
	if err := base1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := prodCount(); got != want[""]/2 {
		t.Fatalf("first baseline consumer processed %d production messages, stopped after %d", got, want[""]/2)
	}
	base2 := newReader()
	ctx2, stop2 := context.WithCancel(ctx)
	done2 := make(chan error, 1)
	go func() { done2 <- base2.Run(ctx2, baseHandler(-1, stop2), runOpts...) }()

	zeroLag := func(g string) bool {
		for _, l := range groupLag(t, addrs, topic, g) {
			if l != 0 {
				return false
			}
		}
		return true
	}
	sum := func(f func(kafkamw.Counts) int64) int64 { return f(base1.Counts()) + f(base2.Counts()) }
	orphans := int64(want["pr-99"] + want["pr-exp"] + want["pr-gone"])
	waitFor(t, 30*time.Second, "production processed and every sandbox message decided", func() bool {
		return prodCount() == want[""] &&
			sum(func(c kafkamw.Counts) int64 { return c.Orphaned }) >= orphans &&
			sum(func(c kafkamw.Counts) int64 { return c.Failed }) >= int64(want["pr-nodb"]) &&
			sbReader.Counts().Failed >= int64(want["pr-own"]) && zeroLag(group) && zeroLag(kafkamw.SandboxGroup(group, "pr-own"))
	})
	stop2()
	sbStop()
	if err := <-done2; err != nil {
		t.Errorf("second baseline Run: %v", err)
	}
	if err := <-sbDone; err != nil {
		t.Errorf("sandbox Run: %v", err)
	}
	for _, r := range []*kafkamw.Reader{base2, sbReader} {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}

	// Production: each once, in the order of its partition.
	seen := map[string]bool{}
	lastOffset := map[int]int64{0: -1, 1: -1}
	for _, h := range prod {
		if seen[h.value] {
			t.Errorf("%s processed twice", h.value)
		}
		seen[h.value] = true
		if tags[h.value] != "" {
			t.Errorf("%s of sandbox %s processed as production", h.value, tags[h.value])
		}
		if h.offset <= lastOffset[h.partition] {
			t.Errorf("%s at %d/%d processed after offset %d: out of partition order", h.value, h.partition, h.offset, lastOffset[h.partition])
		}
		lastOffset[h.partition] = h.offset
	}
	if len(seen) != want[""] {
		t.Errorf("%d production messages processed, want %d", len(seen), want[""])
	}

	// Every sandbox message once in the dead-letter topic, with why.
	reasons := map[string]string{
		"pr-99": "not in the route table", "pr-exp": "not in the route table", "pr-gone": "its route for the service not active",
		"pr-nodb": "sandbox error after 1 attempt(s): insert: " + errNoDB.Error(), "pr-own": "a bug in pr-own's consumer",
	}
	total := n - want[""]
	dead := readAll(t, addrs, dlq, total)
	if lag := groupLag(t, addrs, dlq, kafkatest.UniqueName("none")); lag[0] != int64(total) {
		t.Errorf("dead-letter topic holds %d messages, want %d (each sandbox message once)", lag[0], total)
	}
	for v, id := range tags {
		if id == "" {
			continue
		}
		m, ok := dead[v]
		if !ok {
			t.Errorf("%s of %s not accounted for: not in the dead-letter topic", v, id)
			continue
		}
		if r := header(m.Headers, kafkamw.HeaderDeadLetterReason); len(r) != 1 || !strings.Contains(r[0], reasons[id]) {
			t.Errorf("%s of %s dead-lettered with reason %q, want it to say %q", v, id, r, reasons[id])
		}
		if src := header(m.Headers, kafkamw.HeaderDeadLetterSource); len(src) != 1 || !strings.HasPrefix(src[0], topic+"/") {
			t.Errorf("%s: dead-letter source %q", v, src)
		}
	}
	if got := sum(func(c kafkamw.Counts) int64 { return c.Orphaned }); got != orphans {
		t.Errorf("baseline readers orphaned %d messages, want %d", got, orphans)
	}
	// Two attempts for each of the first three messages of pr-own, then
	// one each: its consumer is broken.
	if got := sbReader.Counts(); got.Failed != int64(want["pr-own"]) || got.Retries != 3 || got.Delivered != int64(want["pr-own"]) {
		t.Errorf("sandbox reader counts %+v: want %d delivered and failed, 3 retried", got, want["pr-own"])
	}
	if sbCalls != want["pr-own"]+3 || nodbSeen != want["pr-nodb"] {
		t.Errorf("handler calls: pr-own %d (want %d: two attempts for the first three, then one), pr-nodb %d (want %d: a sandbox error is not retried)",
			sbCalls, want["pr-own"]+3, nodbSeen, want["pr-nodb"])
	}
	for _, g := range []string{group, kafkamw.SandboxGroup(group, "pr-own")} {
		for p, l := range groupLag(t, addrs, topic, g) {
			if l != 0 {
				t.Errorf("group %s: lag %d on partition %d after a clean stop", g, l, p)
			}
		}
	}
	d := log.decisions(t)
	for _, id := range []string{"pr-99", "pr-exp", "pr-gone", "pr-nodb"} {
		if d[key(audit.Rejected, id)] != want[id] {
			t.Errorf("audit: %d rejected records of %s, want %d (%v)", d[key(audit.Rejected, id)], id, want[id], d)
		}
	}
	if d[key(audit.Rejected, "pr-own")] != want["pr-own"] {
		t.Errorf("audit: %d rejected records of pr-own, want %d", d[key(audit.Rejected, "pr-own")], want["pr-own"])
	}
	if len(runErrs) == 0 {
		t.Error("OnError never called")
	}
	t.Logf("counts: baseline %+v then %+v; pr-own %+v; decisions %v", base1.Counts(), base2.Counts(), sbReader.Counts(), slices.Sorted(maps.Keys(d)))
}
