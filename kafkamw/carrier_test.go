package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

func TestCarrier(t *testing.T) {
	c := &carrier{list: []kafka.Header{
		{Key: "Sandbox-Id", Value: []byte("a")},
		{Key: "x", Value: []byte("1")},
		{Key: "SANDBOX-ID", Value: []byte("b")},
	}}
	if got := c.Get("sandbox-id"); got != "a" {
		t.Errorf("Get = %q", got)
	}
	if got := c.Values("Sandbox-ID"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Values = %q", got)
	}
	if got := c.Keys(); !slices.Equal(got, []string{"sandbox-id", "x"}) {
		t.Errorf("Keys = %q", got)
	}
	c.Set("Sandbox-Id", "c")
	if want := []kafka.Header{{Key: "sandbox-id", Value: []byte("c")}, {Key: "x", Value: []byte("1")}}; !reflect.DeepEqual(c.list, want) {
		t.Errorf("after Set: %+v", c.list)
	}
	c.Set("Baggage", "k=v")
	if got := c.Get("baggage"); got != "k=v" || c.list[2].Key != "baggage" {
		t.Errorf("Set of a new key: %+v", c.list)
	}
	c.Delete("SANDBOX-id")
	if got := c.Keys(); !slices.Equal(got, []string{"x", "baggage"}) {
		t.Errorf("after Delete: %q", got)
	}
	if c.Get("missing") != "" || c.Values("missing") != nil {
		t.Error("a missing key has a value")
	}
}

// TestCarrierCodec: the codec round-trips a sandbox through record headers,
// and Strip removes exactly our markers.
func TestCarrierCodec(t *testing.T) {
	codec := propagation.Default()
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice smith", Origin: "pr/42"}
	c := &carrier{list: []kafka.Header{{Key: "Baggage", Value: []byte("tenant=acme")}}}
	codec.InjectSandbox(sb, c)
	m, err := codec.Read(c)
	if err != nil || m.Sandbox != sb {
		t.Fatalf("Read = %+v, %v", m, err)
	}
	codec.Strip(c)
	if !reflect.DeepEqual(c.list, []kafka.Header{{Key: "baggage", Value: []byte("tenant=acme")}}) {
		t.Errorf("after Strip: %+v", c.list)
	}
}

func TestMarkersScan(t *testing.T) {
	m := newMarkers(propagation.Default())
	for _, tc := range []struct {
		hs   []kafka.Header
		want headerState
	}{
		{nil, noMarkers},
		{[]kafka.Header{{Key: "traceparent", Value: []byte("00-…")}}, noMarkers},
		{[]kafka.Header{{Key: "Baggage", Value: []byte("tenant=acme")}}, bagOnly},
		{[]kafka.Header{{Key: "baggage", Value: []byte("tenant=acme,sandbox.id=pr-1")}}, hasMarkers},
		{[]kafka.Header{{Key: "baggage", Value: []byte("sandbox.actor=x")}}, hasMarkers},
		{[]kafka.Header{{Key: "SANDBOX-ID", Value: []byte("")}}, hasMarkers},
	} {
		if got := m.scan(tc.hs); got != tc.want {
			t.Errorf("scan(%q) = %d, want %d", tc.hs, got, tc.want)
		}
	}
}

// TestInjectAllocs: once the sandbox's headers are encoded, injecting into
// a message or a batch costs one allocation, its header lists; a batch's
// slice of copies is reused.
func TestInjectAllocs(t *testing.T) {
	w := mustWriter(t, &kafka.Writer{})
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	w.encode(sb)
	withHeaders := func(n int) []kafka.Message {
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			msgs[i] = kafka.Message{Value: []byte("v"), Headers: []kafka.Header{{Key: "trace", Value: []byte("t")}}}
		}
		return msgs
	}
	for _, tc := range []struct {
		name string
		msgs []kafka.Message
		want float64
	}{
		{"one", withHeaders(1), 1},
		{"one without headers", make([]kafka.Message, 1), 1},
		{"one with baggage", []kafka.Message{{Headers: []kafka.Header{{Key: "baggage", Value: []byte("tenant=acme")}}}}, 1},
		{"batch of 10", withHeaders(10), 1},
		{"batch of 10 without headers", make([]kafka.Message, 10), 1},
	} {
		// As WriteMessages does: a batch's slice goes back after the write.
		write := func() {
			var one [1]kafka.Message
			_, held, err := w.decorate(sb, tc.msgs, &one)
			if err != nil {
				t.Fatal(err)
			}
			putBatch(held)
		}
		write() // fill the pool
		if n := testing.AllocsPerRun(100, write); n != tc.want {
			t.Errorf("%s: %v allocations, want %v", tc.name, n, tc.want)
		}
	}
	var a [1]kafka.Message
	out, _, _ := w.decorate(sb, withHeaders(1), &a)
	if len(out[0].Headers) != 3 || cap(out[0].Headers) != 3 {
		t.Errorf("headers %+v (cap %d): want the caller's and ours, capacity capped", out[0].Headers, cap(out[0].Headers))
	}
}

// TestUntaggedNoAllocs: taking an untagged message from the group reader,
// deciding it on either side, and recording it for commits allocates
// nothing in this package. (next stands in for kafka.Reader.FetchMessage,
// whose own allocations are not ours to count.)
func TestUntaggedNoAllocs(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}})
	if err != nil {
		t.Fatal(err)
	}
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-42"}, &c)
	for _, sandbox := range []string{"", "pr-42"} {
		r := bareReader(t, table, "orders", side(sandbox))
		untagged := kafka.Message{Topic: "t", Partition: 1, Value: []byte("v"), Time: time.Now(),
			Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-abc")}, {Key: "baggage", Value: []byte("tenant=acme")}}}
		// The sandbox reader skips untagged messages and returns its own:
		// give it one of its own after every untagged one.
		tagged := kafka.Message{Topic: "t", Partition: 1, Time: time.Now().Add(-time.Minute), Headers: c.list}
		i := 0
		next := func(context.Context) (kafka.Message, error) {
			i++
			m := untagged
			if sandbox != "" && i%2 == 0 {
				m = tagged
			}
			m.Offset = int64(i)
			return m, nil
		}
		ctx := context.Background()
		var msg kafka.Message
		r.fetch(ctx, sourceFunc(next), &msg) // create the partition's ledger entry
		n := testing.AllocsPerRun(1000, func() {
			if _, err := r.fetch(ctx, sourceFunc(next), &msg); err != nil {
				t.Fatal(err)
			}
		})
		// The sandbox reader, per call: one untagged message skipped
		// (free), and the tagged one returned with its context. Its
		// headers were read once, before the measurement, and are
		// remembered; its context, derived from the same ctx for the
		// same sandbox, was derived once too.
		if n != 0 {
			t.Errorf("sandbox %q: %v allocations per call, want 0", sandbox, n)
		}
		if got := r.Counts(); sandbox != "" && got.Skipped != got.Delivered {
			t.Errorf("counts %+v", got)
		}
	}
}

// TestLedger: a skipped offset is committed only once every message
// returned before it on its partition is committed.
func TestLedger(t *testing.T) {
	l := newLedger()
	msg := func(p int, off int64) *kafka.Message { return &kafka.Message{Topic: "t", Partition: p, Offset: off} }
	l.deliver(msg(0, 0))
	l.skip(msg(0, 1))
	l.skip(msg(1, 0))
	if got := l.committable(); len(got) != 1 || got[0].Partition != 1 || got[0].Offset != 0 {
		t.Errorf("committable = %+v: want only partition 1 (partition 0 waits for offset 0)", got)
	}
	all := l.withSkipped([]kafka.Message{*msg(0, 0)})
	if len(all) != 2 || all[1].Partition != 0 || all[1].Offset != 1 {
		t.Errorf("withSkipped = %+v: want the caller's commit and the skipped offset 1", all)
	}
	l.committed(all)
	l.deliver(msg(0, 2))
	l.skip(msg(0, 3))
	if got := l.withSkipped([]kafka.Message{*msg(0, 1)}); len(got) != 1 {
		t.Errorf("withSkipped = %+v: offset 3 must wait for the returned offset 2", got)
	}
	if got := l.committable(); len(got) != 1 || got[0].Partition != 1 {
		t.Errorf("committable = %+v", got)
	}
	one := []kafka.Message{*msg(5, 0)}
	if got := l.withSkipped(one); &got[0] != &one[0] {
		t.Error("withSkipped copied a commit that needs nothing added")
	}
}

// TestMemo: remembered reads are keyed by the exact header bytes (copied,
// so later changes to a message do not leak in), never confuse two
// sandboxes or a malformed header with a good one, and messages with
// repeated marker headers are always read in full.
func TestMemo(t *testing.T) {
	r := &Reader{cfg: readerConfig{common: common{codec: propagation.Default()}}, markers: newMarkers(propagation.Default())}
	hdr := func(kv ...string) []kafka.Header {
		var hs []kafka.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	mutable := hdr("sandbox-id", "pr-1")
	for i, tc := range []struct {
		hs     []kafka.Header
		want   string
		hasErr bool
	}{
		{mutable, "pr-1", false},
		{hdr("sandbox-id", "pr-2"), "pr-2", false},
		{hdr("sandbox-id", "pr-1", "baggage", "sandbox.id=pr-1"), "pr-1", false},
		{hdr("sandbox-id", "pr-1", "baggage", "sandbox.id=pr-2"), "", true},
		{hdr("sandbox-id", "pr-1", "Sandbox-Id", "pr-2"), "", true},
		{hdr("sandbox-id", "pr-1", "sandbox-id", "pr-1"), "pr-1", false},
		{hdr("sandbox-id", "PR_1"), "", true},
		{hdr("sandbox-id", "pr-1"), "pr-1", false},
		{hdr("baggage", "sandbox.id=pr-1"), "pr-1", false},
		{hdr("sandbox-id", "pr-2"), "pr-2", false},
	} {
		for pass := range 2 { // the second read of each comes from the memo
			m, err := readHeaders(r, tc.hs)
			if (err != nil) != tc.hasErr || !tc.hasErr && m.Sandbox.ID != tc.want {
				t.Errorf("#%d pass %d %q: read %q, %v; want %q, error %v", i, pass, tc.hs, m.Sandbox.ID, err, tc.want, tc.hasErr)
			}
		}
		if i == 0 {
			copy(mutable[0].Value, "pr-9") // the caller reuses its buffer
			if m, _ := readHeaders(r, hdr("sandbox-id", "pr-1")); m.Sandbox.ID != "pr-1" {
				t.Errorf("memo shares the message's bytes: read %q", m.Sandbox.ID)
			}
		}
	}
}

// FuzzMergeBaggage checks the writer's merge into a caller's baggage,
// for a single message (with its one-allocation buffers) and in a batch,
// against the codec's general path (InjectSandbox on a carrier), on every
// message that names no sandbox yet.
func FuzzMergeBaggage(f *testing.F) {
	f.Add("tenant=acme", "", 0)
	f.Add(" a=1 ,, b=2;p ", "c=3", 1)
	f.Add("", " , ", 2)
	f.Add("k=v,x", "y=%20", 3)
	f.Add("sandbox.idx=1,xsandbox.id=2", "", 1)
	codecs := []*propagation.Codec{propagation.Default()}
	if c, err := propagation.NewCodec(propagation.WithHeader("")); err == nil {
		codecs = append(codecs, c)
	}
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice b", Origin: "ci"}
	f.Fuzz(func(t *testing.T, bag1, bag2 string, shape int) {
		key := "baggage"
		if shape&1 == 1 {
			key = "Baggage"
		}
		headers := []kafka.Header{{Key: key, Value: []byte(bag1)}}
		if shape&2 == 2 {
			headers = append([]kafka.Header{{Key: "content-type", Value: []byte("json")}}, headers...)
		}
		if bag2 != "" {
			headers = append(headers, kafka.Header{Key: "trace", Value: []byte("t")}, kafka.Header{Key: "BAGGAGE", Value: []byte(bag2)})
		}
		for _, codec := range codecs {
			if m, err := codec.Read(&carrier{list: headers}); err != nil || m.Found {
				continue
			}
			c := carrier{list: slices.Clone(headers)}
			codec.InjectSandbox(sb, &c)
			w := mustWriter(t, &kafka.Writer{}, WithCodec(codec))
			caller := []kafka.Message{{Headers: headers}, {Headers: headers}}
			before := fmtHeaders(headers)
			var one [1]kafka.Message
			single, _, err := w.decorate(sb, caller[:1], &one)
			if err != nil {
				t.Fatal(err)
			}
			batch, held, err := w.decorate(sb, caller, &one)
			if err != nil {
				t.Fatal(err)
			}
			for _, got := range [][]kafka.Header{single[0].Headers, batch[0].Headers, batch[1].Headers} {
				if len(got) != len(c.list) {
					t.Fatalf("merge %s\n   got %s\n  want %s", fmtHeaders(headers), fmtHeaders(got), fmtHeaders(c.list))
				}
				for i := range got {
					if got[i].Key != c.list[i].Key || string(got[i].Value) != string(c.list[i].Value) {
						t.Fatalf("merge %s\n   got %s\n  want %s", fmtHeaders(headers), fmtHeaders(got), fmtHeaders(c.list))
					}
				}
			}
			putBatch(held)
			if len(caller[0].Headers) != len(headers) || &caller[0].Headers[0] != &headers[0] || fmtHeaders(headers) != before {
				t.Fatalf("the caller's message changed: %s, was %s", fmtHeaders(caller[0].Headers), before)
			}
		}
	})
}

func fmtHeaders(hs []kafka.Header) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s=%q ", h.Key, h.Value)
	}
	return b.String()
}

// TestFetchWaitCancels: a caller waiting while another fetch holds the
// reader gives up when its context is done, and leaves the holder and the
// callers after it undisturbed.
func TestFetchWaitCancels(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	entered, release := make(chan struct{}), make(chan struct{})
	var offset int64
	next := func(ctx context.Context) (kafka.Message, error) {
		if offset == 0 {
			close(entered)
			<-release
		}
		offset++
		return kafka.Message{Topic: "t", Offset: offset}, nil
	}
	first := make(chan error, 1)
	go func() {
		var m kafka.Message
		_, err := r.fetch(context.Background(), sourceFunc(next), &m)
		first <- err
	}()
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var m kafka.Message
	if _, err := r.fetch(ctx, sourceFunc(next), &m); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting fetch: %+v, %v; want the context's deadline", m, err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("holder: %v", err)
	}
	if _, err := r.fetch(context.Background(), sourceFunc(next), &m); err != nil || m.Offset != 2 {
		t.Fatalf("fetch after both: offset %d, %v; want 2, nil", m.Offset, err)
	}
}

// readHeaders reads hs as the reader's decide does.
func readHeaders(r *Reader, hs []kafka.Header) (propagation.Markers, error) {
	var k memoKey
	_, memoize := r.markers.scanKey(hs, &k)
	return r.readKey(hs, &k, memoize)
}

// TestDecorateLeavesCallerIntact: on every path, single message or batch,
// the copies' headers are written to lists of their own, never into the
// caller's headers or the spare capacity behind them.
func TestDecorateLeavesCallerIntact(t *testing.T) {
	w := mustWriter(t, &kafka.Writer{})
	sb := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	var tagged carrier
	propagation.Default().InjectSandbox(sb, &tagged)
	h := func(k, v string) kafka.Header { return kafka.Header{Key: k, Value: []byte(v)} }
	for _, tc := range []struct {
		name string
		hs   []kafka.Header
	}{
		{"no markers", []kafka.Header{h("trace", "t")}},
		{"caller baggage", []kafka.Header{h("baggage", "tenant=acme")}},
		{"caller baggage and a header", []kafka.Header{h("trace", "t"), h("baggage", "tenant=acme")}},
		{"caller baggage and headers", []kafka.Header{h("a", "1"), h("baggage", "tenant=acme"), h("b", "2")}},
		{"baggage mentioning a key of ours", []kafka.Header{h("baggage", "note=sandbox.id")}},
		{"tagged for the sandbox", tagged.list},
	} {
		for _, n := range []int{1, 3} {
			// The caller's headers sit in a larger array whose spare room
			// holds sentinels.
			spare := h("spare", "untouched")
			msgs := make([]kafka.Message, n)
			for i := range msgs {
				arr := slices.Repeat([]kafka.Header{spare}, len(tc.hs)+4)
				copy(arr, tc.hs)
				msgs[i] = kafka.Message{Value: []byte("v"), Headers: arr[:len(tc.hs)]}
			}
			before := make([]string, n)
			for i := range msgs {
				before[i] = fmtHeaders(msgs[i].Headers[:cap(msgs[i].Headers)])
			}
			var one [1]kafka.Message
			out, held, err := w.decorate(sb, msgs, &one)
			if err != nil {
				t.Fatalf("%s, %d: %v", tc.name, n, err)
			}
			for i := range msgs {
				if got := fmtHeaders(msgs[i].Headers[:cap(msgs[i].Headers)]); got != before[i] {
					t.Errorf("%s, %d: the caller's headers became\n%s\nwere\n%s", tc.name, n, got, before[i])
				}
				if m, err := w.codec.Read(&carrier{list: out[i].Headers}); err != nil || m.Sandbox.ID != sb.ID {
					t.Errorf("%s, %d: the copy reads %q, %v", tc.name, n, m.Sandbox.ID, err)
				}
			}
			putBatch(held)
		}
	}
}

// TestMemoManySandboxes: a topic shared by more sandboxes than the old
// memo's four entries, their messages interleaved, is read without
// parsing any header list twice: once every sandbox's headers have been
// read, the next round reads each from the memo, without allocating, and
// with the codec's answer.
func TestMemoManySandboxes(t *testing.T) {
	table, _ := routes.NewStatic(nil)
	r := bareReader(t, table, "orders", AsSandbox("pr-100"))
	const n = 8
	tags, ids := make([][]kafka.Header, n), make([]string, n)
	for k := range tags {
		var c carrier
		ids[k] = fmt.Sprintf("pr-%d", 100+k)
		propagation.Default().InjectSandbox(propagation.Sandbox{ID: ids[k], Actor: "alice"}, &c)
		tags[k] = c.list
	}
	for k := range tags { // warm: each list parsed once
		if _, err := readHeaders(r, tags[k]); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		for k := range tags {
			m, err := readHeaders(r, tags[k])
			if err != nil || m.Sandbox.ID != ids[k] {
				t.Fatalf("sandbox %d: read %q, %v", k, m.Sandbox.ID, err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("reading %d interleaved sandboxes' headers: %v allocations a round; want 0 (each from the memo)", n, allocs)
	}
}
