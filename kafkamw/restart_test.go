package kafkamw_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// decisions is what a baseline consumer did with a topic: the sandbox
// ("" for production) of each message it processed, and its counts.
type decisions struct {
	mu        sync.Mutex
	processed map[string]string
	orphaned  int64
	skipped   int64
}

func (d *decisions) handler(stopAfter int, stop context.CancelFunc) kafkamw.Handler {
	return func(ctx context.Context, m kafka.Message) error {
		s, _ := propagation.FromContext(ctx)
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, dup := d.processed[string(m.Value)]; dup {
			return fmt.Errorf("%s processed twice", m.Value)
		}
		d.processed[string(m.Value)] = s.ID
		if len(d.processed) == stopAfter {
			stop()
		}
		return nil
	}
}

func (d *decisions) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.processed)
}

func (d *decisions) add(c kafkamw.Counts) { d.orphaned += c.Orphaned; d.skipped += c.Skipped }

// TestRestartWaitsForTable: a baseline consumer restarted over a backlog
// with a fresh route table, synced from a healthy, a slow or a failing
// source, decides nothing before the table has loaded, and then decides
// every message as a consumer that never restarted did.
func TestRestartWaitsForTable(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	past := time.Now().Add(-time.Hour)
	doc := func() []routes.Sandbox {
		return []routes.Sandbox{
			{ID: "pr-own", Services: map[string]routes.Route{service: {Upstream: "10.0.0.1:9090", ActiveFrom: past}}},
			{ID: "pr-plain"},
		}
	}
	kinds := []string{"", "pr-own", "", "pr-plain", "", "pr-99"}
	const n = 120
	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i := range n {
		wctx := ctx
		if id := kinds[i%len(kinds)]; id != "" {
			wctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
		}
		v := fmt.Sprintf("m-%03d", i)
		if err := w.WriteMessages(wctx, kafka.Message{Key: []byte(v), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	runOpts := []kafkamw.RunOption{kafkamw.WithBackoff(5*time.Millisecond, 20*time.Millisecond)}
	newReader := func(group string, table *routes.Table, opts ...kafkamw.ReaderOption) *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service,
			append(opts, kafkamw.WithRouteWait(50*time.Millisecond), kafkamw.WithSkipCommitInterval(20*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	owned := 0 // messages the baseline processes: production, pr-plain
	for i := range n {
		if k := kinds[i%len(kinds)]; k == "" || k == "pr-plain" {
			owned++
		}
	}

	// The reference: a consumer that never restarted, with a table that
	// was loaded before it started.
	static, err := routes.NewStatic(doc())
	if err != nil {
		t.Fatal(err)
	}
	ref := &decisions{processed: map[string]string{}}
	rr := newReader(kafkatest.UniqueName("ref"), static)
	rctx, rstop := context.WithCancel(ctx)
	rdone := make(chan error, 1)
	go func() { rdone <- rr.Run(rctx, ref.handler(-1, nil), runOpts...) }()
	waitFor(t, 30*time.Second, "the reference to decide the topic", func() bool {
		return ref.count() == owned && rr.Counts().Orphaned == int64(n/len(kinds))
	})
	rstop()
	if err := <-rdone; err != nil {
		t.Fatal(err)
	}
	rr.Close()
	ref.add(rr.Counts())
	if ref.orphaned != int64(n/len(kinds)) || len(ref.processed) != owned {
		t.Fatalf("reference consumer: %d processed, %d orphaned; want %d, %d", len(ref.processed), ref.orphaned, owned, n/len(kinds))
	}

	for _, md := range modes {
		for _, mode := range []string{"healthy", "slow", "failing"} {
			t.Run(md.name+"/"+mode, func(t *testing.T) {
				testRestart(t, md.split, mode, static, doc, newReader, ref, owned, runOpts)
			})
		}
	}
}

// testRestart is one case of TestRestartWaitsForTable: the source's mode,
// and the readers' (split or not). In the split mode, pr-own's messages
// are forwarded once each across the restart, and its split-mode reader
// processes each once.
func testRestart(t *testing.T, split bool, mode string, static *routes.Table, doc func() []routes.Sandbox,
	newReader func(string, *routes.Table, ...kafkamw.ReaderOption) *kafkamw.Reader, ref *decisions, owned int, runOpts []kafkamw.RunOption) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var opts []kafkamw.ReaderOption
	if split {
		opts = append(opts, kafkamw.WithSplit(kafkamw.Split{}))
	}
	group := kafkatest.UniqueName("orders")
	got := &decisions{processed: map[string]string{}}
	// Before the restart: a third of the backlog, with a loaded table.
	r1 := newReader(group, static, opts...)
	ctx1, stop1 := context.WithCancel(ctx)
	if err := r1.Run(ctx1, got.handler(owned/3, stop1), runOpts...); err != nil {
		t.Fatal(err)
	}
	r1.Close()
	got.add(r1.Counts())
	var first []string // what the first reader processed
	for v := range got.processed {
		first = append(first, v)
	}

	// The restart: a fresh table, and a source that answers
	// only once released (slow), fails until released
	// (failing), or answers at once (healthy).
	release := make(chan struct{})
	var fetches sync.Mutex
	failed := 0
	src := routes.SourceFunc(func(ctx context.Context) ([]routes.Sandbox, error) {
		switch mode {
		case "slow":
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case "failing":
			select {
			case <-release:
			default:
				fetches.Lock()
				failed++
				fetches.Unlock()
				return nil, errors.New("source down")
			}
		}
		return doc(), nil
	})
	table := routes.New()
	sctx, sstop := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		table.Sync(sctx, src, routes.Every(10*time.Millisecond), routes.MaxBackoff(20*time.Millisecond))
	}()
	defer func() { sstop(); <-syncDone }()

	r2 := newReader(group, table, opts...)
	var behind sync.Mutex
	behindErrs := 0
	ctx2, stop2 := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r2.Run(ctx2, got.handler(-1, nil), append(runOpts, kafkamw.OnError(func(err error) {
			if errors.Is(err, kafkamw.ErrRoutesBehind) {
				behind.Lock()
				behindErrs++
				behind.Unlock()
			}
		}))...)
	}()
	if mode != "healthy" {
		// The reader says it is behind, several times over, and
		// has decided nothing meanwhile.
		waitFor(t, 20*time.Second, "the restarted reader to report the table behind", func() bool {
			behind.Lock()
			defer behind.Unlock()
			return behindErrs >= 3
		})
		// Production before the first tagged message needs no
		// table; no tagged message is decided.
		got.mu.Lock()
		for v, id := range got.processed {
			if id != "" && !slices.Contains(first, v) {
				t.Errorf("%s of %s decided before the table loaded", v, id)
			}
		}
		got.mu.Unlock()
		if c := r2.Counts(); c.Skipped+c.Orphaned != 0 {
			t.Errorf("decided before the table loaded: counts %+v", c)
		}
		if mode == "failing" {
			fetches.Lock()
			if failed == 0 {
				t.Error("the failing source was never asked")
			}
			fetches.Unlock()
		}
		close(release)
	}
	waitFor(t, 30*time.Second, "the restarted consumer to decide the rest", func() bool {
		return got.count() == owned && got.orphaned+r2.Counts().Orphaned >= ref.orphaned
	})
	stop2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r2.Close()
	got.add(r2.Counts())
	if !maps.Equal(got.processed, ref.processed) {
		for v, id := range ref.processed {
			if g, ok := got.processed[v]; !ok || g != id {
				t.Errorf("%s: processed as %q (%v), the reference as %q", v, g, ok, id)
			}
		}
		for v, id := range got.processed {
			if _, ok := ref.processed[v]; !ok {
				t.Errorf("%s processed as %q, the reference did not process it", v, id)
			}
		}
	}
	if got.orphaned != ref.orphaned {
		t.Errorf("orphaned %d, the reference %d", got.orphaned, ref.orphaned)
	}
	forwarded := r1.Counts().Forwarded + r2.Counts().Forwarded
	if !split {
		if forwarded != 0 {
			t.Errorf("filter mode forwarded %d", forwarded)
		}
		return
	}
	// pr-own's reader, in the split mode, processes each of
	// pr-own's messages once.
	own := &decisions{processed: map[string]string{}}
	ro := newReader(group, static, append(opts, kafkamw.AsSandbox("pr-own"))...)
	octx, ostop := context.WithCancel(ctx)
	odone := make(chan error, 1)
	go func() { odone <- ro.Run(octx, own.handler(-1, nil), runOpts...) }()
	wantOwn := int(ref.skipped - ref.orphaned) // what the reference left to pr-own's reader
	if wantOwn == 0 {
		t.Fatal("the reference left nothing to pr-own's reader")
	}
	waitFor(t, 30*time.Second, "pr-own's reader", func() bool { return own.count() == wantOwn })
	ostop()
	if err := <-odone; err != nil {
		t.Fatal(err)
	}
	ro.Close()
	if forwarded < int64(wantOwn) || ro.Counts().Delivered != int64(wantOwn) {
		t.Errorf("forwarded %d across the restart, pr-own's reader delivered %d; want %d each (forwarded at least)",
			forwarded, ro.Counts().Delivered, wantOwn)
	}
	for v, id := range own.processed {
		if id != "pr-own" {
			t.Errorf("%s processed by pr-own's reader with sandbox %q", v, id)
		}
	}
}
