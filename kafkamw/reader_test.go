package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

const service = "orders"

var (
	sbA = propagation.Sandbox{ID: "pr-42", Actor: "alice", Origin: "github.com/acme/shop/pull/42"}
	sbB = propagation.Sandbox{ID: "pr-7", Actor: "bob"}
)

// produceMixed writes n messages through a kafkamw.Writer, cycling
// untagged, sandbox A, sandbox B, with values "<prefix>-<i>" and real
// timestamps. It returns the sandbox of each value ("" for untagged) and
// the timestamp the broker keeps (milliseconds). The writes are made one
// by one, each waiting for the broker's acknowledgement, within two
// minutes in all: 20 seconds ran out for 3000 of them under -race on 2
// loaded cores.
func produceMixed(t testing.TB, w *kafkamw.Writer, prefix string, n int, tags map[string]string, times map[string]time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		wctx := ctx
		switch i % 3 {
		case 1:
			wctx = propagation.ContextWithSandbox(ctx, sbA)
			tags[v] = sbA.ID
		case 2:
			wctx = propagation.ContextWithSandbox(ctx, sbB)
			tags[v] = sbB.ID
		default:
			tags[v] = ""
		}
		now := time.Now()
		times[v] = time.UnixMilli(now.UnixMilli())
		if err := w.WriteMessages(wctx, kafka.Message{Key: []byte(v), Value: []byte(v), Time: now}); err != nil {
			t.Fatal(err)
		}
	}
}

// checkOwners asserts that every produced value was processed exactly once,
// by want(value), with its sandbox in the context.
func checkOwners(t *testing.T, tags map[string]string, want func(v string) string, got ...[]processed) {
	t.Helper()
	seen := map[string]processed{}
	for _, ps := range got {
		for _, p := range ps {
			if prev, dup := seen[p.value]; dup {
				t.Errorf("%s processed twice: by %s and by %s", p.value, prev.by, p.by)
				continue
			}
			seen[p.value] = p
		}
	}
	for _, v := range slices.Sorted(maps.Keys(tags)) {
		p, ok := seen[v]
		if !ok {
			t.Errorf("%s (sandbox %q) was never processed; owner %s", v, tags[v], want(v))
			continue
		}
		if p.by != want(v) {
			t.Errorf("%s (sandbox %q) processed by %s, want %s", v, tags[v], p.by, want(v))
		}
		switch id := tags[v]; {
		case id == "" && p.tagged:
			t.Errorf("%s untagged but processed with sandbox %+v", v, p.sandbox)
		case id != "" && (!p.tagged || p.sandbox.ID != id):
			t.Errorf("%s of sandbox %q processed with context sandbox %+v (tagged %v)", v, id, p.sandbox, p.tagged)
		}
	}
	if len(seen) != len(tags) {
		t.Errorf("processed %d distinct messages, produced %d", len(seen), len(tags))
	}
}

// TestMixedStream: untagged messages, messages of sandbox A (which overrides
// the service) and of sandbox B (which does not) are consumed by a baseline
// reader and A's reader. Every message is processed exactly once, by its
// owner, with its sandbox in the context; the skipped ones are committed
// (no lag) and audited.
func TestMixedStream(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 3)
	past := time.Now().Add(-time.Hour)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: sbA.ID, Actor: sbA.Actor, Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: past}}},
		{ID: sbB.ID, Actor: sbB.Actor, Services: map[string]routes.Route{"cart": {Upstream: "10.0.0.2:9090", ActiveFrom: past}}},
	})
	if err != nil {
		t.Fatal(err)
	}

	const n = 300
	tags, times := map[string]string{}, map[string]time.Time{}
	produceMixed(t, newWriter(t, kafkatest.Writer(t, addrs, topic)), "m", n, tags, times)

	var baseLog, sbLog auditLog
	group := kafkatest.UniqueName("orders")
	base, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group),
		table, service, kafkamw.WithLogger(baseLog.logger()),
		kafkamw.WithSkipCommitInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group),
		table, service, kafkamw.AsSandbox(sbA.ID), kafkamw.WithLogger(sbLog.logger()),
		kafkamw.WithSkipCommitInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sb.Config().GroupID, group+".sandbox."+sbA.ID; got != want {
		t.Errorf("sandbox group %q, want %q", got, want)
	}
	// The sandbox side commits every message it processes, so that its
	// remaining lag is the skipped messages only: the periodic flush
	// commits them while it runs. The baseline side commits every 7th;
	// the skipped messages ride on those commits and on Close.
	cb, cs := startConsumer(t, "baseline", base, 7), startConsumer(t, "sandbox", sb, 1)
	waitFor(t, 30*time.Second, "both readers to decide every message", func() bool { return cb.seen() == n && cs.seen() == n })
	zeroLag := func(g string) func() bool {
		return func() bool {
			for _, l := range groupLag(t, addrs, topic, g) {
				if l != 0 {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 10*time.Second, "zero lag of the running sandbox reader", zeroLag(sb.Config().GroupID))
	gotBase, gotSb := cb.stop(), cs.stop()
	if !zeroLag(group)() {
		t.Errorf("baseline group lag after Close: %v", groupLag(t, addrs, topic, group))
	}

	checkOwners(t, tags, func(v string) string {
		if tags[v] == sbA.ID {
			return "sandbox"
		}
		return "baseline"
	}, gotBase, gotSb)
	for _, p := range append(gotBase, gotSb...) {
		if p.tagged && p.sandbox.Actor != map[string]string{sbA.ID: sbA.Actor, sbB.ID: sbB.Actor}[p.sandbox.ID] {
			t.Errorf("%s: actor %q lost", p.value, p.sandbox.Actor)
		}
	}
	if got, want := base.Counts(), (kafkamw.Counts{Delivered: 2 * n / 3, Skipped: n / 3}); got != want {
		t.Errorf("baseline counts %+v, want %+v", got, want)
	}
	if got, want := sb.Counts(), (kafkamw.Counts{Delivered: n / 3, Skipped: 2 * n / 3}); got != want {
		t.Errorf("sandbox counts %+v, want %+v", got, want)
	}
	if got, want := baseLog.decisions(t), map[string]int{key(audit.Fallback, sbB.ID): n / 3, key(audit.Skipped, sbA.ID): n / 3}; !maps.Equal(got, want) {
		t.Errorf("baseline audit %v, want %v", got, want)
	}
	if got, want := sbLog.decisions(t), map[string]int{key(audit.Routed, sbA.ID): n / 3}; !maps.Equal(got, want) {
		t.Errorf("sandbox audit %v, want %v", got, want)
	}
	for _, rec := range baseLog.rec.Records() {
		if rec[audit.KeyDecision] == string(audit.Fallback) && !strings.HasPrefix(rec[audit.KeyReason], audit.ReasonNotOverridden) {
			t.Errorf("fallback record's reason %q does not start with audit.ReasonNotOverridden", rec[audit.KeyReason])
		}
	}
}

// TestSandboxStartOffsets: a new sandbox group starts at the offsets of the
// route's activation time: it neither replays what came before nor misses
// what was produced between activation and its start. A group with
// committed offsets resumes from them.
func TestSandboxStartOffsets(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	actx := propagation.ContextWithSandbox(ctx, sbA)

	write := func(prefix string, n int, at time.Time) {
		for i := range n {
			v := fmt.Sprintf("%s-%d", prefix, i)
			if err := w.WriteMessages(actx, kafka.Message{Key: []byte(v), Value: []byte(v), Time: at.Add(time.Duration(i) * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	activeFrom := base.Add(time.Second)
	write("before", 20, base)      // history: 20 messages of A before activation
	write("after", 30, activeFrom) // produced after activation, before A's reader starts
	table, err := routes.NewStatic([]routes.Sandbox{{ID: sbA.ID, Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: activeFrom}}}})
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.UniqueName("orders")
	open := func() *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, kafkamw.AsSandbox(sbA.ID))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r1 := open()
	var got []string
	for range 10 {
		_, m, err := r1.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Value))
		if err := r1.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if c := r1.Counts(); c.Skipped != 0 {
		t.Errorf("first reader skipped %d messages: it read history before the activation", c.Skipped)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := open() // the group has offsets now: resumes, no seeding
	c2 := startConsumer(t, "sandbox-2", r2, 1)
	waitFor(t, 20*time.Second, "the rest of the activated messages", func() bool { return r2.Counts().Delivered >= 20 })
	for _, p := range c2.stop() {
		got = append(got, p.value)
	}
	slices.Sort(got)
	var want []string
	for i := range 30 {
		want = append(want, fmt.Sprintf("after-%d", i))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("sandbox readers processed %v,\nwant exactly %v", got, want)
	}
	if c := r2.Counts(); c.Skipped != 0 || c.Delivered != 20 {
		t.Errorf("second reader counts %+v: want 20 delivered, nothing replayed", c)
	}

	// A route activated after everything in the topic: the group starts
	// at the end and never sees the history.
	later, err := routes.NewStatic([]routes.Sandbox{{ID: sbA.ID, Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: activeFrom.Add(time.Minute)}}}})
	if err != nil {
		t.Fatal(err)
	}
	r3, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("orders")), later, service, kafkamw.AsSandbox(sbA.ID))
	if err != nil {
		t.Fatal(err)
	}
	write("late", 1, activeFrom.Add(2*time.Minute))
	_, m, err := r3.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Value) != "late-0" || r3.Counts().Skipped != 0 {
		t.Errorf("reader of a future route got %q after skipping %d; want late-0 first", m.Value, r3.Counts().Skipped)
	}
	if err := r3.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNoRoute: a sandbox reader whose sandbox has no route for the service
// reports it instead of guessing a start; one whose table has never loaded
// says that the table is behind, not that there is no route.
func TestNoRoute(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	loaded, err := routes.NewStatic([]routes.Sandbox{{ID: sbA.ID}}) // it exists, without a route
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		table *routes.Table
		want  error
	}{
		{"no route", loaded, kafkamw.ErrNoRoute},
		{"never loaded", routes.New(), kafkamw.ErrRoutesBehind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, "g"), tc.table, service,
				kafkamw.AsSandbox(sbA.ID), kafkamw.WithRouteWait(30*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, _, err := r.FetchMessage(context.Background()); !errors.Is(err, tc.want) {
				t.Fatalf("FetchMessage = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestNewReaderErrors: every misconfiguration is an error wrapping
// ErrConfig that names what is wrong, and no reader is built.
func TestNewReaderErrors(t *testing.T) {
	table := routes.New()
	cfg := kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"}
	codec := propagation.Default()
	other, err := propagation.NewCodec(propagation.WithHeader("x-sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     kafka.ReaderConfig
		table   *routes.Table
		service string
		opts    []kafkamw.ReaderOption
		names   string // in the error's message
	}{
		{"nil table", cfg, nil, service, nil, "route table is nil"},
		{"empty service", cfg, table, "", nil, "service is empty"},
		{"bad service name", cfg, table, " orders", nil, "service"},
		{"bad sandbox ID", cfg, table, service, []kafkamw.ReaderOption{kafkamw.AsSandbox("PR_42")}, "AsSandbox"},
		{"empty sandbox ID", cfg, table, service, []kafkamw.ReaderOption{kafkamw.AsSandbox("")}, "AsSandbox"},
		{"two sandboxes", cfg, table, service, []kafkamw.ReaderOption{kafkamw.AsSandbox("pr-1"), kafkamw.AsSandbox("pr-2")}, "AsSandbox: given twice"},
		{"nil codec", cfg, table, service, []kafkamw.ReaderOption{kafkamw.WithCodec(nil)}, "WithCodec"},
		{"two codecs", cfg, table, service, []kafkamw.ReaderOption{kafkamw.WithCodec(codec), kafkamw.WithCodec(other)}, "WithCodec: given twice"},
		{"no group", kafka.ReaderConfig{Brokers: cfg.Brokers, Topic: "t"}, table, service, nil, "GroupID"},
		{"no topic", kafka.ReaderConfig{Brokers: cfg.Brokers, GroupID: "g"}, table, service, nil, "ReaderConfig"},
		{"bad start offset", kafka.ReaderConfig{Brokers: cfg.Brokers, Topic: "t", GroupID: "g", StartOffset: 42}, table, service, nil, "ReaderConfig"},
		{"dead letter without topic", cfg, table, service, []kafkamw.ReaderOption{kafkamw.WithDeadLetter(&kafka.Writer{})}, "WithDeadLetter"},
		{"zero route wait", cfg, table, service, []kafkamw.ReaderOption{kafkamw.WithRouteWait(0)}, "WithRouteWait"},
		{"zero skip commit interval", cfg, table, service, []kafkamw.ReaderOption{kafkamw.WithSkipCommitInterval(0)}, "WithSkipCommitInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := kafkamw.NewReader(tc.cfg, tc.table, tc.service, tc.opts...)
			if r != nil {
				r.Close()
			}
			if !errors.Is(err, kafkamw.ErrConfig) || r != nil {
				t.Fatalf("NewReader = %v, %v; want nil, ErrConfig", r, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "kafkamw: ") || !strings.Contains(msg, "NewReader") || !strings.Contains(msg, tc.names) {
				t.Errorf("error %q: want it prefixed kafkamw: and naming NewReader and %q", msg, tc.names)
			}
		})
	}
}

// TestNilOptionsSkipped: nil options in the variadic lists are skipped,
// and a nil dead-letter writer or breaker group adds nothing (as in httpmw
// and grpcmw), by both constructors.
func TestNilOptionsSkipped(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"}
	var none kafkamw.Option // nil, of the shared option type
	r, err := kafkamw.NewReader(cfg, table, service, nil, none, kafkamw.AsSandbox("pr-1"), nil, kafkamw.WithDeadLetter(nil))
	if err != nil {
		t.Fatalf("NewReader with nil options: %v", err)
	}
	if got := r.Config().GroupID; got != "g.sandbox.pr-1" {
		t.Errorf("GroupID = %q: the options around the nil ones were not applied", got)
	}
	r.Close()
	w, err := kafkamw.NewWriter(&kafka.Writer{Topic: "t"}, nil, none, kafkamw.WithBreaker(nil))
	if err != nil || w == nil {
		t.Fatalf("NewWriter with nil options = %v, %v", w, err)
	}
}

// TestNewWriterErrors: a nil kafka.Writer and options given impossible
// values are errors wrapping ErrConfig that name the culprit.
func TestNewWriterErrors(t *testing.T) {
	other, err := propagation.NewCodec(propagation.WithHeader("x-sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	kw := &kafka.Writer{Topic: "t"}
	g1, g2 := breaker.NewGroup(breaker.Settings{}), breaker.NewGroup(breaker.Settings{})
	// The same group twice, or with a nil one, is no conflict.
	if w, err := kafkamw.NewWriter(kw, kafkamw.WithBreaker(g1), kafkamw.WithBreaker(nil), kafkamw.WithBreaker(g1)); err != nil || w == nil {
		t.Errorf("NewWriter with one group given twice = %v, %v; want a writer", w, err)
	}
	for _, tc := range []struct {
		name  string
		w     *kafka.Writer
		opts  []kafkamw.WriterOption
		names string
	}{
		{"nil writer", nil, nil, "kafka.Writer is nil"},
		{"nil codec", kw, []kafkamw.WriterOption{kafkamw.WithCodec(nil)}, "WithCodec"},
		{"two codecs", kw, []kafkamw.WriterOption{kafkamw.WithCodec(propagation.Default()), kafkamw.WithCodec(other)}, "WithCodec: given twice"},
		{"two breaker groups", kw, []kafkamw.WriterOption{kafkamw.WithBreaker(g1), kafkamw.WithBreaker(g2)}, "WithBreaker: given twice"},
		{"two breaker groups around a nil one", kw, []kafkamw.WriterOption{kafkamw.WithBreaker(g1), kafkamw.WithBreaker(nil), kafkamw.WithBreaker(g2)}, "WithBreaker: given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := kafkamw.NewWriter(tc.w, tc.opts...)
			if !errors.Is(err, kafkamw.ErrConfig) || w != nil {
				t.Fatalf("NewWriter = %v, %v; want nil, ErrConfig", w, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "kafkamw: ") || !strings.Contains(msg, "NewWriter") || !strings.Contains(msg, tc.names) {
				t.Errorf("error %q: want it prefixed kafkamw: and naming NewWriter and %q", msg, tc.names)
			}
		})
	}
}

func TestSandboxGroup(t *testing.T) {
	if got := kafkamw.SandboxGroup("orders-consumer", "pr-42"); got != "orders-consumer.sandbox.pr-42" {
		t.Fatalf("SandboxGroup = %q", got)
	}
	if kafkamw.SandboxGroup("g", "a") == kafkamw.SandboxGroup("g", "b") || kafkamw.SandboxGroup("g", "a") == "g" {
		t.Fatal("sandbox groups collide")
	}
}
