package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on the reader's per-message shortcuts (the fetch lock, the
// ownership memo, the remembered headers, the shared context), each
// against what the reader decided without them.

// TestEnterWrappedUncomparableCtx: a context whose type compares with ==
// but holds one that does not (context.WithoutCancel's value, a caller's
// struct embedding a context) makes == panic at run time, whatever
// reflect.Type.Comparable says of its type. Two messages fetched with it
// in a row must be decided, not crash the reader.
func TestEnterWrappedUncomparableCtx(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-1"}, &c)
	odd := uncomparableCtx{Context: context.WithValue(context.Background(), ctxKey{}, "odd"), tags: []string{"x"}}
	type wrapper struct{ context.Context } // comparable type, uncomparable dynamic value inside
	for name, ctx := range map[string]context.Context{
		"WithoutCancel":            context.WithoutCancel(odd),
		"wrapper":                  wrapper{odd},
		"wrapper of WithoutCancel": wrapper{context.WithoutCancel(odd)},
	} {
		t.Run(name, func(t *testing.T) {
			r := bareReader(t, table, "orders")
			for i := range 3 {
				msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: c.list}
				var (
					out context.Context
					v   verdict
				)
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("message %d: decide panicked: %v", i, p)
						}
					}()
					out, v, err = r.decide(ctx, &msg)
				}()
				if err != nil || v.fate != fateMine {
					t.Fatalf("message %d: decide = %v, %v", i, v, err)
				}
				if s, ok := propagation.FromContext(out); !ok || s.ID != "pr-1" || out.Value(ctxKey{}) != "odd" {
					t.Errorf("message %d: context = %v, %v, %v", i, s, ok, out.Value(ctxKey{}))
				}
			}
		})
	}
}

// oldDecide is the decision as the reader made it before the shortcuts
// (e48ded9): the markers read by the codec for every message, [ownerOf]
// asked for every message, a fresh context for every owned one. It counts
// on ref, a reader of the same role.
func oldDecide(ref *Reader, ctx context.Context, msg *kafka.Message) (context.Context, verdict, error) {
	untagged := verdict{fate: ref.role.untagged()}
	if len(msg.Headers) == 0 {
		return ctx, untagged, nil
	}
	var k memoKey
	if st, _ := ref.markers.scanKey(msg.Headers, &k); st != hasMarkers {
		return ctx, untagged, nil
	}
	m, err := ref.cfg.codec.Read(&carrier{list: msg.Headers})
	if err != nil {
		ref.unreadableMessage(ctx, msg, m.Sandbox, err)
		return ctx, verdict{}, nil
	}
	if !m.Found {
		return ctx, untagged, nil
	}
	s := m.Sandbox
	if !ref.role.concerns(s.ID) {
		return ctx, verdict{}, nil
	}
	if err := ref.synced(ctx, msg); err != nil {
		return ctx, verdict{}, err
	}
	who, why := ownerOf(ref.cfg.table, ref.cfg.service, s.ID, msg.Time)
	if who == ownerNone {
		ref.orphaned(ctx, msg, s, why)
		return ctx, verdict{}, nil
	}
	v := verdict{fate: ref.role.fate(who), sandbox: s.ID}
	if v.fate != fateMine {
		return ctx, v, nil
	}
	return ref.gate.Enter(ctx, s), v, nil
}

// diffReader is a warm reader beside the reference that decides the old
// way, for one role.
type diffReader struct {
	r, ref *Reader
}

// check decides msg with both and reports any difference: verdict, error,
// the returned context's sandbox and caller value, the counters.
func (d *diffReader) check(t *testing.T, step string, ctx context.Context, msg kafka.Message) {
	t.Helper()
	ref := msg
	ref.Headers = append([]kafka.Header(nil), msg.Headers...)
	for i := range ref.Headers {
		ref.Headers[i].Value = append([]byte(nil), ref.Headers[i].Value...)
	}
	wantCtx, want, wantErr := oldDecide(d.ref, ctx, &ref)
	gotCtx, got, gotErr := d.r.decide(ctx, &msg)
	if got != want || (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s, role %q: decide = %+v, %v; before the shortcuts %+v, %v", step, d.r.role, got, gotErr, want, wantErr)
	}
	gs, gok := propagation.FromContext(gotCtx)
	ws, wok := propagation.FromContext(wantCtx)
	if gs != ws || gok != wok || gotCtx.Value(ctxKey{}) != wantCtx.Value(ctxKey{}) {
		t.Fatalf("%s, role %q: context sandbox %v %v value %v; before %v %v value %v", step, d.r.role, gs, gok, gotCtx.Value(ctxKey{}), ws, wok, wantCtx.Value(ctxKey{}))
	}
	if gotCtx.Err() != wantCtx.Err() {
		t.Fatalf("%s, role %q: context error %v, before %v", step, d.r.role, gotCtx.Err(), wantCtx.Err())
	}
	// The deadline and the cancellation are the caller's, as before.
	gd, gdok := gotCtx.Deadline()
	wd, wdok := wantCtx.Deadline()
	if gd != wd || gdok != wdok || gotCtx.Done() != wantCtx.Done() {
		t.Fatalf("%s, role %q: context deadline %v %v done %p; before %v %v %p", step, d.r.role, gd, gdok, gotCtx.Done(), wd, wdok, wantCtx.Done())
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"unreadable", d.r.unreadable.Load(), d.ref.unreadable.Load()},
		{"orphans", d.r.orphans.Load(), d.ref.orphans.Load()},
		{"future", d.r.future.Load(), d.ref.future.Load()},
	} {
		if c.got != c.want {
			t.Fatalf("%s, role %q: %s = %d, before the shortcuts %d", step, d.r.role, c.name, c.got, c.want)
		}
	}
}

// TestDecideDifferential: warm readers of every role decide a random
// stream against the reference that decides each message the old way,
// while the table changes under them (routes whose windows open and
// close around the messages' times, sandboxes removed and re-added with
// the same ID, expiries passing on the table's clock), the messages
// alternate between known, unknown and unreadable sandboxes, their
// headers come reordered, re-cased, duplicated, or rewritten in place in
// a buffer the caller reuses, and the caller's context changes or is
// canceled.
func TestDecideDifferential(t *testing.T) {
	for seed := range uint64(40) {
		t.Run("", func(t *testing.T) { decideDifferential(t, seed, 600) })
	}
}

func decideDifferential(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 14))
	t0 := time.Now().Add(-24 * time.Hour).Truncate(time.Minute)
	var nowNS atomic.Int64
	nowNS.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, nowNS.Load()) }
	table := routes.New(routes.WithClock(now))
	if err := table.Update(nil); err != nil {
		t.Fatal(err)
	}
	mins := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Minute }
	update := func() {
		var sbs []routes.Sandbox
		for _, id := range []string{"pr-1", "pr-2", "pr-3"} {
			if rng.IntN(10) < 3 {
				continue // removed (or still absent)
			}
			sb := routes.Sandbox{ID: id, Services: map[string]routes.Route{}}
			for _, svc := range []string{"orders", "payments"} {
				if rng.IntN(10) < 6 {
					from := now().Add(mins(-20, 10))
					rt := routes.Route{Upstream: "10.0.0.1:9090", ActiveFrom: from}
					if rng.IntN(2) == 0 {
						rt.RemovedAt = from.Add(mins(1, 20))
					}
					sb.Services[svc] = rt
				}
			}
			if rng.IntN(3) == 0 {
				sb.Expires = now().Add(mins(-5, 20))
			}
			sbs = append(sbs, sb)
		}
		_ = table.Update(sbs) // an invalid draw changes nothing
	}
	update()
	var readers []*diffReader
	for _, id := range []string{"", "pr-1", "pr-2"} {
		readers = append(readers, &diffReader{r: bareReader(t, table, "orders", side(id)), ref: bareReader(t, table, "orders", side(id))})
	}
	bg := context.Background()
	a := context.WithValue(bg, ctxKey{}, "a")
	b := context.WithValue(bg, ctxKey{}, "b")
	cctx, cancel := context.WithCancel(context.WithValue(bg, ctxKey{}, "c"))
	defer cancel()
	ctxs := []context.Context{a, a, a, b, cctx}
	reused := []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}, {Key: "baggage", Value: []byte("sandbox.id=pr-1,sandbox.actor=alice")}}
	ids := []string{"pr-1", "pr-1", "pr-2", "pr-2", "pr-3", "pr-9"} // pr-9: never in the table
	for step := range steps {
		switch n := rng.IntN(20); {
		case n < 3:
			update()
		case n < 5:
			nowNS.Add(int64(mins(0, 4)))
		case n == 5:
			cancel()
		}
		id := ids[rng.IntN(len(ids))]
		actor := []string{"alice", "bob"}[rng.IntN(2)]
		bag := "sandbox.id=" + id + ",sandbox.actor=" + actor
		h := func(kv ...string) []kafka.Header {
			var hs []kafka.Header
			for i := 0; i < len(kv); i += 2 {
				hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
			}
			return hs
		}
		var hs []kafka.Header
		variant := rng.IntN(13)
		switch variant {
		case 0, 1, 2:
			hs = h("sandbox-id", id, "baggage", bag)
		case 3:
			hs = h("sandbox-id", id)
		case 4:
			hs = h("baggage", bag, "sandbox-id", id)
		case 5:
			hs = h("Sandbox-ID", id, "BAGGAGE", bag)
		case 6:
			hs = h("sandbox-id", id, "sandbox-id", ids[rng.IntN(len(ids))], "baggage", bag)
		case 7:
			hs = h("x-trace", "1", "sandbox-id", id, "baggage", bag)
		case 8:
			hs = h("sandbox-id", "PR_1", "baggage", bag) // unreadable, again and again
		case 9:
			hs = h("sandbox-id", id, "baggage", "sandbox.id="+ids[rng.IntN(len(ids))])
		case 10:
			hs = h("baggage", bag)
		case 11:
			hs = nil // untagged
		case 12:
			// The caller's buffer, rewritten in place between fetches
			// (kafka-go's are reused): the same slice, other bytes.
			copy(reused[0].Value, id)
			reused[1].Value = append(reused[1].Value[:0], bag...)
			hs = reused
		}
		msg := kafka.Message{Topic: "t", Offset: int64(step), Time: now().Add(-mins(0, 40)), Headers: hs}
		ctx := ctxs[rng.IntN(len(ctxs))]
		for _, d := range readers {
			m := msg
			if variant != 12 {
				m.Headers = append([]kafka.Header(nil), hs...)
			}
			d.check(t, fmt.Sprintf("seed %d step %d (%s at -%s, variant %d)", seed, step, id, now().Sub(msg.Time), variant), ctx, m)
		}
	}
}

// TestFetchLockNoStarvation: a caller that keeps taking the lock again
// right after releasing it (a loop of fetches) must not keep a waiter
// out: the waiter gets its turn within a few of the other's holds, as it
// did with the semaphore (first come, first served).
func TestFetchLockNoStarvation(t *testing.T) {
	var l fetchLock
	stop := make(chan struct{})
	var holds atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := l.lock(context.Background()); err != nil {
				t.Error(err)
				return
			}
			holds.Add(1)
			time.Sleep(50 * time.Microsecond) // a fetch: the holder blocks inside
			l.unlock()
		}
	}()
	defer func() { close(stop); <-done }()
	for holds.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		before := holds.Load()
		err := l.lock(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waiter %d: %v after %d of the other's holds", i, err, holds.Load()-before)
		}
		if n := holds.Load() - before; n > 3 {
			t.Errorf("waiter %d got the lock after %d of the other's holds", i, n)
		}
		l.unlock()
	}
}

// TestFetchLockCancelStorm: waiters queue behind a held lock and half of
// them give up at random moments, some just as the lock is handed to
// them; every one that stays gets the lock in the end (no wake-up lost,
// no hand-off to a waiter that left), one at a time, and the lock ends
// free with no one queued.
func TestFetchLockCancelStorm(t *testing.T) {
	for round := range 50 {
		var l fetchLock
		if err := l.lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		const waiters = 16
		var (
			wg      sync.WaitGroup
			inside  atomic.Int32
			got     atomic.Int32
			stayers int32
		)
		for i := range waiters {
			ctx, cancel := context.WithCancel(context.Background())
			stays := i%2 == 0
			if stays {
				stayers++
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				if !stays {
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
					cancel()
				}
			}()
			go func() {
				defer wg.Done()
				defer cancel()
				err := l.lock(ctx)
				if err != nil {
					if stays {
						t.Errorf("round %d: a waiter that stayed: %v", round, err)
					}
					return
				}
				if inside.Add(1) != 1 {
					t.Errorf("round %d: two holders", round)
				}
				got.Add(1)
				time.Sleep(time.Duration(rand.IntN(20)) * time.Microsecond)
				inside.Add(-1)
				l.unlock()
			}()
		}
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		l.unlock()
		finished := make(chan struct{})
		go func() { wg.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: waiters still waiting (%d got the lock): a wake-up lost", round, got.Load())
		}
		if got.Load() < stayers {
			t.Errorf("round %d: %d got the lock, want at least the %d that stayed", round, got.Load(), stayers)
		}
		l.mu.Lock()
		q := len(l.queue)
		l.mu.Unlock()
		if s := l.state.Load(); s != 0 || q != 0 {
			t.Fatalf("round %d: state %d, %d queued after all left; want free, none", round, s, q)
		}
	}
}

// TestDecideWaitsWhenTableFallsBehind: readers warm with a sandbox's
// facts, on a static table later given a source that then fails, wait
// for the table and give up with ErrRoutesBehind on a message after what
// the table has synced, as they did before the shortcuts; what the table
// has synced is decided from the memo; a good load lets them go on.
func TestDecideWaitsWhenTableFallsBehind(t *testing.T) {
	now := time.Now()
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-1", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: now.Add(-time.Hour)}}},
		{ID: "pr-2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var readers []*diffReader
	for _, id := range []string{"", "pr-1", "pr-2"} {
		opts := []ReaderOption{WithRouteWait(20 * time.Millisecond)}
		if id != "" {
			opts = append(opts, AsSandbox(id))
		}
		readers = append(readers, &diffReader{r: bareReader(t, table, "orders", opts...), ref: bareReader(t, table, "orders", opts...)})
	}
	hs := func(id string) []kafka.Header {
		var c carrier
		propagation.Default().InjectSandbox(propagation.Sandbox{ID: id}, &c)
		return c.list
	}
	ctx := context.Background()
	decideAll := func(step string, at time.Time, behind bool) {
		t.Helper()
		for _, id := range []string{"pr-1", "pr-2", "pr-1", "pr-2"} {
			for _, d := range readers {
				msg := kafka.Message{Topic: "t", Time: at, Headers: hs(id)}
				d.check(t, step+" "+id, ctx, msg)
				if !d.r.role.concerns(id) {
					continue
				}
				_, _, err := d.r.decide(ctx, &msg)
				if behind != errors.Is(err, ErrRoutesBehind) {
					t.Errorf("%s: %s for role %q: %v, want behind: %v", step, id, d.r.role, err, behind)
				}
			}
		}
	}
	decideAll("by hand", now.Add(-time.Second), false) // warm
	table.MarkSynced(now.Add(-10 * time.Minute))       // given a source, synced up to 10 minutes ago
	decideAll("source behind", now.Add(-time.Second), true)
	decideAll("before the sync", now.Add(-20*time.Minute), false)
	_ = table.MarkFailed(now, errors.New("source down"))
	if table.Err() == nil {
		t.Fatal("table reports no error")
	}
	decideAll("source failing", now.Add(-time.Second), true)
	table.MarkSynced(time.Now())
	decideAll("synced again", now.Add(-time.Second), false)
}

// TestFetchSharedTableDifferential: on the embedded broker, a baseline and
// a sandbox reader sharing one route table, each fetched by two
// goroutines at once, read a stream of messages of alternating sandboxes
// (known, unknown, unreadable, with duplicated and re-ordered headers,
// timestamps on both sides of route windows); between two halves of the
// stream the table changes (a route removed and re-added under the same
// ID with another window, a sandbox removed). Each reader returns exactly
// the messages the decision before the shortcuts gives it, each with its
// own sandbox in its context.
func TestFetchSharedTableDifferential(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 1)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	window := func(from, to int) map[string]routes.Route {
		return map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: at(from), RemovedAt: at(to)}}
	}
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1", Services: window(10, 20)}, {ID: "pr-2"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := kafkatest.Writer(t, addrs, topic)
	rng := rand.New(rand.NewPCG(14, 14))
	// Each half's messages, produced together, decided against the
	// table as it is while they are read.
	half := func(first int) []kafka.Message {
		var msgs []kafka.Message
		for i := range 150 {
			id := []string{"pr-1", "pr-1", "pr-2", "pr-3"}[rng.IntN(4)]
			actor := []string{"alice", "bob"}[rng.IntN(2)]
			bag := []byte("sandbox.id=" + id + ",sandbox.actor=" + actor)
			var hs []kafka.Header
			switch rng.IntN(6) {
			case 0, 1:
				hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "baggage", Value: bag}}
			case 2:
				hs = []kafka.Header{{Key: "baggage", Value: bag}, {Key: "Sandbox-Id", Value: []byte(id)}}
			case 3:
				hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "sandbox-id", Value: []byte(id)}}
			case 4:
				hs = []kafka.Header{{Key: "sandbox-id", Value: []byte("PR_1")}}
			}
			msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, "m-%d", first+i), Headers: hs, Time: at(rng.IntN(40))})
		}
		return msgs
	}
	type got struct {
		value, sandbox, actor string
	}
	readers := map[string]*Reader{}
	refs := map[string]*Reader{}
	for _, id := range []string{"", "pr-1"} {
		opts := []ReaderOption{}
		if id != "" {
			opts = append(opts, AsSandbox(id))
		}
		r, err := NewReader(kafkatest.ReaderConfig(addrs, topic, kafkatest.UniqueName("g")), table, "orders", opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		readers[id] = r
		refs[id] = bareReader(t, table, "orders", side(id))
	}
	var (
		mu        sync.Mutex
		received  = map[string][]got{}
		delivered = map[string]int64{} // in the halves checked
		wg        sync.WaitGroup
	)
	fctx, stop := context.WithCancel(ctx)
	defer func() { stop(); wg.Wait() }()
	caller := context.WithValue(fctx, ctxKey{}, "caller")
	for id, r := range readers {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mctx, m, err := r.FetchMessage(caller)
					if err != nil {
						if fctx.Err() == nil {
							t.Errorf("reader %q: %v", id, err)
						}
						return
					}
					s, _ := propagation.FromContext(mctx)
					if mctx.Value(ctxKey{}) != "caller" {
						t.Errorf("reader %q: %s returned without the caller's context", id, m.Value)
					}
					mu.Lock()
					received[id] = append(received[id], got{string(m.Value), s.ID, s.Actor})
					mu.Unlock()
				}
			}()
		}
	}
	// A new sandbox group starts at the first offset at or after its
	// route's activeFrom (doc.go, "Sandbox groups"): the readers must
	// have set up their groups on the empty topic before anything is
	// written, or the sandbox reader would rightly never see the
	// messages stamped before its window that precede the first one
	// inside it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if readers[""].inner.Load() != nil && readers["pr-1"].inner.Load() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the readers did not start")
		}
	}
	produced := 0
	for phase, msgs := range [][]kafka.Message{half(0), half(150)} {
		if phase == 1 {
			// pr-1's route removed and back under the same ID with
			// another window; pr-2 removed; pr-3 appears.
			if err := table.Update([]routes.Sandbox{{ID: "pr-1", Services: window(25, 35)}, {ID: "pr-3"}}); err != nil {
				t.Fatal(err)
			}
		}
		want := map[string][]got{}
		for _, m := range msgs {
			for id, ref := range refs {
				mm := m
				out, v, err := oldDecide(ref, context.Background(), &mm)
				if err != nil {
					t.Fatal(err)
				}
				if v.fate == fateMine {
					s, _ := propagation.FromContext(out)
					want[id] = append(want[id], got{string(m.Value), s.ID, s.Actor})
				}
			}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		produced += len(msgs)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			// Every message decided, and every one returned recorded
			// (a count moves before FetchMessage returns).
			all := true
			mu.Lock()
			for id, r := range readers {
				if c := r.Counts(); c.Delivered+c.Skipped != int64(produced) || c.Delivered != delivered[id]+int64(len(received[id])) {
					all = false
				}
			}
			mu.Unlock()
			if all {
				break
			}
			if time.Now().After(deadline) {
				for id, r := range readers {
					t.Errorf("reader %q: %+v", id, r.Counts())
				}
				t.Fatalf("phase %d: the readers did not decide all %d messages", phase, produced)
			}
		}
		mu.Lock()
		for id := range readers {
			gotHalf := received[id]
			received[id] = nil
			delivered[id] += int64(len(gotHalf))
			slices.SortFunc(gotHalf, func(a, b got) int { return strings.Compare(a.value, b.value) })
			wantHalf := want[id]
			slices.SortFunc(wantHalf, func(a, b got) int { return strings.Compare(a.value, b.value) })
			if !slices.Equal(gotHalf, wantHalf) {
				t.Errorf("phase %d, reader %q: returned %d messages %v\nbefore the shortcuts %d: %v", phase, id, len(gotHalf), gotHalf, len(wantHalf), wantHalf)
			}
		}
		mu.Unlock()
	}
}

// TestOwnerMemoRacingChanges: the table changes while a warm reader
// decides (a change may fall between the memo's reading of the content's
// version and of the facts); once the changes stop, the next decision is
// the table's, never facts of a content already replaced.
func TestOwnerMemoRacingChanges(t *testing.T) {
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	contents := [][]routes.Sandbox{
		{{ID: "pr-1", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: at(0), RemovedAt: at(10)}}}},
		{{ID: "pr-1", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: at(10), RemovedAt: at(20)}}}},
		{{ID: "pr-1"}},
		{},
	}
	table, err := routes.NewStatic(contents[0])
	if err != nil {
		t.Fatal(err)
	}
	var readers []*diffReader
	for _, id := range []string{"", "pr-1"} {
		readers = append(readers, &diffReader{r: bareReader(t, table, "orders", side(id)), ref: bareReader(t, table, "orders", side(id))})
	}
	hs := []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}}
	for round := range 200 {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := table.Update(contents[(round+i)%len(contents)]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for i := range 50 {
			for _, d := range readers {
				msg := kafka.Message{Topic: "t", Time: at(i % 25), Headers: hs}
				if _, _, err := d.r.decide(context.Background(), &msg); err != nil {
					t.Fatal(err)
				}
			}
		}
		close(stop)
		<-done
		for i := range 25 {
			for _, d := range readers {
				d.ref.orphans.Store(d.r.orphans.Load())
				d.check(t, fmt.Sprintf("round %d, after the changes, at %d", round, i), context.Background(), kafka.Message{Topic: "t", Time: at(i), Headers: hs})
			}
		}
	}
}

// TestEnterSharedIsolated: what a handler derives from one message's
// context (a value, a cancellation, its own span) does not reach the next
// message's, though both come from the same caller context and sandbox:
// a context is immutable, and the one shared is the parent of whatever
// the handler builds.
func TestEnterSharedIsolated(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-1", Actor: "alice"}, &c)
	caller := context.WithValue(context.Background(), ctxKey{}, "caller")
	type offsetKey struct{}
	for i := range 4 {
		msg := kafka.Message{Topic: "t", Offset: int64(i), Time: time.Now().Add(-time.Minute), Headers: c.list}
		out, v, err := r.decide(caller, &msg)
		if err != nil || v.fate != fateMine {
			t.Fatalf("message %d: decide = %v, %v", i, v, err)
		}
		if out.Err() != nil {
			t.Fatalf("message %d: context already ended: %v (a handler canceled the previous message's)", i, out.Err())
		}
		if got := out.Value(offsetKey{}); got != nil {
			t.Fatalf("message %d: context carries the previous message's offset %v", i, got)
		}
		if s, ok := propagation.FromContext(out); !ok || s.ID != "pr-1" || out.Value(ctxKey{}) != "caller" {
			t.Fatalf("message %d: context %v %v %v", i, s, ok, out.Value(ctxKey{}))
		}
		// The handler: its own values, a cancellation, a sandbox of its
		// own in what it derives.
		hctx, cancel := context.WithCancel(context.WithValue(out, offsetKey{}, msg.Offset))
		hctx = propagation.ContextWithSandbox(hctx, propagation.Sandbox{ID: "pr-9"})
		cancel()
		if hctx.Err() == nil {
			t.Fatal("handler's cancellation did not take")
		}
	}
}
