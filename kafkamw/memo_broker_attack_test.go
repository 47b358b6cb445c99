package kafkamw

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestFetchManySandboxesOnBroker: on the embedded broker, one topic
// carries the interleaved messages of 200 sandboxes (more than the marker
// memo's 128 entries and the context memo's four): three that override
// the service, each with its reader, 147 that do not (the baseline's), 50
// the table does not know, with unreadable and untagged messages between.
// The baseline reader is fetched by three goroutines, each with a caller
// context of its own, one sandbox reader runs [Reader.Run], another is
// fetched by two goroutines. Every message is returned by exactly the
// reader the decision before the shortcuts gives it, once, with its own
// sandbox (ID, actor, origin) and the values of the caller that fetched
// it.
func TestFetchManySandboxesOnBroker(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	var sbs []routes.Sandbox
	for i := range 150 {
		sb := routes.Sandbox{ID: fmt.Sprintf("pr-%d", i)}
		if i < 3 {
			sb.Services = map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-2 * time.Hour)}}
		}
		sbs = append(sbs, sb)
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	type got struct{ value, id, actor, origin string }
	var (
		mu       sync.Mutex
		received = map[string][]got{}
		wg       sync.WaitGroup
	)
	record := func(id, caller string, mctx context.Context, m kafka.Message) {
		s, _ := propagation.FromContext(mctx)
		v, _ := mctx.Value(ctxKey{}).(string)
		if v != caller {
			t.Errorf("reader %q: %s returned to caller %s with caller %q's context", id, m.Value, caller, v)
		}
		mu.Lock()
		received[id] = append(received[id], got{string(m.Value), s.ID, s.Actor, s.Origin})
		mu.Unlock()
	}
	fctx, stop := context.WithCancel(ctx)
	defer func() { stop(); wg.Wait() }()
	readers := map[string]*Reader{}
	refs := map[string]*Reader{}
	callers := map[string]int{"": 3, "pr-1": 2, "pr-2": 1}
	for _, id := range []string{"", "pr-0", "pr-1", "pr-2"} {
		r, err := NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, "orders", side(id))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		readers[id], refs[id] = r, bareReader(t, table, "orders", side(id))
		if id == "pr-0" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx := context.WithValue(fctx, ctxKey{}, "run")
				err := r.Run(rctx, func(hctx context.Context, m kafka.Message) error {
					record(id, "run", hctx, m)
					return nil
				})
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			continue
		}
		for c := range callers[id] {
			caller := fmt.Sprintf("caller-%d", c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx := context.WithValue(fctx, ctxKey{}, caller)
				for {
					mctx, m, err := r.FetchMessage(cctx)
					if err != nil {
						if fctx.Err() == nil {
							t.Errorf("reader %q: %v", id, err)
						}
						return
					}
					record(id, caller, mctx, m)
				}
			}()
		}
	}
	// The sandbox readers set up their groups on the empty topic first
	// (see TestFetchSharedTableDifferential).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		all := true
		for _, r := range readers {
			all = all && r.inner.Load() != nil
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the readers did not start")
		}
	}
	rng := rand.New(rand.NewPCG(14, 200))
	var msgs []kafka.Message
	want := map[string][]got{}
	for i := range 1500 {
		id := fmt.Sprintf("pr-%d", rng.IntN(200))
		if rng.IntN(4) == 0 {
			id = fmt.Sprintf("pr-%d", rng.IntN(5))
		}
		bag := "sandbox.id=" + id + ",sandbox.actor=" + []string{"alice", "bob"}[rng.IntN(2)]
		if rng.IntN(3) == 0 {
			bag += ",sandbox.origin=pr"
		}
		var hs []kafka.Header
		switch rng.IntN(8) {
		case 0, 1, 2:
			hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "baggage", Value: []byte(bag)}}
		case 3:
			hs = []kafka.Header{{Key: "Baggage", Value: []byte(bag)}, {Key: "SANDBOX-ID", Value: []byte(id)}}
		case 4:
			hs = []kafka.Header{{Key: "baggage", Value: []byte(bag)}}
		case 5:
			hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "baggage", Value: []byte("sandbox.id=pr-0")}} // conflicting unless pr-0
		case 6:
			hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "sandbox-id", Value: []byte(id)}} // duplicated, not memoized
		}
		m := kafka.Message{Value: fmt.Appendf(nil, "m-%04d", i), Headers: hs, Time: time.Now().Add(-time.Minute)}
		msgs = append(msgs, m)
		for rid, ref := range refs {
			mm := m
			out, v, err := oldDecide(ref, context.Background(), &mm)
			if err != nil {
				t.Fatal(err)
			}
			if v.fate == fateMine {
				s, _ := propagation.FromContext(out)
				want[rid] = append(want[rid], got{string(m.Value), s.ID, s.Actor, s.Origin})
			}
		}
	}
	w := kafkatest.Writer(t, addrs, topic)
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		all := true
		mu.Lock()
		for id, r := range readers {
			if c := r.Counts(); c.Delivered+c.Skipped != int64(len(msgs)) || len(received[id]) != len(want[id]) {
				all = false
			}
		}
		mu.Unlock()
		if all {
			break
		}
		if time.Now().After(deadline) {
			for id, r := range readers {
				t.Errorf("reader %q: %+v, %d recorded, %d expected", id, r.Counts(), len(received[id]), len(want[id]))
			}
			break
		}
	}
	stop()
	wg.Wait()
	owners := map[string]string{}
	for id := range readers {
		gotAll, wantAll := received[id], want[id]
		for _, g := range gotAll {
			if o, dup := owners[g.value]; dup {
				t.Errorf("%s returned by reader %q and reader %q", g.value, o, id)
			}
			owners[g.value] = id
		}
		slices.SortFunc(gotAll, func(a, b got) int { return strings.Compare(a.value, b.value) })
		slices.SortFunc(wantAll, func(a, b got) int { return strings.Compare(a.value, b.value) })
		if !slices.Equal(gotAll, wantAll) {
			t.Errorf("reader %q: returned %d messages, the decision before the shortcuts gives it %d", id, len(gotAll), len(wantAll))
			for i := range max(len(gotAll), len(wantAll)) {
				var g, w got
				if i < len(gotAll) {
					g = gotAll[i]
				}
				if i < len(wantAll) {
					w = wantAll[i]
				}
				if g != w {
					t.Errorf("  first difference: got %+v, want %+v", g, w)
					break
				}
			}
		}
	}
	t.Logf("returned: baseline %d, pr-0 %d, pr-1 %d, pr-2 %d of %d", len(received[""]), len(received["pr-0"]), len(received["pr-1"]), len(received["pr-2"]), len(msgs))
	if len(owners) == 0 || len(want["pr-0"]) == 0 || len(want["pr-1"]) == 0 {
		t.Fatalf("degenerate stream: %d owned, pr-0 %d, pr-1 %d", len(owners), len(want["pr-0"]), len(want["pr-1"]))
	}
}

// TestFetchHugeMarkersOnBroker: on the embedded broker, a producer tags
// 400 messages with distinct 64 KiB marker headers (unreadable) before
// one untagged message: once the reader has returned the untagged one,
// the large headers are not held by it (the memo of 128 entries kept a
// copy of each it remembered, and the invalid ID read from it: 18 MiB).
func TestFetchHugeMarkersOnBroker(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The answers to this reader's fetches carry record batches of
	// 3 MiB (50 messages of 64 KiB): kafkatest's MaxWait (50ms), which
	// kafka-go makes the read deadline of a fetch's answer, and its 1s
	// for the read of a message are too short for those under -race on
	// 2 loaded cores. Every fetch timed out and was made again (200 to
	// 300 times) until the test's minute ran out (see largeReader).
	cfg := kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g"))
	cfg.MaxWait, cfg.ReadBatchTimeout = 2*time.Second, 10*time.Second
	r, err := NewReader(cfg, table, "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w := kafkatest.Writer(t, addrs, topic)
	const size, n = 64 << 10, 400
	for batch := range n / 50 {
		var msgs []kafka.Message
		for i := range 50 {
			v := fmt.Appendf(nil, "%08d", batch*50+i)
			v = append(v, strings.Repeat("x", size)...)
			msgs = append(msgs, kafka.Message{Value: []byte("tagged"), Headers: []kafka.Header{{Key: "sandbox-id", Value: v}}})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("last")}); err != nil {
		t.Fatal(err)
	}
	func() {
		_, m, err := r.FetchMessage(ctx)
		if err != nil || string(m.Value) != "last" {
			t.Fatalf("FetchMessage = %q, %v; want the untagged message", m.Value, err)
		}
	}()
	if c := r.Counts(); c.Unreadable != n {
		t.Fatalf("counts %+v; want %d unreadable", c, n)
	}
	// What the memo holds, measured by letting the reader's memos go:
	// the heap with them against the heap without.
	with := heapAfterGC()
	r.memo, r.last = memo{}, lastHeaders{}
	without := heapAfterGC()
	runtime.KeepAlive(r)
	t.Logf("the reader's memos held %d KiB", (int64(with)-int64(without))>>10)
	if held := int64(with) - int64(without); held > 4*size {
		t.Errorf("the reader's memos held %d KiB after %d messages with %d KiB marker headers; want at most %d KiB", held>>10, n, size>>10, 4*size>>10)
	}
}
