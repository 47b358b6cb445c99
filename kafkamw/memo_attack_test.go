package kafkamw

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on the hashed marker memo and the context memo of several
// sandboxes (#14, second round).

// heapAfterGC is the live heap once garbage is collected.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoHoldsNoHugeHeaders: a producer that tags messages with large
// marker headers, each a little different (a bug, or anyone who can write
// to the topic), must not make the reader keep every one of them. The
// memo of four entries held four; one of 128 entries, each owning a copy
// of its header bytes and the codec's answer read from them, held 128 of
// them: 64 KiB values kept 16 MiB alive per reader (1 MiB values, what a
// broker accepts by default, 256 MiB). Markers that large are unreadable
// whatever they hold (the W3C limit is 8 KiB of baggage), and reading
// them again costs a linear pass, as hashing them for the memo does.
func TestMemoHoldsNoHugeHeaders(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		hs   func(v string) []kafka.Header
	}{
		{"dedicated header", func(v string) []kafka.Header { return []kafka.Header{{Key: "sandbox-id", Value: []byte(v)}} }},
		{"baggage", func(v string) []kafka.Header {
			return []kafka.Header{{Key: "baggage", Value: []byte("sandbox.id=pr-1,note=" + v)}}
		}},
		{"both", func(v string) []kafka.Header {
			return []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}, {Key: "baggage", Value: []byte("sandbox.id=pr-1,note=" + v)}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range []string{"", "pr-1"} {
				r := bareReader(t, table, "orders", side(id))
				const size, n = 64 << 10, 512
				before := heapAfterGC()
				for i := range n {
					v := fmt.Sprintf("%08d", i) + strings.Repeat("x", size)
					msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: tc.hs(v)}
					if _, v, err := r.decide(context.Background(), &msg); err != nil || v.fate == fateMine {
						t.Fatalf("message %d: decide = %+v, %v; want it refused", i, v, err)
					}
				}
				held := int64(heapAfterGC()) - int64(before)
				runtime.KeepAlive(r)
				if limit := int64(4 * size); held > limit {
					t.Errorf("reader %q: %d KiB held after %d messages with %d KiB marker headers; want at most %d KiB", id, held>>10, n, size>>10, limit>>10)
				}
			}
		})
	}
}

// TestMemoSameSet: header lists whose memo keys land in one set of the
// hashed memo (found with the process's seed), more of them than the set
// has ways, some differing in a byte, some only in where the bytes sit
// (the dedicated header's value against baggage's), read in turns and
// again and again: each is read as the codec reads it, never as the list
// remembered beside it in its set.
func TestMemoSameSet(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	h := func(kv ...string) []kafka.Header {
		var hs []kafka.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	keyOf := func(hs []kafka.Header) memoKey {
		var k memoKey
		if _, memoize := r.markers.scanKey(hs, &k); !memoize {
			t.Fatalf("%v: not memoized", hs)
		}
		return k
	}
	// Candidates in families that differ only in one header's bytes: the
	// same dedicated header with other baggage, the same baggage with
	// another dedicated header (some agreeing, some not, some unreadable),
	// either alone; from each, four whose keys land in one set.
	families := []func(id string) []kafka.Header{
		func(id string) []kafka.Header { return h("sandbox-id", "pr-1", "baggage", "sandbox.id="+id) },
		func(id string) []kafka.Header { return h("sandbox-id", id, "baggage", "sandbox.id=pr-1") },
		func(id string) []kafka.Header { return h("Sandbox-ID", " "+id+" ") },
		func(id string) []kafka.Header { return h("baggage", "sandbox.id="+id+",sandbox.actor=a") },
		func(id string) []kafka.Header { return h("sandbox-id", "", "baggage", "sandbox.id="+id) },
	}
	const target = 0
	var same [][]kafka.Header
	for _, f := range families {
		n := 0
		for i := 0; n < memoWays; i++ {
			hs := f(fmt.Sprintf("pr-%d", i))
			if k := keyOf(hs); k.set() == target {
				same = append(same, hs)
				n++
			}
		}
	}
	want := make([]string, len(same))
	for i, hs := range same {
		m, err := r.cfg.codec.Read(&carrier{list: hs})
		want[i] = fmt.Sprintf("%+v %v", m, err)
	}
	// Turns of growing stride: each entry evicted, re-read, remembered.
	for round := range 40 {
		for j := range same {
			i := (j * (round%5 + 1)) % len(same)
			hs := append([]kafka.Header(nil), same[i]...)
			m, err := readHeaders(r, hs)
			if got := fmt.Sprintf("%+v %v", m, err); got != want[i] {
				t.Fatalf("round %d, list %d %v: read %s; the codec reads %s", round, i, same[i], got, want[i])
			}
		}
	}
}

// valCtx is a caller context of a comparable value type: two copies are
// == and are the same context; two built alike around different parents
// are not.
type valCtx struct{ p *context.Context }

func (v valCtx) Deadline() (time.Time, bool) { return (*v.p).Deadline() }
func (v valCtx) Done() <-chan struct{}       { return (*v.p).Done() }
func (v valCtx) Err() error                  { return (*v.p).Err() }
func (v valCtx) Value(k any) any             { return (*v.p).Value(k) }

// TestDecideManySandboxesDifferential: warm readers of every role decide
// streams of up to 200 sandboxes (more than the context memo's four, the
// marker memo's 128 entries) against the decision before the shortcuts,
// while the table changes (routes added, removed, reactivated, expiring),
// the same ID comes with other actors and origins, and the caller's
// context changes between messages: equal values in distinct contexts,
// copies of one value-typed context, contexts with deadlines, one
// canceled between two messages, a fresh one now and then. Each message
// gets the verdict, the sandbox and the caller's values, deadline and
// cancellation the old decision gives it.
func TestDecideManySandboxesDifferential(t *testing.T) {
	for seed := range uint64(12) {
		for _, nIDs := range []int{5, 9, 140, 200} {
			t.Run(fmt.Sprintf("%d/%d", seed, nIDs), func(t *testing.T) { manyDifferential(t, seed, nIDs, 1500) })
		}
	}
}

func manyDifferential(t *testing.T, seed uint64, nIDs, steps int) {
	rng := rand.New(rand.NewPCG(seed, uint64(nIDs)))
	t0 := time.Now().Add(-24 * time.Hour).Truncate(time.Minute)
	var nowNS atomic.Int64
	nowNS.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, nowNS.Load()) }
	table := routes.New(routes.WithClock(now))
	if err := table.Update(nil); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, nIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("pr-%d", i)
	}
	mins := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Minute }
	update := func() {
		var sbs []routes.Sandbox
		for _, id := range ids[:nIDs*9/10] { // the last tenth never in the table
			if rng.IntN(10) < 2 {
				continue
			}
			sb := routes.Sandbox{ID: id, Services: map[string]routes.Route{}}
			if rng.IntN(2) == 0 {
				rt := routes.Route{Upstream: "10.0.0.1:9090", ActiveFrom: now().Add(mins(-30, 5))}
				if rng.IntN(3) == 0 {
					rt.RemovedAt = rt.ActiveFrom.Add(mins(1, 20))
				}
				sb.Services["orders"] = rt
			}
			if rng.IntN(8) == 0 {
				sb.Expires = now().Add(mins(-5, 20))
			}
			sbs = append(sbs, sb)
		}
		if err := table.Update(sbs); err != nil {
			t.Fatal(err)
		}
	}
	update()
	var readers []*diffReader
	for _, id := range []string{"", ids[1], ids[nIDs-2]} {
		readers = append(readers, &diffReader{r: bareReader(t, table, "orders", side(id)), ref: bareReader(t, table, "orders", side(id))})
	}
	bg := context.Background()
	a1 := context.WithValue(bg, ctxKey{}, "a")
	a2 := context.WithValue(bg, ctxKey{}, "a") // equal to a1 in all but identity
	dl, cancelDL := context.WithDeadline(context.WithValue(bg, ctxKey{}, "d"), time.Now().Add(time.Hour))
	defer cancelDL()
	var vp context.Context = context.WithValue(bg, ctxKey{}, "v")
	vp2 := vp
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	newCancel := func(v string) context.Context {
		c, cancel := context.WithCancel(context.WithValue(bg, ctxKey{}, v))
		cancels = append(cancels, cancel)
		return c
	}
	cc := newCancel("c")
	ctxs := []context.Context{a1, a1, a1, a2, dl, valCtx{&vp}, valCtx{&vp}, valCtx{&vp2}, cc}
	actors := []string{"alice", "bob", ""}
	for step := range steps {
		switch n := rng.IntN(40); {
		case n < 2:
			update()
		case n < 4:
			nowNS.Add(int64(mins(0, 3)))
		case n == 4:
			cancels[len(cancels)-1]() // cc, between two messages
		case n == 5:
			cc = newCancel(fmt.Sprint("c", step))
			ctxs[len(ctxs)-1] = cc
		}
		id := ids[rng.IntN(len(ids))]
		if rng.IntN(3) == 0 {
			id = ids[rng.IntN(min(len(ids), 6))] // a few sandboxes often
		}
		bag := "sandbox.id=" + id
		if a := actors[rng.IntN(len(actors))]; a != "" {
			bag += ",sandbox.actor=" + a
		}
		if rng.IntN(4) == 0 {
			bag += ",sandbox.origin=" + []string{"pr", "dev"}[rng.IntN(2)]
		}
		var hs []kafka.Header
		switch rng.IntN(5) {
		case 0, 1:
			hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "baggage", Value: []byte(bag)}}
		case 2:
			hs = []kafka.Header{{Key: "baggage", Value: []byte(bag)}}
		case 3:
			hs = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}}
		case 4:
			hs = []kafka.Header{{Key: "SANDBOX-ID", Value: []byte(id)}, {Key: "x", Value: []byte("y")}, {Key: "Baggage", Value: []byte(bag)}}
		}
		msg := kafka.Message{Topic: "t", Offset: int64(step), Time: now().Add(-mins(0, 40)), Headers: hs}
		ctx := ctxs[rng.IntN(len(ctxs))]
		if rng.IntN(50) == 0 {
			ctx = context.WithValue(bg, ctxKey{}, fmt.Sprint("fresh", step))
		}
		for _, d := range readers {
			m := msg
			m.Headers = append([]kafka.Header(nil), hs...)
			d.check(t, fmt.Sprintf("seed %d step %d (%s)", seed, step, bag), ctx, m)
		}
	}
}

// TestEnterMemoLetsCallerContextGo: the context memo holds on to one
// caller context, as its single entry did: once an owned message is
// fetched with another, what the first carried (a request's values, a
// large one) can be collected, whichever of the memo's slots its
// sandboxes took.
func TestEnterMemoLetsCallerContextGo(t *testing.T) {
	var sbs []routes.Sandbox
	headers := make([][]kafka.Header, 3)
	for k := range headers {
		id := fmt.Sprintf("pr-%d", k+1)
		sbs = append(sbs, routes.Sandbox{ID: id}) // overriding nothing: the baseline's
		headers[k] = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}}
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	decide := func(ctx context.Context, k int) {
		msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: headers[k]}
		if _, v, err := r.decide(ctx, &msg); err != nil || v.fate != fateMine {
			t.Fatalf("decide = %+v, %v", v, err)
		}
	}
	var collected atomic.Bool
	func() {
		big := new([1 << 20]byte)
		runtime.AddCleanup(big, func(*atomic.Bool) { collected.Store(true) }, &collected)
		a := context.WithValue(context.Background(), ctxKey{}, big)
		for k := range headers {
			decide(a, k)
		}
	}()
	decide(context.WithValue(context.Background(), ctxKey{}, "b"), 0)
	for range 20 {
		runtime.GC()
		if collected.Load() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(r)
	t.Error("the first caller context is still held after a message fetched with another")
}

// TestMemoCallerRewritesHeaders: a caller that rewrites a returned
// message's header bytes in place (its own buffers, reused) changes
// nothing the reader remembered: a later message with the first bytes is
// read as them, one with the new bytes as those, whichever of the last
// list and the hashed memo answers. The new bytes are chosen to land in
// the memo set of the old, where an entry sharing the caller's bytes
// would be found under them.
func TestMemoCallerRewritesHeaders(t *testing.T) {
	fresh := func(id string) []kafka.Header {
		return []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "baggage", Value: []byte("sandbox.id=" + id + ",sandbox.actor=alice")}}
	}
	mk := newMarkers(propagation.Default())
	setOf := func(hs []kafka.Header) int {
		var k memoKey
		mk.scanKey(hs, &k)
		return k.set()
	}
	const first = "pr-100"
	second := ""
	for i := 101; i < 1000 && second == ""; i++ {
		if id := fmt.Sprintf("pr-%d", i); setOf(fresh(id)) == setOf(fresh(first)) {
			second = id
		}
	}
	if second == "" {
		t.Fatal("no ID of the same length in the first's set")
	}
	table, err := routes.NewStatic([]routes.Sandbox{{ID: first}, {ID: second}, {ID: "pr-3"}})
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	decide := func(hs []kafka.Header, want string) {
		t.Helper()
		msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: hs}
		out, v, err := r.decide(context.Background(), &msg)
		s, _ := propagation.FromContext(out)
		if err != nil || v.fate != fateMine || s.ID != want {
			t.Fatalf("decide = %+v, %v, sandbox %q; want %s's", v, err, s.ID, want)
		}
	}
	for _, between := range []string{"", "pr-3"} { // the last list, or the memo, answers
		hs := fresh(first)
		decide(hs, first)
		// The caller rewrites the returned headers in place.
		copy(hs[0].Value, second)
		copy(hs[1].Value[len("sandbox.id="):], second)
		if between != "" {
			decide(fresh(between), between) // the last list is now another
		}
		decide(fresh(first), first)
		decide(hs, second)
		decide(fresh(first), first)
	}
}

// TestMemoRandomLists: random header lists from a small vocabulary (the
// dedicated header and baggage under other cases and Unicode foldings,
// ſ for s; member keys as headers, K for k; the split and dead-letter
// headers; duplicates; values that agree, disagree, are empty, padded,
// or over the memo's size bound) read again and again through one warm
// reader, in random order, each compared with what the codec reads from
// a fresh copy.
func TestMemoRandomLists(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(14, 2))
	keys := []string{
		"sandbox-id", "Sandbox-Id", "SANDBOX-ID", "ſandbox-id", // dedicated
		"baggage", "Baggage", "BAGGAGE", // baggage
		"sandbox.id", "uberctx-sandbox.id", "uberctx-ſandbox.id", "ot-baggage-sandbox.actor", "uberctx-sandbox.id", // member keys as headers
		HeaderSplitTopic, HeaderSplitSource, HeaderDeadLetterReason, "traceparent", "x-sandbox-id",
	}
	big := strings.Repeat("y", memoMaxBytes)
	vals := []string{"pr-1", "pr-2", " pr-1 ", "", "PR_1", "sandbox.id=pr-1", "sandbox.id=pr-2,sandbox.actor=bob",
		"sandbox.id=pr-1,sandbox.origin=x", "sandbox.actor=alice", "other=1", "sandbox.id=pr-1,pad=" + big, "pr-1" + big}
	lists := make([][]kafka.Header, 400)
	for i := range lists {
		n := 1 + rng.IntN(3)
		for range n {
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(3) > 0 { // mostly the markers
				k = keys[rng.IntN(7)]
			}
			lists[i] = append(lists[i], kafka.Header{Key: k, Value: []byte(vals[rng.IntN(len(vals))])})
		}
	}
	// Lists whose memo keys differ only in a header being there, empty.
	for _, v := range vals[:6] {
		h := func(k, v string) kafka.Header { return kafka.Header{Key: k, Value: []byte(v)} }
		lists = append(lists,
			[]kafka.Header{h("baggage", v)}, []kafka.Header{h("sandbox-id", ""), h("baggage", v)},
			[]kafka.Header{h("sandbox-id", v)}, []kafka.Header{h("sandbox-id", v), h("baggage", "")})
	}
	for _, id := range []string{"", "pr-1"} {
		r := bareReader(t, table, "orders", side(id))
		for step := range 20000 {
			i := rng.IntN(len(lists))
			if rng.IntN(2) == 0 {
				i = rng.IntN(40) // some lists often
			}
			if rng.IntN(4) == 0 {
				i = 400 + rng.IntN(len(lists)-400) // the pairs
			}
			hs := make([]kafka.Header, len(lists[i]))
			for j, h := range lists[i] {
				hs[j] = kafka.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)}
			}
			wm, werr := r.cfg.codec.Read(&carrier{list: lists[i]})
			var k memoKey
			st, memoize := r.markers.scanKey(hs, &k)
			if st != hasMarkers {
				if wm.Found {
					t.Fatalf("step %d, list %v: the scan finds no markers, the codec %+v %v", step, lists[i], wm, werr)
				}
				continue
			}
			m, err, known := r.last.read(hs)
			if !known {
				m, err = r.readKey(hs, &k, memoize)
				if memoize {
					r.last.remember(hs, m, err)
				}
			}
			if m != wm || (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
				t.Fatalf("step %d, list %q: read %+v %v; the codec reads %+v %v", step, lists[i], m, err, wm, werr)
			}
		}
	}
}

// TestMemoKeepsLargestReadable: the bound on what the memo keeps leaves
// out no readable tagged message: baggage carrying a sandbox at the W3C
// limit, with the dedicated header beside it, is remembered and read
// again without allocating, also when other sandboxes' messages come
// between.
func TestMemoKeepsLargestReadable(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders", AsSandbox("pr-100"))
	lists := make([][]kafka.Header, 3)
	for k := range lists {
		id := fmt.Sprintf("pr-%d", k+1)
		bag := "sandbox.id=" + id + ",pad="
		bag += strings.Repeat("y", propagation.MaxBaggageBytes-len(bag))
		lists[k] = []kafka.Header{{Key: "sandbox-id", Value: []byte(id)}, {Key: "baggage", Value: []byte(bag)}}
		if m, err := readHeaders(r, lists[k]); err != nil || m.Sandbox.ID != id {
			t.Fatalf("%s at the limit: read %+v, %v; want it readable", id, m, err)
		}
	}
	if allocs := testing.AllocsPerRun(10, func() {
		for _, hs := range lists {
			if _, err := readHeaders(r, hs); err != nil {
				t.Fatal(err)
			}
		}
	}); allocs != 0 {
		t.Errorf("%v allocations a round of %d readable lists at the limit; want 0 (each from the memo)", allocs, len(lists))
	}
}

// TestLastHeadersHoldsNoHugeList: the last header list the reader
// remembers is a copy of all of its values, not only the markers: a
// tagged message with a large header of its own beside small markers
// left a buffer that large held by the reader for good (it is reused,
// never shrunk), 1 MiB per reader for one such message.
func TestLastHeadersHoldsNoHugeList(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "pr-1"} {
		r := bareReader(t, table, "orders", side(id))
		const size = 1 << 20
		before := heapAfterGC()
		func() {
			msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: []kafka.Header{
				{Key: "sandbox-id", Value: []byte("pr-1")},
				{Key: "x-payload", Value: make([]byte, size)},
			}}
			if _, v, err := r.decide(context.Background(), &msg); err != nil || (v.fate == fateMine) != (id == "") {
				t.Fatalf("reader %q: decide = %+v, %v", id, v, err)
			}
		}()
		held := int64(heapAfterGC()) - int64(before)
		runtime.KeepAlive(r)
		t.Logf("reader %q: held %d KiB", id, held>>10)
		if held > size/4 {
			t.Errorf("reader %q: %d KiB held after one message with a %d KiB header beside its markers", id, held>>10, size>>10)
		}
	}
}
